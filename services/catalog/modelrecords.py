"""Model data-records (`model:name`, `model:version`, `model:hash-algo`): a model is published
only with the bytes it names (`resource:object`) READY and verified against their check value."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from servicekit.errors import Conflict, InvalidInput
from servicekit.security import Identity
from services.catalog import acl
from services.catalog.dataobjects import DATA_OBJECT, READY
from services.catalog.s3services import load_resource

__all__ = ["MODEL_PREFIX", "prepare_model_record"]

MODEL_PREFIX = "model:"
_OBJECT = "resource:object"
_HASH_ALGO = "model:hash-algo"


async def prepare_model_record(
    session: AsyncSession,
    identity: Identity,
    document: dict[str, Any],
    before: Mapping[str, Any] | None,
) -> None:
    """A data-record with `model:` keys must name a verified READY data-object it may see."""
    if not any(key.startswith(MODEL_PREFIX) for key in document):
        return
    if not isinstance(document.get("model:name"), str):
        raise InvalidInput(
            "model:name: a model data-record needs its name", detail={"field": "model:name"}
        )
    object_id = document.get(_OBJECT)
    if not isinstance(object_id, str) or not object_id.startswith(f"{DATA_OBJECT}/"):
        raise InvalidInput(
            f"{_OBJECT}: a model data-record names the data-object holding the model",
            detail={"field": _OBJECT},
        )
    data_object = await load_resource(session, object_id)
    if data_object is None or data_object.get("resource-type") != DATA_OBJECT:
        raise InvalidInput(f"{_OBJECT}: {object_id} not found", detail={"field": _OBJECT})
    acl.require(identity, data_object.get("acl", {}), "view-meta", object_id)
    if data_object.get("state") != READY:
        raise Conflict(
            f"{_OBJECT}: {object_id} is {data_object.get('state')}, a model needs it {READY}",
            detail={"resource-id": object_id},
        )
    algorithm = data_object.get("check-value-algorithm")
    if data_object.get("check-value-verified") is not True or not algorithm:
        raise Conflict(
            f"{_OBJECT}: {object_id} has no verified check value; create it with"
            ' "check-value": true and put its check value file next to it before ready',
            detail={"resource-id": object_id},
        )
    declared = document.setdefault(_HASH_ALGO, algorithm)
    if declared != algorithm:
        raise InvalidInput(
            f"{_HASH_ALGO}: {object_id} was verified with {algorithm}, not {declared!r:.40}",
            detail={"field": _HASH_ALGO},
        )
