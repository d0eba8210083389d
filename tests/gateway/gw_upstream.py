"""A tiny upstream service for proxy tests: echoes, streams both ways, stalls on request."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

CHUNK = 64 * 1024


def pattern(size: int) -> bytes:
    """Deterministic bytes, so both ends can hash what they expect."""
    block = bytes(range(256)) * (CHUNK // 256)
    return (block * (size // CHUNK + 1))[:size]


@dataclass
class Probe:
    """What the test and the upstream share across threads."""

    first_chunk_arrived: threading.Event = field(default_factory=threading.Event)
    client_got_first_chunk: threading.Event = field(default_factory=threading.Event)
    requests: list[str] = field(default_factory=list)


def upstream_app(probe: Probe) -> Starlette:
    async def echo(request: Request) -> Response:
        probe.requests.append(f"{request.method} {request.url.path}")
        return JSONResponse(
            {
                "method": request.method,
                "path": request.url.path,
                "query": request.url.query,
                "raw_path": request.scope["raw_path"].decode("latin-1"),
                "headers": [[k, v] for k, v in request.headers.items()],
            }
        )

    async def upload(request: Request) -> Response:
        digest, size = hashlib.sha256(), 0
        async for chunk in request.stream():
            if chunk and not probe.first_chunk_arrived.is_set():
                probe.first_chunk_arrived.set()
            digest.update(chunk)
            size += len(chunk)
        return JSONResponse({"bytes": size, "sha256": digest.hexdigest()})

    async def download(request: Request) -> Response:
        size = int(request.query_params["size"])
        wait = request.query_params.get("wait") == "1"
        data = pattern(size)

        async def body() -> AsyncIterator[bytes]:
            yield data[:CHUNK]
            if wait:
                # The rest only once the client has the first chunk: a buffering proxy
                # would never pass it on, and this would time out.
                await asyncio.to_thread(probe.client_got_first_chunk.wait, 20)
            for start in range(CHUNK, size, CHUNK):
                yield data[start : start + CHUNK]

        headers = {"content-length": str(size)} if not wait else {}
        return StreamingResponse(body(), headers=headers, media_type="application/octet-stream")

    async def slow(request: Request) -> Response:
        await asyncio.sleep(float(request.query_params.get("seconds", "1")))
        return JSONResponse({"slept": True})

    async def status(request: Request) -> Response:
        return Response(status_code=int(request.path_params["code"]))

    async def cookies(request: Request) -> Response:
        response = Response("two cookies")
        response.set_cookie("a", "1")
        response.set_cookie("b", "2")
        return response

    async def evacuation(request: Request) -> Response:
        body = await request.body()
        probe.requests.append(f"{request.method} {request.url.path}")
        return JSONResponse(
            {
                "path": request.url.path,
                "received_sha256": hashlib.sha256(body).hexdigest(),
                "instruction": "walk north-east over Ponte delle Guglie to the safe area",
            }
        )

    async def ok(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/echo", echo, methods=["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"]),
            Route("/raw/{rest:path}", echo),
            Route("/upload", upload, methods=["POST", "PUT"]),
            Route("/download", download),
            Route("/slow", slow),
            Route("/status/{code:int}", status),
            Route("/cookies", cookies),
            Route("/evacuation/{rest:path}", evacuation, methods=["GET", "POST"]),
            Route("/healthz", ok),
            Route("/readyz", ok),
        ]
    )
