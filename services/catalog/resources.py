"""Catalog resources: create, read, edit, delete and search them, checking the caller's ACL.

Every function takes the session by keyword; the router that calls it owns the transaction.
Responses are Nuvla's: a resource as the caller may see it, with the operations it may use.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from servicekit.cimi_filter import attributes, parse_filter
from servicekit.db import utc_now
from servicekit.errors import (
    Conflict,
    ExtractError,
    Forbidden,
    InvalidInput,
    NotAcceptable,
    NotFound,
)
from servicekit.security import ADMIN_CLAIM, ANONYMOUS_CLAIM, Identity
from services.catalog import acl, dataobjects, modelrecords, s3services, store, subscriptions
from services.catalog.aggregations import aggregate, parse_specs
from services.catalog.filters import normalize_timestamp
from services.catalog.json_patch import apply_json_patch
from services.catalog.query import search
from services.catalog.schemas import (
    COLLECTIONS,
    KEY_PREFIX_COLLECTION,
    SERVER_KEYS,
    CollectionSpec,
    SearchParams,
    collection_spec,
    namespace_prefixes,
)
from services.catalog.tables import catalog_resources

__all__ = [
    "bulk_create",
    "bulk_delete",
    "cloud_entry_point",
    "collection_acl",
    "create_resource",
    "delete_resource",
    "edit_resource",
    "get_resource",
    "load_document",
    "search_resources",
]

_EDIT_RIGHTS = frozenset({"edit-meta", "edit-data", "edit-acl"})
_PREPARE = {
    subscriptions.COLLECTION: subscriptions.prepare_subscription,
    dataobjects.DATA_OBJECT: dataobjects.prepare_data_object,
    s3services.INFRASTRUCTURE_SERVICE: s3services.prepare_infrastructure_service,
    s3services.CREDENTIAL: s3services.prepare_credential,
    "data-record": modelrecords.prepare_model_record,
}
"""Per collection: completes a document about to be stored (server-managed attributes,
checks that need the database), given the caller and the stored state (None on create)."""
_ACTIONS = {dataobjects.DATA_OBJECT: dataobjects.offered_actions}
"""Per collection: the actions a resource offers a caller, with the right each needs."""
_BATCHED_ADDS = frozenset({"data-record", "data-object", "infrastructure-service", "credential"})
"""Collections whose checks on add read no resource of their own collection, nor change what
a write of another does (as data-sets and subscriptions would): a bulk add checks them all,
then stores them together, with the outcome of adding them one by one."""
_ALWAYS_SELECTED = ("id", "resource-type")
_BULK_PAGE = 500


def cloud_entry_point(base_uri: str) -> dict[str, Any]:
    """Nuvla's cloud entry point: where each collection is, relative to `base_uri`."""
    return {
        "id": "cloud-entry-point",
        "resource-type": "cloud-entry-point",
        "base-uri": base_uri,
        "collections": {name: {"href": name} for name in COLLECTIONS},
        "acl": {"owners": [ADMIN_CLAIM], "view-meta": [ANONYMOUS_CLAIM]},
    }


def collection_acl(spec: CollectionSpec) -> dict[str, list[str]]:
    """Who may search (`query`) and add to a collection, as Nuvla's collection ACLs say it."""
    adders = [ADMIN_CLAIM] if spec.admin_only_add else [ANONYMOUS_CLAIM]
    return {"owners": [ADMIN_CLAIM], "query": [ANONYMOUS_CLAIM], "add": adders}


def _may_add(identity: Identity, spec: CollectionSpec) -> bool:
    return identity.is_admin or (not spec.admin_only_add and identity.principal != ANONYMOUS_CLAIM)


def _view(document: Mapping[str, Any], identity: Identity) -> dict[str, Any] | None:
    held = acl.rights(identity, document.get("acl", {}))
    view = acl.visible_view(document, held)
    if view is None:
        return None
    spec = collection_spec(document["resource-type"])
    for secret in spec.secrets if spec is not None else ():
        view.pop(secret, None)
    actions = _ACTIONS.get(document["resource-type"])
    offered = actions(document, identity) if actions is not None else None
    view["operations"] = acl.operations(document["id"], held, offered)
    return view


def _selected(view: dict[str, Any], select: Sequence[str]) -> dict[str, Any]:
    if not select:
        return view
    keep = {*select, *_ALWAYS_SELECTED}
    return {key: value for key, value in view.items() if key in keep}


async def load_document(
    session: AsyncSession, resource_id: str, *, lock: bool = False
) -> dict[str, Any]:
    """The stored resource, whole (no ACL check); NotFound if there is none."""
    statement = sa.select(catalog_resources.c.document).where(catalog_resources.c.id == resource_id)
    if lock:
        statement = statement.with_for_update()
    document = (await session.execute(statement)).scalar_one_or_none()
    if document is None:
        raise NotFound(f"{resource_id} not found", detail={"resource-id": resource_id})
    return dict(document)


async def _check_prefixes(
    session: AsyncSession, document: Mapping[str, Any], memo: dict[str, Any] | None
) -> None:
    wanted = namespace_prefixes(document)
    if not wanted:
        return
    defined = None if memo is None else memo.get(KEY_PREFIX_COLLECTION)
    if defined is None:
        rows = await session.execute(
            sa.select(catalog_resources.c.document).where(
                catalog_resources.c.collection == KEY_PREFIX_COLLECTION
            )
        )
        defined = {row.get("prefix") for row in rows.scalars()}
        if memo is not None:
            memo[KEY_PREFIX_COLLECTION] = defined
    undefined = sorted(wanted - defined)
    if undefined:
        raise NotAcceptable(
            "resource attributes do not satisfy defined namespaces, prefixes: "
            f"{', '.join(undefined)}; an administrator defines them as {KEY_PREFIX_COLLECTION}",
            detail={"prefixes": undefined},
        )


async def _check_unique_prefix(
    session: AsyncSession, document: Mapping[str, Any], resource_id: str
) -> None:
    rows = await session.execute(
        sa.select(catalog_resources.c.id, catalog_resources.c.document).where(
            catalog_resources.c.collection == KEY_PREFIX_COLLECTION,
            catalog_resources.c.id != resource_id,
        )
    )
    if any(doc.get("prefix") == document.get("prefix") for _, doc in rows.all()):
        raise Conflict(f"prefix {document.get('prefix')!r} is already defined")


async def _validate(
    session: AsyncSession,
    spec: CollectionSpec,
    document: Mapping[str, Any],
    memo: dict[str, Any] | None = None,
) -> None:
    """Refuse an invalid document; `memo` keeps what was read for the next document of a bulk
    add (which writes nothing it reads)."""
    spec.validate(document)
    if spec.namespaced:
        await _check_prefixes(session, document, memo)
    if spec.name == KEY_PREFIX_COLLECTION:
        await _check_unique_prefix(session, document, document["id"])


async def create_resource(
    *,
    session: AsyncSession,
    spec: CollectionSpec,
    identity: Identity,
    body: Mapping[str, Any],
    ends_transaction: bool = False,
) -> dict[str, Any]:
    """Store a new resource from `body`; the server sets its id, timestamps and default ACL.
    `ends_transaction`: the caller runs nothing after it in its transaction (see
    changes.create)."""
    if not _may_add(identity, spec):
        raise Forbidden(f"{identity.principal} may not add to {spec.name}")
    document = await _new_document(session, spec, identity, body)
    await store.save(session, before=None, after=document, ends_transaction=ends_transaction)
    return document


async def _new_document(
    session: AsyncSession,
    spec: CollectionSpec,
    identity: Identity,
    body: Mapping[str, Any],
    memo: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The resource `body` describes, completed and checked, not yet stored."""
    now = normalize_timestamp(utc_now())
    attributes = {key: value for key, value in body.items() if key not in SERVER_KEYS}
    given_acl = attributes.pop("acl", None)
    document: dict[str, Any] = {
        "id": f"{spec.name}/{uuid.uuid4()}",
        "resource-type": spec.name,
        "created": now,
        "updated": now,
        "created-by": identity.principal,
        **attributes,
        "acl": acl.default_acl(identity) if given_acl is None else acl.normalize_acl(given_acl),
    }
    if prepare := _PREPARE.get(spec.name):
        await prepare(session, identity, document, None)
    await _validate(session, spec, document, memo)
    return document


async def bulk_create(
    *,
    session: AsyncSession,
    spec: CollectionSpec,
    identity: Identity,
    bodies: Sequence[Any],
    expand: Callable[[Mapping[str, Any]], Mapping[str, Any]] = dict,
) -> list[str]:
    """Create every resource of `bodies` (each `expand`ed first) as create_resource does, in
    the caller's transaction; the first invalid one fails all with a 400 naming its index.

    In the collections of `_BATCHED_ADDS`, every resource is checked first, then all are
    stored at once (store.save_many): the same resources and events as one by one."""
    if not _may_add(identity, spec):
        raise Forbidden(f"{identity.principal} may not add to {spec.name}")
    batched = spec.name in _BATCHED_ADDS
    memo: dict[str, Any] | None = {} if batched else None
    documents = []
    for index, body in enumerate(bodies):
        try:
            if not isinstance(body, Mapping):
                raise InvalidInput(f"expected a JSON object, got {type(body).__name__}")
            document = await _new_document(session, spec, identity, expand(body), memo)
            if not batched:
                await store.save(session, before=None, after=document)
        except ExtractError as error:
            if not 400 <= error.status < 500:
                raise
            raise InvalidInput(
                f"resource {index}: {error.message}",
                code=error.code,
                detail={**error.detail, "index": index},
            ) from error
        documents.append(document)
    if batched:
        await store.save_many(session, [(None, document) for document in documents])
    return [document["id"] for document in documents]


async def get_resource(
    *, session: AsyncSession, resource_id: str, identity: Identity, select: Sequence[str] = ()
) -> dict[str, Any]:
    """The resource as `identity` may see it; Forbidden if it may see none of it."""
    document = await load_document(session, resource_id)
    acl.require(identity, document.get("acl", {}), "view-meta", resource_id)
    view = _view(document, identity)
    assert view is not None  # view-meta always shows something
    return _selected(view, select)


async def edit_resource(
    *,
    session: AsyncSession,
    spec: CollectionSpec,
    resource_id: str,
    identity: Identity,
    body: Mapping[str, Any] | None = None,
    patch: Sequence[Any] | None = None,
    select: Sequence[str] = (),
) -> dict[str, Any]:
    """Merge `body` into the resource, or apply the JSON Patch (RFC 6902) `patch` to it.

    Keys named in `select` but absent from `body` are removed (Nuvla's way to delete
    attributes); server-managed keys keep their values whatever the caller sends.
    """
    old = await load_document(session, resource_id, lock=True)
    held = acl.rights(identity, old.get("acl", {}))
    if not held & _EDIT_RIGHTS:
        acl.require(identity, old.get("acl", {}), "edit-meta", resource_id)
    if patch is not None:
        body = apply_json_patch(old, patch)
        select = [*select, *(key for key in old if key not in body)]
    body = body or {}
    changes = {key: value for key, value in body.items() if key not in SERVER_KEYS}
    new = {
        key: value
        for key, value in old.items()
        if key not in select or key in SERVER_KEYS or key == "acl" or key in changes
    }
    new.update(changes)
    if "acl" in changes:
        new["acl"] = acl.normalize_acl(changes["acl"])
    acl.check_edit(old, new, held)
    if prepare := _PREPARE.get(spec.name):
        await prepare(session, identity, new, old)
    await _validate(session, spec, new)
    new["updated"] = normalize_timestamp(utc_now())
    new["updated-by"] = identity.principal
    await store.save(session, before=old, after=new)
    view = _view(new, identity)
    # An edit of the acl may leave the editor nothing to see; it still succeeded.
    return view if view is not None else {"id": resource_id}


async def delete_resource(*, session: AsyncSession, resource_id: str, identity: Identity) -> None:
    document = await load_document(session, resource_id, lock=True)
    acl.require(identity, document.get("acl", {}), "delete", resource_id)
    await store.remove(session, before=document)


def _refuse_secrets(
    spec: CollectionSpec, params: SearchParams, aggregations: Sequence[str]
) -> None:
    """Secrets are never shown, so neither may a filter, sort or aggregation probe them."""
    if not spec.secrets:
        return
    named = {aggregation.attribute for aggregation in parse_specs(aggregations)}
    for text in params.filters:
        named |= attributes(parse_filter(text))
    for part in (params.orderby or "").split(","):
        attribute, _, direction = part.strip().rpartition(":")
        named.add(attribute if direction in ("asc", "desc") else part.strip())
    probed = sorted(spec.secrets & {name.partition("/")[0] for name in named})
    if probed:
        raise InvalidInput(
            f"{', '.join(probed)}: secret, so it cannot be filtered, sorted or aggregated on",
            detail={"field": probed[0]},
        )


async def search_resources(
    *,
    session: AsyncSession,
    spec: CollectionSpec,
    identity: Identity,
    params: SearchParams,
    aggregations: Sequence[str] = (),
) -> dict[str, Any]:
    """A Nuvla collection response: count, the page of resources as the caller sees them and,
    given `aggregation=` specs, their `aggregations` over the same filter and identity."""
    _refuse_secrets(spec, params, aggregations)
    aggregated = None
    if aggregations:  # first, so a bad spec is refused before the search runs
        aggregated = await aggregate(
            session,
            collection=spec.name,
            identity=identity,
            filter_text=params.filters,
            specs=aggregations,
        )
    result = await search(
        session,
        collection=spec.name,
        identity=identity,
        filter_text=params.filters,
        orderby=params.orderby,
        first=params.first,
        last=params.last,
        after=params.after,
    )
    resources = []
    for document in result.resources:
        view = _view(document, identity)
        if view is not None:
            resources.append(_selected(view, params.select))
    response: dict[str, Any] = {
        "id": spec.name,
        "resource-type": f"{spec.name}-collection",
        "count": result.count,
        "acl": collection_acl(spec),
        "resources": resources,
        "operations": ([{"rel": "add", "href": spec.name}] if _may_add(identity, spec) else []),
    }
    if result.next is not None:
        response["next"] = result.next
    if aggregated is not None:
        response["aggregations"] = aggregated
    return response


async def bulk_delete(
    *, session: AsyncSession, spec: CollectionSpec, identity: Identity, filters: Sequence[str]
) -> int:
    """Delete every resource matching `filters` that `identity` may delete; how many went."""
    doomed: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        page = await search(
            session,
            collection=spec.name,
            identity=identity,
            filter_text=filters,
            last=_BULK_PAGE,
            after=cursor,
        )
        doomed += [
            document
            for document in page.resources
            if acl.can(identity, document.get("acl", {}), "delete")
        ]
        if page.next is None:
            break
        cursor = page.next
    for document in doomed:
        await store.remove(session, before=document)
    return len(doomed)
