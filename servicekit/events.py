"""Events on NATS JetStream: a stream per service, CloudEvents payloads, durable pull consumers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, PubAck, StorageType, StreamConfig, StreamInfo

from servicekit.cloudevents import CloudEvent
from servicekit.errors import ExtractError, InvalidInput, ServiceUnavailable

log = logging.getLogger(__name__)

Handler = Callable[[CloudEvent], Awaitable[None]]

_SERVICE_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
_STREAM_NAME_IN_USE = 10058  # JetStream: the stream exists with a different configuration
# Structured mode of the CloudEvents NATS binding: the whole event is the message body.
_CONTENT_TYPE = "application/cloudevents+json"
# What a NATS client raises when the server is down, slow or gone.
_NATS_FAILURES = (nats.errors.Error, TimeoutError, OSError)


@dataclass(frozen=True)
class StreamSpec:
    name: str
    subjects: tuple[str, ...]


def stream_for(service: str) -> StreamSpec:
    """The stream a service publishes to: `catalog` → CATALOG with subjects `catalog.>`."""
    if not _SERVICE_NAME.match(service):
        raise ValueError(
            f"service name {service!r} cannot name a stream: use lower-case letters, digits, "
            "'-' or '_', starting with a letter"
        )
    return StreamSpec(name=service.upper().replace("-", "_"), subjects=(f"{service}.>",))


async def ensure_stream(
    js: JetStreamContext,
    service: str,
    *,
    max_age: timedelta = timedelta(days=7),
    duplicate_window: timedelta = timedelta(minutes=10),
) -> StreamInfo:
    """Create the service's stream, or bring an existing one to this configuration."""
    spec = stream_for(service)
    config = StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        max_age=max_age.total_seconds(),
        duplicate_window=duplicate_window.total_seconds(),
        storage=StorageType.FILE,
    )
    try:
        try:
            return await js.add_stream(config)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != _STREAM_NAME_IN_USE:
                raise
            return await js.update_stream(config)
    except nats.js.errors.APIError as exc:
        if isinstance(exc, nats.js.errors.ServiceUnavailableError):
            raise _unavailable(f"stream {spec.name}", exc) from exc
        raise ExtractError(f"stream {spec.name} cannot be configured: {exc}") from exc
    except _NATS_FAILURES as exc:
        raise _unavailable(f"stream {spec.name}", exc) from exc


def _unavailable(what: str, exc: BaseException) -> ServiceUnavailable:
    reason = str(exc) or type(exc).__name__
    return ServiceUnavailable(f"NATS: {what}: {reason}", detail={"check": "nats"})


class EventPublisher:
    """Publishes CloudEvents to JetStream and waits for the stream's ack.

    `Nats-Msg-Id` is the event id, so JetStream drops a republished event within the stream's
    duplicate window (PubAck.duplicate is then True).
    """

    def __init__(self, js: JetStreamContext, *, timeout: float = 5.0) -> None:
        self._js = js
        self._timeout = timeout

    async def publish(self, subject: str, event: CloudEvent) -> PubAck:
        return await self.publish_bytes(subject, event.to_json(), msg_id=event.id)

    async def publish_bytes(self, subject: str, payload: bytes, *, msg_id: str) -> PubAck:
        """Publish an already serialised event (the outbox stores events as bytes)."""
        headers = {"Nats-Msg-Id": msg_id, "Content-Type": _CONTENT_TYPE}
        try:
            return await self._js.publish(subject, payload, timeout=self._timeout, headers=headers)
        except _NATS_FAILURES as exc:
            raise _unavailable(f"publish to {subject}", exc) from exc


class EventSubscriber:
    """A durable pull consumer with explicit acks that hands each event to `handler`.

    Success acks; a handler exception naks with exponential delay, so JetStream redelivers
    (until `max_deliver`); a message that is not a valid CloudEvent is terminated, never
    retried. Events arrive one at a time, in stream order per consumer.
    """

    def __init__(
        self,
        js: JetStreamContext,
        *,
        stream: str,
        durable: str,
        filter_subject: str,
        handler: Handler,
        ack_wait: timedelta = timedelta(seconds=30),
        max_deliver: int = 10,
        retry_delay: timedelta = timedelta(seconds=1),
        retry_delay_cap: timedelta = timedelta(minutes=1),
        batch: int = 32,
        fetch_timeout: float = 1.0,
    ) -> None:
        self._js = js
        self._stream = stream
        self._durable = durable
        self._filter_subject = filter_subject
        self._handler = handler
        self._ack_wait = ack_wait
        self._max_deliver = max_deliver
        self._retry_delay = retry_delay.total_seconds()
        self._retry_delay_cap = retry_delay_cap.total_seconds()
        self._batch = batch
        self._fetch_timeout = fetch_timeout
        self._task: asyncio.Task[None] | None = None
        self._subscription: JetStreamContext.PullSubscription | None = None
        self._stopping = False
        self._fetching = False

    async def start(self) -> EventSubscriber:
        """Create or update the durable consumer and start consuming; returns self."""
        config = ConsumerConfig(
            durable_name=self._durable,
            ack_policy=AckPolicy.EXPLICIT,
            filter_subject=self._filter_subject,
            ack_wait=self._ack_wait.total_seconds(),
            max_deliver=self._max_deliver,
        )
        try:
            # add_consumer creates the durable consumer or updates its configuration.
            await self._js.add_consumer(self._stream, config)
            self._subscription = await self._js.pull_subscribe_bind(
                durable=self._durable, stream=self._stream
            )
        except _NATS_FAILURES as exc:
            raise _unavailable(f"consumer {self._durable} on {self._stream}", exc) from exc
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name=f"subscriber:{self._durable}")
        return self

    async def stop(self) -> None:
        """Finish the event in hand, hand back the rest unacked, and unsubscribe."""
        if self._task is None:
            return
        self._stopping = True
        if self._fetching:
            # Waiting for messages: nothing is in hand, so cancelling loses nothing.
            self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        if self._subscription is not None:
            with contextlib.suppress(*_NATS_FAILURES):
                await self._subscription.unsubscribe()
            self._subscription = None

    async def _run(self) -> None:
        while not self._stopping:
            messages = await self._fetch()
            for position, message in enumerate(messages):
                if self._stopping:
                    for unhandled in messages[position:]:
                        await _settle(unhandled.nak())
                    return
                await self._handle(message)

    async def _fetch(self) -> list[Msg]:
        assert self._subscription is not None
        self._fetching = True
        try:
            return await self._subscription.fetch(self._batch, timeout=self._fetch_timeout)
        except nats.errors.TimeoutError:
            return []
        except _NATS_FAILURES as exc:
            # Disconnected: the client reconnects by itself; try again after a pause.
            log.warning("consumer %s: fetch failed, retrying: %s", self._durable, exc)
            await asyncio.sleep(self._fetch_timeout)
            return []
        finally:
            self._fetching = False

    async def _handle(self, message: Msg) -> None:
        try:
            event = CloudEvent.from_json(message.data)
        except InvalidInput as exc:
            log.error(
                "consumer %s: terminating malformed event on %s (stream seq %s): %s",
                self._durable,
                message.subject,
                message.metadata.sequence.stream,
                exc.message,
            )
            await _settle(message.term())
            return
        try:
            await self._handler(event)
        except Exception:
            delivered = message.metadata.num_delivered
            if delivered >= self._max_deliver:
                log.exception(
                    "consumer %s: event %s failed on delivery %d of %d; giving up",
                    self._durable,
                    event.id,
                    delivered,
                    self._max_deliver,
                )
                await _settle(message.term())
                return
            delay = min(self._retry_delay_cap, self._retry_delay * 2 ** (delivered - 1))
            log.warning(
                "consumer %s: event %s failed on delivery %d; redelivering in %.2fs",
                self._durable,
                event.id,
                delivered,
                delay,
                exc_info=True,
            )
            await _settle(message.nak(delay=delay))
            return
        await _settle(message.ack())


async def _settle(reply: Awaitable[None]) -> None:
    # An ack lost to a disconnect is not an error here: JetStream redelivers after ack_wait
    # and the consumer's inbox makes the second delivery harmless.
    try:
        await reply
    except _NATS_FAILURES as exc:
        log.warning("ack not delivered (the event will be redelivered): %s", exc)


async def connect_nats(
    url: str,
    *,
    name: str,
    reconnect_wait: float = 0.5,
    on_disconnected: Callable[[], Awaitable[None]] | None = None,
    on_reconnected: Callable[[], Awaitable[None]] | None = None,
) -> Client:
    """A client that reconnects forever (it also waits for the server on first connect);
    `on_disconnected`/`on_reconnected` run after the log line of each such change."""

    async def on_error(exc: Exception) -> None:
        log.warning("NATS %s (%s): %s", url, name, exc)

    async def disconnected() -> None:
        if not client.is_closed:  # closing also reports a disconnect
            log.warning("NATS %s (%s): disconnected, reconnecting", url, name)
        if on_disconnected is not None:
            await on_disconnected()

    async def reconnected() -> None:
        log.info("NATS %s (%s): reconnected", url, name)
        if on_reconnected is not None:
            await on_reconnected()

    client = Client()
    await client.connect(
        servers=[url],
        name=name,
        max_reconnect_attempts=-1,
        reconnect_time_wait=reconnect_wait,  # type: ignore[arg-type]  # annotated int; a float works
        error_cb=on_error,
        disconnected_cb=disconnected,
        reconnected_cb=reconnected,
    )
    return client


class BackgroundNats:
    """A NATS client connected in the background, waiting for the server as long as it takes,
    then `on_connected(client)`; the callbacks of connect_nats are passed through."""

    def __init__(
        self,
        url: str,
        *,
        name: str,
        on_connected: Callable[[Client], Awaitable[None]] | None = None,
        on_disconnected: Callable[[], Awaitable[None]] | None = None,
        on_reconnected: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._url = url
        self._name = name
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected
        self._on_reconnected = on_reconnected
        self.client: Client | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._connect(), name=f"nats-{self._name}")

    async def _connect(self) -> None:
        self.client = await connect_nats(
            self._url,
            name=self._name,
            on_disconnected=self._on_disconnected,
            on_reconnected=self._on_reconnected,
        )
        if self._on_connected is not None:
            await self._on_connected(self.client)

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.is_connected

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.client is not None:
            await self.client.close()


def nats_check(client: Client, *, timeout: float = 1.0) -> Callable[[], Awaitable[None]]:
    """A readiness check: returns when the server answers a PING, else ServiceUnavailable."""

    async def check() -> None:
        if not client.is_connected:
            raise ServiceUnavailable("NATS is not connected", detail={"check": "nats"})
        try:
            await client.flush(timeout=timeout)  # type: ignore[arg-type]
        except _NATS_FAILURES as exc:
            raise _unavailable("ping", exc) from exc

    return check
