"""The locator's end of lookups over NATS (lookup_wire.py): the same answer as the REST route,
to proxies that hear lease revocations."""

from __future__ import annotations

import asyncio
import logging

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from servicekit.errors import BadRequest, ExtractError, Unauthorized
from servicekit.wire_errors import WireError, WireFormat, render_error
from services.skystore.locator.leases import Leases
from services.skystore.locator.lookup import ObjectLookup, leased_record
from services.skystore.lookup_wire import LOOKUP_QUEUE, LOOKUP_SUBJECT, LookupAnswer, LookupRequest
from services.skystore.secrets_files import token_matches

__all__ = ["LookupResponder"]

log = logging.getLogger(__name__)


class LookupResponder:
    def __init__(self, token: str, lookup: ObjectLookup, leases: Leases) -> None:
        self._token = token
        self._lookup = lookup
        self._leases = leases
        self._client: Client | None = None
        # Each request is answered by a task of its own: a lookup that waits on the database
        # (PostgreSQL, or a miss) does not hold up the ones behind it.
        self._answering: set[asyncio.Task[None]] = set()

    async def listen(self, client: Client) -> None:
        """Answer lookups on `client` from now on (the subscription outlives reconnections)."""
        self._client = client
        await client.subscribe(LOOKUP_SUBJECT, queue=LOOKUP_QUEUE, cb=self._received)
        await client.flush()

    async def answer(self, data: bytes) -> LookupAnswer:
        try:
            request = LookupRequest.decode(data)
        except ValueError as exc:
            return _failed(BadRequest(str(exc)))
        if not token_matches(self._token, request.token):
            return _failed(Unauthorized("a lookup needs the locator's internal token"))
        try:
            body, lease = await leased_record(
                self._lookup, self._leases, request.bucket, request.key, request.holder
            )
        except ExtractError as exc:
            return _failed(exc)
        return LookupAnswer(200, body, lease)

    async def _received(self, message: Msg) -> None:
        if not message.reply:
            return  # a publish, not a request: nobody to answer
        task = asyncio.create_task(self._reply(message))
        self._answering.add(task)
        task.add_done_callback(self._answering.discard)

    async def _reply(self, message: Msg) -> None:
        try:
            answer = await self.answer(message.data)
        except Exception:
            log.exception("lookup over NATS failed")
            answer = LookupAnswer(500, b'{"detail": "the lookup failed; see the locator log"}')
        assert self._client is not None
        try:
            await self._client.publish(message.reply, answer.body, headers=answer.headers())
        except nats.errors.Error as exc:  # the connection went: the proxy times out, or retries
            log.warning("could not answer a lookup over NATS: %r", exc)

    async def stop(self) -> None:
        await asyncio.gather(*self._answering, return_exceptions=True)


def _failed(exc: ExtractError) -> LookupAnswer:
    response = render_error(WireFormat.PROBLEM, WireError.of(exc), resource=LOOKUP_SUBJECT)
    return LookupAnswer(exc.status, bytes(response.body))
