"""The locator's internal REST API for the proxies: thin routes over buckets, writes, listing and
registry."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from servicekit.errors import Unauthorized
from services.skystore.leases_wire import LEASE_HEADER
from services.skystore.locator import buckets, listing, reaper, registry, replicas, writes
from services.skystore.locator.leases import Leases
from services.skystore.locator.lookup import leased_record
from services.skystore.schemas import (
    AccessKey,
    Bucket,
    BucketCreate,
    BucketEviction,
    Committed,
    Garbage,
    Link,
    ListPage,
    Locator,
    ObjectInfo,
    Region,
    UploadComplete,
    UploadStart,
)
from services.skystore.secrets_files import token_matches

__all__ = ["locator_router"]


class KeyRequest(BaseModel):
    principal: str


class PhysicalUpload(BaseModel):
    region: str
    physical_upload_id: str


class PolicyRequest(BaseModel):
    policy: str


class ReplicaRequest(BaseModel):
    region: str


class Removed(BaseModel):
    locator_ids: list[int] = Field(max_length=10_000)


async def _authorised(request: Request) -> None:
    # async: FastAPI runs a plain `def` dependency on a worker thread, a hop per request.
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token_matches(request.app.state.internal_token, token):
        raise Unauthorized(
            "the locator's API is for SkyStore proxies: send the internal bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )


def _read(request: Request) -> AsyncSession:
    return request.app.state.sessions()


@asynccontextmanager
async def _write(request: Request) -> AsyncIterator[AsyncSession]:
    # The route owns the transaction: it commits before the response leaves, and the events
    # it wrote to the outbox are relayed now rather than at the relay's next poll.
    async with request.app.state.sessions.begin() as session:
        yield session
    request.app.state.events.notify()


def _now(request: Request) -> datetime:
    return request.app.state.clock()


def _leases(request: Request) -> Leases:
    return request.app.state.leases


def locator_router() -> APIRouter:
    router = APIRouter(dependencies=[Depends(_authorised)])

    @router.put("/regions/{name}")
    async def put_region(name: str, region: Region, request: Request) -> Region:
        async with _write(request) as session:
            region = region.model_copy(update={"name": name})
            return await registry.put_region(session, region=region, now=_now(request))

    @router.get("/regions")
    async def get_regions(request: Request) -> list[Region]:
        async with _read(request) as session:
            return await registry.list_regions(session)

    @router.put("/links")
    async def put_link(link: Link, request: Request) -> Link:
        async with _write(request) as session:
            return await registry.put_link(session, link=link)

    @router.get("/links")
    async def get_links(request: Request) -> list[Link]:
        async with _read(request) as session:
            return await registry.list_links(session)

    @router.post("/access-keys", status_code=201)
    async def create_key(body: KeyRequest, request: Request) -> AccessKey:
        secrets_box = request.app.state.secrets_box
        async with _write(request) as session:
            return await registry.create_access_key(
                session, principal=body.principal, secrets_box=secrets_box, now=_now(request)
            )

    @router.get("/access-keys/{key_id}")
    async def get_key(key_id: str, request: Request) -> AccessKey:
        async with _read(request) as session:
            return await registry.get_access_key(
                session, key_id=key_id, secrets_box=request.app.state.secrets_box
            )

    @router.delete("/access-keys/{key_id}", status_code=204)
    async def delete_key(key_id: str, request: Request) -> None:
        async with _write(request) as session:
            await registry.delete_access_key(session, key_id=key_id)

    @router.get("/buckets")
    async def get_buckets(request: Request, owner: str | None = None) -> list[Bucket]:
        async with _read(request) as session:
            return await buckets.list_buckets(session, owner=owner)

    @router.post("/buckets", status_code=201)
    async def start_bucket(body: BucketCreate, request: Request) -> Bucket:
        policy = request.app.state.settings.default_policy
        async with _write(request) as session:
            return await buckets.start_create_bucket(
                session, request=body, default_policy=policy, now=_now(request)
            )

    @router.get("/buckets/{name}")
    async def get_bucket(name: str, request: Request) -> Bucket:
        async with _read(request) as session:
            return await buckets.get_bucket(session, name)

    @router.put("/buckets/{name}/policy")
    async def set_policy(name: str, body: PolicyRequest, request: Request) -> Bucket:
        async with _write(request) as session:
            return await buckets.set_policy(session, name=name, policy=body.policy)

    @router.put("/buckets/{name}/eviction")
    async def set_eviction(name: str, body: BucketEviction, request: Request) -> Bucket:
        async with _write(request) as session:
            return await buckets.set_eviction(session, name=name, eviction=body)

    @router.post("/buckets/{name}/complete")
    async def complete_bucket(name: str, request: Request) -> Bucket:
        async with _write(request) as session:
            return await buckets.complete_create_bucket(session, name=name)

    @router.delete("/buckets/{name}")
    async def start_bucket_deletion(name: str, request: Request) -> Bucket:
        async with _write(request) as session:
            return await buckets.start_delete_bucket(session, name=name)

    @router.post("/buckets/{name}/removed", status_code=204)
    async def bucket_removed(name: str, request: Request) -> None:
        async with _write(request) as session:
            await buckets.complete_delete_bucket(session, name=name)

    @router.get("/buckets/{name}/list", response_model=ListPage)
    async def list_objects(
        name: str,
        request: Request,
        prefix: str = "",
        delimiter: str = "",
        marker: str = "",
        max_keys: Annotated[int, Query(ge=0)] = listing.MAX_KEYS,
    ) -> Response:
        async with _read(request) as session:
            page = await listing.list_objects(
                session,
                bucket=name,
                prefix=prefix,
                delimiter=delimiter,
                marker=marker,
                max_keys=max_keys,
            )
        # Serialised once: FastAPI would validate the page's every object again first.
        return Response(page.model_dump_json(), media_type="application/json")

    @router.get("/buckets/{name}/objects/{key:path}", response_model=ObjectInfo)
    async def get_object(
        name: str, key: str, request: Request, holder: str | None = None
    ) -> Response:
        # The lookup behind every proxy GET and HEAD: serialised once, not validated again.
        lookup = request.app.state.object_lookup
        body, lease = await leased_record(lookup, _leases(request), name, key, holder)
        headers = {LEASE_HEADER: lease.header()} if lease else None
        return Response(body, media_type="application/json", headers=headers)

    @router.delete("/buckets/{name}/objects/{key:path}")
    async def delete_object(name: str, key: str, request: Request) -> list[Garbage]:
        async with _write(request) as session:
            generation, garbage = await writes.start_delete_object(session, bucket=name, key=key)
        await _leases(request).revoke(name, key, generation)
        return garbage

    @router.get("/buckets/{name}/multipart")
    async def list_uploads(name: str, request: Request, prefix: str = "") -> list[ObjectInfo]:
        async with _read(request) as session:
            return await writes.list_uploads(session, bucket=name, prefix=prefix)

    @router.get("/buckets/{name}/multipart/{upload_id}")
    async def get_upload(name: str, upload_id: str, request: Request) -> ObjectInfo:
        async with _read(request) as session:
            return await writes.get_upload(session, bucket=name, upload_id=upload_id)

    @router.post("/uploads", status_code=201)
    async def start_upload(body: UploadStart, request: Request) -> ObjectInfo:
        async with _write(request) as session:
            return await writes.start_upload(session, request=body, now=_now(request))

    @router.put("/uploads/{object_id}/physical", status_code=204)
    async def physical_upload(object_id: int, body: PhysicalUpload, request: Request) -> None:
        async with _write(request) as session:
            await writes.set_physical_upload(
                session,
                object_id=object_id,
                region=body.region,
                physical_upload_id=body.physical_upload_id,
            )

    @router.post("/uploads/{object_id}/complete")
    async def complete_upload(
        object_id: int,
        body: UploadComplete,
        request: Request,
        response: Response,
        holder: str | None = None,
    ) -> Committed:
        async with _write(request) as session:
            committed = await writes.complete_upload(
                session, object_id=object_id, done=body, now=_now(request)
            )
        written, leases = committed.object, _leases(request)
        # Acknowledged only once no proxy can answer from the version this one replaced.
        await leases.revoke(written.bucket, written.key, written.generation or 0)
        lease = leases.grant_written(holder, written.bucket, written.key, written.generation)
        if lease:
            response.headers[LEASE_HEADER] = lease.header()
        return committed

    @router.post("/uploads/{object_id}/abort")
    async def abort_upload(object_id: int, request: Request) -> list[Garbage]:
        async with _write(request) as session:
            return await writes.abort_upload(session, object_id=object_id)

    @router.post("/uploads/{object_id}/replicas", status_code=201)
    async def start_replica(object_id: int, body: ReplicaRequest, request: Request) -> Locator:
        async with _write(request) as session:
            return await replicas.start_replica(
                session, object_id=object_id, region=body.region, now=_now(request)
            )

    @router.post("/replicas/{locator_id}/complete")
    async def complete_replica(locator_id: int, request: Request) -> Locator:
        async with _write(request) as session:
            return await replicas.complete_replica(
                session, locator_id=locator_id, now=_now(request)
            )

    @router.post("/replicas/{locator_id}/abort")
    async def abort_replica(locator_id: int, request: Request) -> list[Garbage]:
        async with _write(request) as session:
            return await replicas.abort_replica(session, locator_id=locator_id)

    @router.post("/replicas/{locator_id}/read", status_code=204)
    async def replica_read(locator_id: int, request: Request) -> None:
        async with _write(request) as session:
            await replicas.touch(session, locator_id=locator_id, now=_now(request))

    @router.post("/garbage/removed", status_code=204)
    async def garbage_removed(body: Removed, request: Request) -> None:
        async with _write(request) as session:
            await reaper.forget_garbage(session, locator_ids=body.locator_ids)

    @router.post("/sweep")
    async def sweep(request: Request) -> dict[str, int]:
        done = await request.app.state.collector.sweep_once()
        return dataclasses.asdict(done)

    return router
