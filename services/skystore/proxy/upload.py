"""Writing a request body into a region: small bodies in one PUT, large ones as a multipart
upload whose parts go out while the next one is still arriving (about three parts in memory)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiobotocore.client import AioBaseClient
from botocore.exceptions import BotoCoreError, ClientError

from servicekit.errors import PayloadTooLarge
from servicekit.s3 import translate_s3_error

__all__ = ["PART_SIZE", "write_stream"]

PART_SIZE = 8 * 1024 * 1024
MAX_PARTS = 10_000


async def _parts(chunks: AsyncIterator[bytes], size: int) -> AsyncIterator[bytes]:
    buffer = bytearray()
    async for chunk in chunks:
        buffer += chunk
        while len(buffer) >= size:
            yield bytes(buffer[:size])
            del buffer[:size]
    if buffer:
        yield bytes(buffer)


async def write_stream(
    client: AioBaseClient,
    bucket: str,
    key: str,
    chunks: AsyncIterator[bytes],
    *,
    part_size: int = PART_SIZE,
) -> None:
    """All of the stream under bucket/key, or nothing (a failed multipart upload is aborted)."""
    parts = _parts(chunks, part_size)
    try:
        first = await anext(parts, b"")
        second = await anext(parts, None)
        if second is None:
            await client.put_object(Bucket=bucket, Key=key, Body=first)
            return
        upload = await client.create_multipart_upload(Bucket=bucket, Key=key)
    except (BotoCoreError, ClientError) as exc:
        raise translate_s3_error(exc, bucket=bucket, key=key) from exc
    upload_id = upload["UploadId"]
    queue: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue(maxsize=1)
    done: list[dict[str, Any]] = []

    async def send() -> None:
        while (item := await queue.get()) is not None:
            number, data = item
            response = await client.upload_part(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
            )
            done.append({"PartNumber": number, "ETag": response["ETag"]})

    sender = asyncio.create_task(send())
    try:
        number = 0
        for data in (first, second):
            number += 1
            await _put(queue, sender, (number, data))
        async for data in parts:
            number += 1
            if number > MAX_PARTS:
                raise PayloadTooLarge(f"more than {MAX_PARTS} parts of {part_size} bytes")
            await _put(queue, sender, (number, data))
        await _put(queue, sender, None)
        await sender
        await client.complete_multipart_upload(
            Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": done}
        )
    except BaseException as exc:
        sender.cancel()
        with contextlib.suppress(BaseException):
            await sender
        with contextlib.suppress(BotoCoreError, ClientError):
            await client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        if isinstance(exc, BotoCoreError | ClientError):
            raise translate_s3_error(exc, bucket=bucket, key=key) from exc
        raise


async def _put(
    queue: asyncio.Queue[tuple[int, bytes] | None],
    sender: asyncio.Task[None],
    item: tuple[int, bytes] | None,
) -> None:
    # If the sender died, its error is the one to raise, not a queue that never drains.
    put = asyncio.ensure_future(queue.put(item))
    await asyncio.wait({put, sender}, return_when=asyncio.FIRST_COMPLETED)
    if not put.done():
        put.cancel()
    if sender.done() and sender.exception() is not None:
        raise sender.exception()  # type: ignore[misc]
