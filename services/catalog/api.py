"""The catalog's HTTP API, Nuvla style: parse the request, authorise, call one function, answer."""

from __future__ import annotations

import json
import uuid
import zlib
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from servicekit.errors import InvalidInput, NotFound, PayloadTooLarge
from servicekit.security import Identity, current_identity
from services.catalog import dataobjects, datasets, resources, templates
from services.catalog.schemas import CollectionSpec, SearchParams, collection_spec

__all__ = ["catalog_router", "read_body"]

DEFAULT_MAX_BODY = 1024 * 1024
_FORM = "application/x-www-form-urlencoded"
_JSON_PATCH = "application/json-patch+json"


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `limit` bytes."""
    too_large = PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


def _limit(request: Request) -> int:
    return int(getattr(request.app.state.settings, "max_body_bytes", DEFAULT_MAX_BODY))


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").partition(";")[0].strip().lower()


def _decoded(request: Request, raw: bytes, limit: int) -> bytes:
    """The body without its Content-Encoding (gzip, as `nuvla-api` sends with compress=True),
    inflated no further than `limit` bytes."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding == "identity":
        return raw
    if encoding != "gzip":
        raise InvalidInput(f"unsupported Content-Encoding {encoding!r}; use gzip or none")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        body = inflater.decompress(raw, limit + 1)
    except zlib.error as error:
        raise InvalidInput(f"malformed gzip body: {error}") from None
    if len(body) > limit:
        raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes once inflated")
    if not inflater.eof:
        raise InvalidInput("malformed gzip body: truncated")
    return body


async def _json(request: Request) -> Any:
    limit = _limit(request)
    raw = _decoded(request, await read_body(request, limit), limit)
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidInput(f"malformed JSON body: {error}") from None


async def _json_object(request: Request) -> dict[str, Any]:
    body = await _json(request)
    if not isinstance(body, dict):
        raise InvalidInput(f"expected a JSON object as body, got {type(body).__name__}")
    return body


async def _optional_json_object(request: Request) -> dict[str, Any]:
    """The JSON object body, or {} for none (nuvla-api posts actions without a body)."""
    limit = _limit(request)
    raw = _decoded(request, await read_body(request, limit), limit)
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as error:
        raise InvalidInput(f"malformed JSON body: {error}") from None
    if not isinstance(body, dict):
        raise InvalidInput(f"expected a JSON object as body, got {type(body).__name__}")
    return body


async def _keep_s3_object(request: Request) -> bool:
    """Nuvla's `keep-s3-object`, from the query (`?keep-s3-object=true`) or the JSON body."""
    query = request.query_params.get("keep-s3-object")
    value: Any = (await _optional_json_object(request)).get("keep-s3-object", False)
    if query is not None:
        value = query.strip().lower()
        if value not in ("true", "false"):
            raise InvalidInput(f"keep-s3-object: expected true or false, got {query!r:.40}")
        value = value == "true"
    if not isinstance(value, bool):
        raise InvalidInput(f"keep-s3-object: expected true or false, got {value!r:.40}")
    return value


async def _json_patch(request: Request) -> list[Any]:
    patch = await _json(request)
    if not isinstance(patch, list):
        raise InvalidInput(f"expected a JSON Patch array as body, got {type(patch).__name__}")
    return patch


async def _params(request: Request) -> list[tuple[str, str]]:
    """Query parameters, plus form-encoded ones in the body (Nuvla's PUT search)."""
    pairs = list(request.query_params.multi_items())
    if _media_type(request) == _FORM:
        raw = await read_body(request, _limit(request))
        try:
            pairs += parse_qsl(raw.decode(), keep_blank_values=True)
        except (UnicodeDecodeError, ValueError) as error:
            raise InvalidInput(f"malformed form body: {error}") from None
    return pairs


def _spec(collection: str) -> CollectionSpec:
    spec = collection_spec(collection)
    if spec is None:
        raise NotFound(f"unknown collection {collection!r}", detail={"resource-id": collection})
    return spec


def _resource_id(collection: str, identifier: str) -> tuple[CollectionSpec, str]:
    spec = _spec(collection)
    resource_id = f"{collection}/{identifier}"
    try:
        canonical = str(uuid.UUID(identifier)) == identifier
    except ValueError:
        canonical = False
    if not canonical:
        raise InvalidInput(
            f"invalid resource id {resource_id!r}: expected {collection}/<uuid>",
            detail={"resource-id": resource_id},
        )
    return spec, resource_id


def _select(pairs: list[tuple[str, str]]) -> tuple[str, ...]:
    return SearchParams.parse([(k, v) for k, v in pairs if k == "select"]).select


_MEMBERS_ONLY = frozenset({"aggregation", "collection", "from", "to"})


def _members_collections(values: list[str]) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(n.strip() for v in values for n in v.split(",") if n.strip()))
    unknown = [name for name in names if name not in datasets.TIME_ATTRIBUTE]
    if unknown:
        raise InvalidInput(
            f"collection: expected data-record or data-object, got {', '.join(unknown)}",
            detail={"field": "collection"},
        )
    return names or tuple(datasets.TIME_ATTRIBUTE)


def _message(status: int, message: str, resource_id: str) -> dict[str, Any]:
    return {"status": status, "message": message, "resource-id": resource_id}


async def _add_bulk(spec: CollectionSpec, request: Request, identity: Identity) -> JSONResponse:
    bodies = await _json(request)
    if not isinstance(bodies, list) or not bodies:
        raise InvalidInput("bulk add needs a non-empty JSON array of resources")
    async with request.app.state.sessions.begin() as session:
        created = await resources.bulk_create(
            session=session,
            spec=spec,
            identity=identity,
            bodies=bodies,
            expand=lambda body: templates.expand(spec.name, body),
        )
    return JSONResponse(
        {
            "status": 201,
            "message": f"{len(created)} {spec.name} resources created",
            "resources": [{"resource-id": resource_id} for resource_id in created],
            "count": len(created),
        },
        status_code=201,
    )


def catalog_router() -> APIRouter:
    router = APIRouter(prefix="/api")

    @router.get("/cloud-entry-point")
    async def cloud_entry_point(
        request: Request, identity: Identity = Depends(current_identity)
    ) -> dict[str, Any]:
        return resources.cloud_entry_point(f"{request.base_url}api/")

    @router.get("/event-keys")
    async def event_keys(request: Request) -> dict[str, Any]:
        """The public keys (JWKS) that verify the catalog's signed events."""
        return json.loads(request.app.state.events_jwks.to_json())

    @router.get("/data-set/{identifier}/members")
    async def data_set_members(
        identifier: str, request: Request, identity: Identity = Depends(current_identity)
    ) -> dict[str, Any]:
        _, data_set_id = _resource_id("data-set", identifier)
        pairs = list(request.query_params.multi_items())
        collections = _members_collections([v for k, v in pairs if k == "collection"])
        window = datasets.parse_window(
            request.query_params.get("from"), request.query_params.get("to")
        )
        aggregations = [value for key, value in pairs if key == "aggregation"]
        params = SearchParams.parse([(k, v) for k, v in pairs if k not in _MEMBERS_ONLY])
        async with request.app.state.sessions.begin() as session:
            return await datasets.members(
                session=session,
                data_set_id=data_set_id,
                identity=identity,
                params=params,
                aggregations=aggregations,
                collections=collections,
                window=window,
            )

    @router.api_route("/{collection}", methods=["GET", "PUT"])
    async def query(
        collection: str, request: Request, identity: Identity = Depends(current_identity)
    ) -> dict[str, Any]:
        spec = _spec(collection)
        pairs = await _params(request)
        # Aggregation specs go to `aggregate`, which parses them; SearchParams refuses them.
        aggregations = [value for key, value in pairs if key == "aggregation"]
        params = SearchParams.parse([(k, v) for k, v in pairs if k != "aggregation"])
        async with request.app.state.sessions.begin() as session:
            return await resources.search_resources(
                session=session,
                spec=spec,
                identity=identity,
                params=params,
                aggregations=aggregations,
            )

    @router.post("/{collection}")
    async def add(
        collection: str, request: Request, identity: Identity = Depends(current_identity)
    ) -> JSONResponse:
        spec = _spec(collection)
        if request.headers.get("bulk", "").strip().lower() == "yes":
            return await _add_bulk(spec, request, identity)
        body = templates.expand(spec.name, await _json_object(request))
        # Not sessions.begin(): a new resource often commits by itself, past the session
        # (changes.create), leaving it no transaction to begin or commit.
        async with request.app.state.sessions() as session:
            document = await resources.create_resource(
                session=session, spec=spec, identity=identity, body=body, ends_transaction=True
            )
            if session.in_transaction():
                await session.commit()
        resource_id = document["id"]
        return JSONResponse(
            _message(201, f"{resource_id} created", resource_id),
            status_code=201,
            headers={"Location": resource_id},
        )

    @router.delete("/{collection}")
    async def delete_bulk(
        collection: str, request: Request, identity: Identity = Depends(current_identity)
    ) -> dict[str, Any]:
        spec = _spec(collection)
        if request.headers.get("bulk", "").strip().lower() != "yes":
            raise InvalidInput("bulk delete needs the header 'bulk: yes'")
        params = SearchParams.parse(await _params(request))
        if not params.filters:
            raise InvalidInput("bulk delete needs a non-empty filter")
        async with request.app.state.sessions.begin() as session:
            deleted = await resources.bulk_delete(
                session=session, spec=spec, identity=identity, filters=params.filters
            )
        return {
            "status": 200,
            "message": f"{deleted} {collection} resources deleted",
            "deleted": deleted,
        }

    @router.get("/{collection}/{identifier}")
    async def retrieve(
        collection: str,
        identifier: str,
        request: Request,
        identity: Identity = Depends(current_identity),
    ) -> dict[str, Any]:
        _, resource_id = _resource_id(collection, identifier)
        select = _select(list(request.query_params.multi_items()))
        async with request.app.state.sessions.begin() as session:
            return await resources.get_resource(
                session=session, resource_id=resource_id, identity=identity, select=select
            )

    @router.put("/{collection}/{identifier}")
    async def edit(
        collection: str,
        identifier: str,
        request: Request,
        identity: Identity = Depends(current_identity),
    ) -> dict[str, Any]:
        spec, resource_id = _resource_id(collection, identifier)
        select = _select(list(request.query_params.multi_items()))
        if _media_type(request) == _JSON_PATCH:
            body, patch = None, await _json_patch(request)
        else:
            body, patch = await _json_object(request), None
        async with request.app.state.sessions.begin() as session:
            return await resources.edit_resource(
                session=session,
                spec=spec,
                resource_id=resource_id,
                identity=identity,
                body=body,
                patch=patch,
                select=select,
            )

    @router.delete("/{collection}/{identifier}")
    async def delete(
        collection: str,
        identifier: str,
        request: Request,
        identity: Identity = Depends(current_identity),
    ) -> dict[str, Any]:
        spec, resource_id = _resource_id(collection, identifier)
        if spec.name == dataobjects.DATA_OBJECT:
            keep = await _keep_s3_object(request)
            return await dataobjects.delete_data_object(
                request.app.state.sessions, resource_id, identity, keep_s3_object=keep
            )
        async with request.app.state.sessions.begin() as session:
            await resources.delete_resource(
                session=session, resource_id=resource_id, identity=identity
            )
        return _message(200, f"{resource_id} deleted", resource_id)

    @router.post("/{collection}/{identifier}/{action}")
    async def act(
        collection: str,
        identifier: str,
        action: str,
        request: Request,
        identity: Identity = Depends(current_identity),
    ) -> JSONResponse:
        spec, resource_id = _resource_id(collection, identifier)
        perform = dataobjects.ACTIONS.get(spec.name, {}).get(action)
        if perform is None:
            raise NotFound(
                f"{collection} has no action {action!r}", detail={"resource-id": resource_id}
            )
        body = await _optional_json_object(request)
        outcome = await perform(request.app.state.sessions, resource_id, identity, body)
        return JSONResponse(outcome.body, status_code=outcome.status, headers=outcome.headers)

    return router
