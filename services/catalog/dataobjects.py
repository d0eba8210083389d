"""The data-object lifecycle, Nuvla's: NEW → UPLOADING → READY, driven by presigned S3 URLs.

    action     from states        to          needs
    upload     NEW, UPLOADING     UPLOADING   edit-data   → {"uri": presigned PUT URL}
    ready      UPLOADING          READY       edit-data   size, md5, sha256 (and check value)
    download   READY              READY       view-data   → 303, Location/{"uri"}: presigned GET

A `public` data-object may be downloaded by any authenticated caller who may see it.

Actions talk to S3 between two short transactions instead of inside one: the first checks the
caller and the state, the S3 work (hashing a large object, say) then holds no row lock, and the
second re-checks the state under lock before storing the transition. A delete removes the record
first and the S3 object only once that has committed: a failure can orphan an S3 object, never
leave a READY record without its object nor delete the object of a surviving record.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiobotocore.client import AioBaseClient
from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from servicekit.db import utc_now
from servicekit.errors import (
    Conflict,
    ExtractError,
    Forbidden,
    InvalidInput,
    NotFound,
    PreconditionFailed,
)
from servicekit.hashing import HashingReader, check_value_name
from servicekit.infra.seaweed import S3Endpoint
from servicekit.s3 import (
    MiB,
    ensure_bucket,
    presign_get,
    presign_put,
    translate_s3_error,
    verify_with_check_value,
)
from servicekit.security import ANONYMOUS_CLAIM, Identity
from services.catalog import acl, store
from services.catalog.filters import normalize_timestamp
from services.catalog.s3services import S3Context, load_resource, resolve_credential, s3_context

__all__ = [
    "ACTIONS",
    "DATA_OBJECT",
    "NEW",
    "READY",
    "TRANSITIONS",
    "UPLOADING",
    "ActionOutcome",
    "delete_data_object",
    "offered_actions",
    "prepare_data_object",
]

log = logging.getLogger(__name__)

DATA_OBJECT = "data-object"
NEW, UPLOADING, READY = "NEW", "UPLOADING", "READY"
SUBTYPES = ("generic", "public")


@dataclass(frozen=True)
class Transition:
    sources: frozenset[str]
    target: str
    right: str


TRANSITIONS: Mapping[str, Transition] = {
    "upload": Transition(frozenset({NEW, UPLOADING}), UPLOADING, "edit-data"),
    "ready": Transition(frozenset({UPLOADING}), READY, "edit-data"),
    "download": Transition(frozenset({READY}), READY, "view-data"),
}

# Fixed at creation (or by the actions): an edit that changes them is refused.
_FIXED = frozenset(
    {"subtype", "state", "bucket", "object", "credential", "check-value", "check-value-algorithm"}
)
# What `ready` measured; fixed from then on.
_MEASURED = frozenset({"bytes", "md5sum", "sha256", "content-type"})
_VERIFIED = "check-value-verified"
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_MAX_KEY_BYTES = 1024


@dataclass(frozen=True)
class ActionOutcome:
    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def _required_right(name: str, document: Mapping[str, Any], identity: Identity) -> str | None:
    """The right `identity` needs for action `name`; None if no right is enough."""
    right = TRANSITIONS[name].right
    if name == "download" and document.get("subtype") == "public":
        return None if identity.principal == ANONYMOUS_CLAIM else "view-meta"
    return right


def offered_actions(document: Mapping[str, Any], identity: Identity) -> dict[str, str]:
    """The actions of the data-object's state, with the right each needs of `identity`."""
    offered = {}
    for name, transition in TRANSITIONS.items():
        right = _required_right(name, document, identity)
        if document.get("state") in transition.sources and right is not None:
            offered[name] = right
    return offered


async def prepare_data_object(
    session: AsyncSession,
    identity: Identity,
    document: dict[str, Any],
    before: Mapping[str, Any] | None,
) -> None:
    """Complete a new data-object (state, bucket, credential); keep an edited one's fixed keys."""
    if before is not None:
        fixed = _FIXED | (_MEASURED | {_VERIFIED} if before.get("state") == READY else set())
        changed = sorted(key for key in fixed if document.get(key) != before.get(key))
        if changed:
            raise Conflict(
                f"{', '.join(changed)}: fixed once the data-object is created"
                f" ({before.get('state')}); create a new data-object instead",
                detail={"keys": changed, "resource-id": before["id"]},
            )
        return
    context = s3_context(session)
    document.setdefault("subtype", "generic")
    if document["subtype"] not in SUBTYPES:
        raise InvalidInput(
            f"subtype: expected one of {', '.join(SUBTYPES)}, got {document['subtype']!r:.40}",
            detail={"field": "subtype"},
        )
    document["state"] = NEW
    document.pop(_VERIFIED, None)
    document.pop("check-value-algorithm", None)
    bucket = document.setdefault("bucket", context.default_bucket)
    if not isinstance(bucket, str) or not _BUCKET.fullmatch(bucket):
        raise InvalidInput(
            "bucket: expected an S3 bucket name (3-63 lower-case letters, digits, dots, dashes)",
            detail={"field": "bucket"},
        )
    key = document.get("object")
    if not isinstance(key, str) or not key.strip() or len(key.encode()) > _MAX_KEY_BYTES:
        raise InvalidInput(
            f"object: required, the S3 key (a non-empty string of at most {_MAX_KEY_BYTES} bytes)",
            detail={"field": "object"},
        )
    credential = document.setdefault("credential", context.default_credential)
    if not isinstance(credential, str):
        raise InvalidInput(
            "credential: required (an S3 credential id): the catalog has no default S3 service",
            detail={"field": "credential"},
        )
    await resolve_credential(session, credential, identity=identity)
    if "check-value" in document:
        _check_value_key(document, context)
    if document["subtype"] == "public":
        # Public data is found by every user: its metadata is visible to all.
        granted = document["acl"].get("view-meta", [])
        document["acl"] = acl.normalize_acl(
            {**document["acl"], "view-meta": [*granted, ANONYMOUS_CLAIM]}
        )


def _check_value_key(document: dict[str, Any], context: S3Context) -> None:
    """`check-value`: true, or the key of the object's check-value file for the configured
    algorithm; stored as that key."""
    expected = check_value_name(document["object"], context.check_value_algorithm)
    given = document["check-value"]
    if given is True:
        document["check-value"] = expected
    elif given != expected:
        raise InvalidInput(
            f"check-value: expected true or {expected!r}: the catalog verifies"
            f" {context.check_value_algorithm} check values, got {given!r:.80}",
            detail={"field": "check-value"},
        )


@asynccontextmanager
async def _s3_errors(bucket: str, key: str) -> AsyncIterator[None]:
    try:
        yield
    except (BotoCoreError, ClientError) as exc:
        raise translate_s3_error(exc, bucket=bucket, key=key) from exc


async def _load(session: AsyncSession, resource_id: str, *, lock: bool = False) -> dict[str, Any]:
    document = await load_resource(session, resource_id, lock=lock)
    if document is None or document.get("resource-type") != DATA_OBJECT:
        raise NotFound(f"{resource_id} not found", detail={"resource-id": resource_id})
    return document


def _check_state(name: str, document: Mapping[str, Any]) -> None:
    sources = TRANSITIONS[name].sources
    state = document.get("state")
    if state not in sources:
        valid = ", ".join(f"'{s}'" for s in sorted(sources))
        raise Conflict(
            f"Invalid state '{state}' for '{name}' action on {document['id']}."
            f" Valid states: {valid}.",
            detail={"resource-id": document["id"], "state": state},
        )


async def _begin(
    session: AsyncSession, name: str, resource_id: str, identity: Identity
) -> tuple[dict[str, Any], S3Endpoint]:
    """The data-object, once the caller may run action `name` in its state, and its S3."""
    document = await _load(session, resource_id)
    right = _required_right(name, document, identity)
    if right is None:
        raise Forbidden(f"{identity.principal} may not {name} {resource_id}: authenticate first")
    acl.require(identity, document.get("acl", {}), right, resource_id)
    _check_state(name, document)
    return document, await resolve_credential(session, document["credential"])


def _ttl(body: Mapping[str, Any], context: S3Context) -> int:
    ttl = body.get("ttl", context.presign_ttl)
    if not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= context.presign_max_ttl:
        raise InvalidInput(
            f"ttl: expected whole seconds from 1 to {context.presign_max_ttl}, got {ttl!r:.40}",
            detail={"field": "ttl"},
        )
    return ttl


async def _transition(
    sessions: async_sessionmaker[AsyncSession],
    name: str,
    seen: Mapping[str, Any],
    identity: Identity,
    changes: Mapping[str, Any],
) -> dict[str, Any]:
    """Store the action's transition, if the data-object is still as the action saw it."""
    async with sessions.begin() as session:
        document = await _load(session, seen["id"], lock=True)
        _check_state(name, document)
        if any(document.get(key) != seen.get(key) for key in ("bucket", "object", "credential")):
            raise Conflict(f"{seen['id']} changed during '{name}'; try again")
        after = {**document, **changes, "state": TRANSITIONS[name].target}
        if after != document:
            after["updated"] = normalize_timestamp(utc_now())
            after["updated-by"] = identity.principal
            await store.save(session, before=document, after=after)
        return after


async def upload(
    sessions: async_sessionmaker[AsyncSession],
    resource_id: str,
    identity: Identity,
    body: Mapping[str, Any],
) -> ActionOutcome:
    async with sessions.begin() as session:
        document, endpoint = await _begin(session, "upload", resource_id, identity)
        context = s3_context(session)
        ttl = _ttl(body, context)
    bucket, key = document["bucket"], document["object"]
    async with context.client(endpoint) as client:
        await ensure_bucket(client, bucket)
        uri = await presign_put(
            client, bucket, key, ttl=ttl, content_type=document.get("content-type")
        )
    await _transition(sessions, "upload", document, identity, {})
    return ActionOutcome(200, {"uri": uri})


async def ready(
    sessions: async_sessionmaker[AsyncSession],
    resource_id: str,
    identity: Identity,
    body: Mapping[str, Any],
) -> ActionOutcome:
    async with sessions.begin() as session:
        document, endpoint = await _begin(session, "ready", resource_id, identity)
        context = s3_context(session)
    async with context.client(endpoint) as client:
        measured = await _measure(client, document)
        if document.get("check-value"):
            algorithm = context.check_value_algorithm
            await _verify_check_value(client, document, algorithm)
            measured |= {"check-value-algorithm": algorithm, _VERIFIED: True}
    after = await _transition(sessions, "ready", document, identity, measured)
    return ActionOutcome(
        200,
        {
            "status": 200,
            "message": f"{resource_id} is {READY}",
            "resource-id": resource_id,
            **{key: after.get(key) for key in ("state", "bytes", "md5sum", "sha256")},
        },
    )


def _not_uploaded(document: Mapping[str, Any], error: NotFound) -> Conflict:
    return Conflict(
        f"cannot make {document['id']} {READY}: {error.message}; upload it first",
        detail={"resource-id": document["id"]},
    )


async def _measure(client: AioBaseClient, document: Mapping[str, Any]) -> dict[str, Any]:
    """Size, md5 and sha256 of the uploaded object, refused unless they match the declared."""
    bucket, key = document["bucket"], document["object"]
    try:
        async with _s3_errors(bucket, key):
            head = await client.head_object(Bucket=bucket, Key=key)
        _compare(document, {"bytes": head["ContentLength"]})
        async with _s3_errors(bucket, key):
            response = await client.get_object(Bucket=bucket, Key=key)
            async with response["Body"] as stream:
                # md5 is Nuvla's md5sum, no integrity check: sha256 is the one trusted.
                md5 = hashlib.md5(usedforsecurity=False)
                reader = HashingReader(stream.iter_chunks(MiB), ["sha256"])
                async for chunk in reader:
                    md5.update(chunk)
    except NotFound as error:
        raise _not_uploaded(document, error) from error
    measured = {"bytes": reader.size, "md5sum": md5.hexdigest(), **reader.digests()}
    _compare(document, measured)
    return measured


def _compare(document: Mapping[str, Any], measured: Mapping[str, Any]) -> None:
    differ = {
        key: {"declared": document[key], "found": value}
        for key, value in measured.items()
        if key in document and str(document[key]).lower() != str(value).lower()
    }
    if differ:
        listed = "; ".join(
            f"{key} declared {value['declared']}, found {value['found']}"
            for key, value in differ.items()
        )
        raise PreconditionFailed(
            f"s3://{document['bucket']}/{document['object']} is not what {document['id']}"
            f" declares: {listed}",
            detail={"resource-id": document["id"], "differences": differ},
        )


async def _verify_check_value(
    client: AioBaseClient, document: Mapping[str, Any], algorithm: str
) -> None:
    try:
        await verify_with_check_value(client, document["bucket"], document["object"], algorithm)
    except NotFound as error:
        raise _not_uploaded(document, error) from error
    except PreconditionFailed as error:
        raise PreconditionFailed(
            f"{document['id']}: {error.message}",
            detail={"resource-id": document["id"], **error.detail},
        ) from error


async def download(
    sessions: async_sessionmaker[AsyncSession],
    resource_id: str,
    identity: Identity,
    body: Mapping[str, Any],
) -> ActionOutcome:
    """Nuvla answers 303 with the URL both as Location and as `uri` (what nuvla-api reads)."""
    async with sessions.begin() as session:
        document, endpoint = await _begin(session, "download", resource_id, identity)
        context = s3_context(session)
        ttl = _ttl(body, context)
    async with context.client(endpoint) as client:
        uri = await presign_get(client, document["bucket"], document["object"], ttl=ttl)
    return ActionOutcome(303, {"uri": uri}, {"Location": uri})


Action = Callable[
    [async_sessionmaker[AsyncSession], str, Identity, Mapping[str, Any]], Awaitable[ActionOutcome]
]
ACTIONS: Mapping[str, Mapping[str, Action]] = {
    DATA_OBJECT: {"upload": upload, "ready": ready, "download": download}
}
"""Per collection, its actions (`POST /api/<collection>/<uuid>/<action>`)."""


async def delete_data_object(
    sessions: async_sessionmaker[AsyncSession],
    resource_id: str,
    identity: Identity,
    *,
    keep_s3_object: bool,
) -> dict[str, Any]:
    """Delete the data-object, then (unless kept) its S3 object; Nuvla's response."""
    async with sessions.begin() as session:
        document = await _load(session, resource_id, lock=True)
        acl.require(identity, document.get("acl", {}), "delete", resource_id)
        endpoint = None if keep_s3_object else await _endpoint_or_none(session, document)
        context = s3_context(session)
        await store.remove(session, before=document)
    message = f"{resource_id} deleted"
    if endpoint is not None:
        bucket, key = document["bucket"], document["object"]
        try:
            async with context.client(endpoint) as client, _s3_errors(bucket, key):
                await client.delete_object(Bucket=bucket, Key=key)
        except NotFound:
            pass  # never uploaded, or its bucket never made: nothing to delete
        except ExtractError as error:
            log.warning("%s deleted, its S3 object is left: %s", resource_id, error.message)
            message += f"; its S3 object s3://{bucket}/{key} could not be deleted: {error.message}"
    return {"status": 200, "message": message, "resource-id": resource_id}


async def _endpoint_or_none(
    session: AsyncSession, document: Mapping[str, Any]
) -> S3Endpoint | None:
    try:
        return await resolve_credential(session, document["credential"])
    except ExtractError as error:
        # The record goes regardless: its S3 object is then left where it is.
        log.warning("%s: cannot reach its S3 object: %s", document["id"], error.message)
        return None
