"""The gateway's own Nuvla resources: `session` (login/logout), and `credential`s of subtype
api-key and s3-key (a SkyStore key pair made by the locator, recorded here without its secret).

Everything else under /api/ belongs to the catalog; a credential request that is not about a
credential made here is forwarded to it unchanged.
"""

from __future__ import annotations

import gzip
import json
import zlib
from contextlib import suppress
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from gateway.authn import Caller
from gateway.credentials import (
    GENERATE_API_KEY,
    GENERATE_S3_KEY,
    ApiKey,
    authenticate_api_key,
    authenticate_password,
    credential_document,
    delete_api_key,
    generate_api_key,
    get_api_key,
    record_s3_key,
)
from gateway.session_search import SessionSearch
from gateway.sessions import SESSION_COOKIE, LoginSession
from gateway.signing import register_device_key
from gateway.skystore_keys import SkyStoreKeys
from servicekit.errors import ExtractError, InvalidInput, NotFound, PayloadTooLarge, Unauthorized
from servicekit.security import ANONYMOUS_CLAIM

__all__ = ["gateway_api_router", "jwks_router"]

_MAX_JSON = 64 * 1024
_FORM = "application/x-www-form-urlencoded"
_LOGIN_TEMPLATES = ("session-template/api-key", "session-template/password")


def _nuvla(status: int, message: str, resource_id: str, **extra: Any) -> dict[str, Any]:
    return {"status": status, "message": message, "resource-id": resource_id, **extra}


async def _raw_body(request: Request) -> bytes:
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > _MAX_JSON:
            raise PayloadTooLarge(f"request body exceeds {_MAX_JSON} bytes")
    return bytes(raw)


async def _json_body(request: Request) -> dict[str, Any]:
    """The request's JSON object, at most 64 KiB (also after gzip), as the nuvla client sends."""
    data = await _raw_body(request)
    if request.headers.get("content-encoding", "").lower() == "gzip":
        try:
            data = zlib.decompressobj(wbits=31).decompress(data, _MAX_JSON + 1)
        except (zlib.error, gzip.BadGzipFile) as exc:
            raise InvalidInput(f"body is not valid gzip: {exc}") from None
        if len(data) > _MAX_JSON:
            raise PayloadTooLarge(f"decompressed body exceeds {_MAX_JSON} bytes")
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"body is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidInput("body must be a JSON object")
    return document


async def _search_params(request: Request) -> list[tuple[str, str]]:
    """Query parameters, plus form-encoded ones in the body (the nuvla client's PUT search)."""
    pairs = list(request.query_params.multi_items())
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type == _FORM:
        raw = await _raw_body(request)
        try:
            pairs += parse_qsl(raw.decode(), keep_blank_values=True, strict_parsing=False)
        except (UnicodeDecodeError, ValueError) as exc:
            raise InvalidInput(f"malformed form body: {exc}") from None
    return pairs


def _template(body: dict[str, Any]) -> dict[str, Any]:
    template = body.get("template")
    if not isinstance(template, dict) or not isinstance(template.get("href"), str):
        raise InvalidInput("body must hold {'template': {'href': '…', …}}")
    return template


def _text(template: dict[str, Any], name: str) -> str:
    value = template.get(name)
    if not isinstance(value, str) or not value:
        raise InvalidInput(f"template.{name} must be a non-empty string")
    return value


async def _caller(request: Request) -> Caller:
    return await request.app.state.authenticator.caller(request)


def _forward(request: Request) -> Any:
    return request.app.state.forward_to_route(request)


def _own_session(caller: Caller, session_id: str) -> LoginSession:
    login = caller.session
    if login is None or login.id != session_id:
        raise NotFound(f"{session_id} not found", detail={"resource-id": session_id})
    return login


async def _generate_s3_key(
    request: Request, template: dict[str, Any], body: dict[str, Any]
) -> Response:
    """Ask the locator for a key pair for the caller, then record it; a pair whose record could
    not be written is revoked again, so no key lives without its credential."""
    caller = await _caller(request)
    if caller.identity.principal == ANONYMOUS_CLAIM:
        raise Unauthorized("log in first: an S3 key is created for the logged-in user")
    keys: SkyStoreKeys = request.app.state.skystore_keys
    pair = await keys.create(caller.identity.principal)
    try:
        async with request.app.state.database.begin() as session:
            credential = await record_s3_key(
                session=session,
                caller=caller.identity,
                access_key=pair.key_id,
                template=template,
                body=body,
            )
    except BaseException:
        with suppress(ExtractError):  # the record's failure is the one to report
            await keys.revoke(pair.key_id)
        raise
    return JSONResponse(
        _nuvla(
            201,
            f"created {credential.id}",
            credential.id,
            **{"access-key": pair.key_id, "secret-key": pair.secret},
        ),
        status_code=201,
        headers={"Location": f"/api/{credential.id}"},
    )


async def _delete_credential(request: Request, credential: ApiKey, caller: Caller) -> None:
    async with request.app.state.database.begin() as session:
        await delete_api_key(session=session, key=credential, caller=caller.identity)
        if credential.access_key is not None:
            # Revoked inside the transaction: a locator that fails rolls the deletion back,
            # so the owner still sees the key and can try again.
            await request.app.state.skystore_keys.revoke(credential.access_key)


def gateway_api_router() -> APIRouter:
    router = APIRouter(prefix="/api")

    @router.post("/session", summary="log in (Nuvla session templates api-key, password)")
    async def login(request: Request) -> Response:
        template = _template(await _json_body(request))
        href = template["href"]
        database = request.app.state.database
        async with database() as session:
            if href == "session-template/api-key":
                method, identifier = "api-key", _text(template, "key")
                identity = await authenticate_api_key(
                    session=session, key=identifier, secret=_text(template, "secret")
                )
            elif href == "session-template/password":
                method, identifier = "password", _text(template, "username")
                identity = await authenticate_password(
                    session=session, username=identifier, password=_text(template, "password")
                )
            else:
                raise InvalidInput(
                    f"unknown session template {href!r}; use one of {', '.join(_LOGIN_TEMPLATES)}"
                )
        store = request.app.state.sessions
        login_session, token = await store.create(identity, method=method, identifier=identifier)
        response = JSONResponse(
            _nuvla(201, f"created {login_session.id}", login_session.id), status_code=201
        )
        response.set_cookie(
            SESSION_COOKIE,
            token,
            max_age=store.ttl,
            path="/",
            secure=True,
            httponly=True,
            samesite="strict",
        )
        response.headers["Location"] = f"/api/{login_session.id}"
        return response

    # GET, and PUT as the nuvla client searches: two operations, so two operation ids.
    @router.put("/session", summary="the caller's session (Nuvla search)")
    @router.get("/session", summary="the caller's session")
    async def search_sessions(request: Request) -> dict[str, Any]:
        search = SessionSearch.parse(await _search_params(request))
        caller = await _caller(request)
        offset, limit = search.window()
        if caller.identity.is_admin:
            count, found = await request.app.state.sessions.search(
                order=search.order_clauses(), offset=offset, limit=limit, where=search.where
            )
        elif caller.session is not None:  # as on Nuvla: a user sees the current session
            count, found = await request.app.state.sessions.search(
                order=search.order_clauses(),
                offset=offset,
                limit=limit,
                session_id=caller.session.id,
                where=search.where,
            )
        else:
            count, found = 0, []
        return {
            "id": "session",
            "resource-type": "session-collection",
            "count": count,
            "resources": [search.project(login.document()) for login in found],
            "acl": {"query": ["group/extract-anon"], "add": ["group/extract-anon"]},
            "operations": [{"rel": "add", "href": "session"}],
        }

    @router.get("/session/{uuid}", summary="one of the caller's sessions")
    async def get_session(uuid: str, request: Request) -> dict[str, Any]:
        return _own_session(await _caller(request), f"session/{uuid}").document()

    @router.delete("/session/{uuid}", summary="log out")
    async def logout(uuid: str, request: Request) -> Response:
        login_session = _own_session(await _caller(request), f"session/{uuid}")
        await request.app.state.sessions.delete(login_session)
        response = JSONResponse(_nuvla(200, f"{login_session.id} deleted", login_session.id))
        response.delete_cookie(SESSION_COOKIE, path="/", secure=True, httponly=True)
        return response

    @router.post("/credential", include_in_schema=False)
    async def add_credential(request: Request) -> Response:
        body = await _json_body(request)
        template = body.get("template")
        href = template.get("href") if isinstance(template, dict) else None
        if href == GENERATE_S3_KEY:
            return await _generate_s3_key(request, template, body)
        if href != GENERATE_API_KEY:
            return await _forward(request)
        caller = await _caller(request)
        async with request.app.state.database.begin() as session:
            key, secret = await generate_api_key(
                session=session, caller=caller.identity, template=template, body=body
            )
        return JSONResponse(
            _nuvla(201, f"created {key.id}", key.id, key=key.id, secret=secret),
            status_code=201,
            headers={"Location": f"/api/{key.id}"},
        )

    @router.api_route("/credential/{uuid}", methods=["GET", "DELETE"], include_in_schema=False)
    async def credential(uuid: str, request: Request) -> Response:
        async with request.app.state.database() as session:
            key = await get_api_key(session=session, key_id=f"credential/{uuid}")
        if key is None:
            return await _forward(request)
        caller = await _caller(request)
        if caller.identity.principal == ANONYMOUS_CLAIM:
            raise Unauthorized("log in to see or delete credentials")
        if request.method == "GET":
            return JSONResponse(credential_document(key, caller.identity))
        await _delete_credential(request, key, caller)
        return JSONResponse(_nuvla(200, f"{key.id} deleted", key.id))

    @router.post("/device-key", summary="register a device's P-256 signing key")
    async def add_device_key(request: Request) -> Response:
        body = await _json_body(request)
        caller = await _caller(request)
        if caller.identity.principal == ANONYMOUS_CLAIM:
            raise Unauthorized("log in to register a device key")
        jwk = body.get("jwk")
        if not isinstance(jwk, dict):
            raise InvalidInput("body must hold {'jwk': {EC P-256 public key}}")
        async with request.app.state.database.begin() as session:
            device_id = await register_device_key(
                session=session, owner=caller.identity.principal, jwk=jwk
            )
        return JSONResponse(_nuvla(201, f"created {device_id}", device_id), status_code=201)

    return router


def jwks_router() -> APIRouter:
    router = APIRouter()

    @router.get("/.well-known/jwks.json", summary="keys verifying signed critical payloads")
    async def jwks(request: Request) -> Response:
        return Response(
            request.app.state.signer.jwks.to_json(),
            media_type="application/jwk-set+json",
            headers={"cache-control": "public, max-age=300"},
        )

    return router
