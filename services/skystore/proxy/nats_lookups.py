"""The proxy's end of lookups over NATS (lookup_wire.py), on the connection its lease
revocations arrive on."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import nats.errors
from nats.aio.client import Client

from servicekit.errors import ServiceUnavailable
from services.skystore.leases_wire import Lease
from services.skystore.lookup_wire import LOOKUP_SUBJECT, LookupAnswer, LookupRequest
from services.skystore.proxy.locator_errors import locator_error
from services.skystore.schemas import ObjectInfo

__all__ = ["NatsLookups"]

log = logging.getLogger(__name__)
NO_RESPONDER_PAUSE = 5.0  # seconds spent asking over REST after no locator answered on NATS


class NatsLookups:
    def __init__(
        self,
        token: str,
        connection: Callable[[], Client | None],
        *,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._token = token
        self._connection = connection
        self._timeout = timeout
        self._clock = clock
        self._pause_until = 0.0

    async def object(
        self, bucket: str, key: str, holder: str | None
    ) -> tuple[ObjectInfo, Lease | None] | None:
        """The record and its lease as the locator answers them over NATS; None when no locator
        can answer there (not connected, or no locator listening): ask over REST then."""
        client = self._connection()
        if client is None or self._clock() < self._pause_until:
            return None
        request = LookupRequest(bucket, key, holder, self._token).encode()
        try:
            reply = await client.request(LOOKUP_SUBJECT, request, timeout=self._timeout)
        except nats.errors.NoRespondersError:
            log.info("no locator answers lookups on NATS: asking over REST for a while")
            self._pause_until = self._clock() + NO_RESPONDER_PAUSE
            return None
        except (nats.errors.TimeoutError, TimeoutError):
            raise ServiceUnavailable("the SkyStore locator did not answer a lookup") from None
        except nats.errors.Error as exc:  # the connection closed or is draining
            log.warning("lookup over NATS failed, asking over REST: %r", exc)
            return None
        try:
            answer = LookupAnswer.of(reply.data, reply.headers)
        except ValueError as exc:
            log.warning("not a lookup answer, asking over REST: %s", exc)
            return None
        if answer.status >= 400:
            raise locator_error(answer.status, answer.body)
        return ObjectInfo.model_validate_json(answer.body), answer.lease
