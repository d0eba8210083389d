"""An upstream's answer as the application reads it, and the upstream client's failures.

`upstream_http.py` says when each failure comes out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from servicekit.upstream_connection import Connection

__all__ = [
    "UpstreamFailure",
    "UpstreamResponse",
    "UpstreamTimeout",
    "UpstreamUnreachable",
]


class UpstreamFailure(Exception):
    pass


class UpstreamUnreachable(UpstreamFailure):
    pass


class UpstreamTimeout(UpstreamFailure):
    pass


class UpstreamResponse:
    """Status and headers of an upstream's answer; its body follows through `read` or
    `chunks`. `close()` hands the connection back when the body was read to its end, and
    closes it otherwise; reading the body to its end closes the response by itself."""

    __slots__ = ("_connection", "_pending", "_size", "complete", "raw_headers", "status")

    def __init__(
        self, connection: Connection, status: int, raw_headers: list[tuple[bytes, bytes]]
    ) -> None:
        self._connection: Connection | None = connection
        self.status = status
        self.raw_headers = raw_headers
        self._pending: list[bytes] = []
        self._size = 0
        self.complete = False  # the whole body has been received

    @property
    def at_eof(self) -> bool:
        """Whether every byte of the body has been received and taken."""
        return self.complete and not self._pending

    def content_length(self) -> int | None:
        for name, value in self.raw_headers:
            if name.lower() == b"content-length":
                return int(value) if value.isdigit() else None
        return None

    async def read(self, limit: int) -> bytes:
        """The whole body; UpstreamFailure once it exceeds `limit` bytes."""
        try:
            while not self.complete:
                if self._size > limit:
                    break
                await self._more()
            if self._size > limit:
                raise UpstreamFailure(f"the response exceeds the {limit} bytes read at once")
            return self._take()
        finally:
            self.close()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives, in the pieces waiting when asked (never empty)."""
        try:
            while True:
                if self._pending:
                    yield self._take()
                elif self.complete:
                    return
                else:
                    await self._more()
        finally:
            self.close()

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.finished(reusable=self.at_eof)

    def _take(self) -> bytes:
        pending = self._pending
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        self._size = 0
        if self._connection is not None:
            self._connection.taken()
        return data

    async def _more(self) -> None:
        if self._connection is None:
            raise UpstreamFailure("the upstream response was closed before its end")
        await self._connection.more()

    def _received(self, data: bytes) -> None:
        self._pending.append(data)
        self._size += len(data)
