"""servicekit.events against a real NATS JetStream server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext

from servicekit.cloudevents import CloudEvent
from servicekit.errors import ServiceUnavailable
from servicekit.events import (
    BackgroundNats,
    EventPublisher,
    EventSubscriber,
    connect_nats,
    ensure_stream,
    nats_check,
    stream_for,
)
from servicekit.infra import NatsServer
from servicekit.testing import eventually

FAST_RETRY = timedelta(milliseconds=50)


@pytest.fixture
async def nc(nats_url: str) -> AsyncIterator[Client]:
    client = await connect_nats(nats_url, name="test-events")
    yield client
    await client.close()


@pytest.fixture
async def js(nc: Client) -> JetStreamContext:
    return nc.jetstream()


@pytest.fixture
async def service(js: JetStreamContext) -> AsyncIterator[str]:
    """A service name of this test's own, whose stream exists; deleted afterwards."""
    name = f"t{uuid.uuid4().hex[:10]}"
    await ensure_stream(js, name)
    yield name
    await js.delete_stream(stream_for(name).name)


def event(number: int, **fields) -> CloudEvent:
    return CloudEvent(type="test.thing.happened", source="/tests", data={"n": number}, **fields)


class Received:
    """A handler that records events, failing the first `failures[n]` deliveries of event n."""

    def __init__(self, failures: dict[int, int] | None = None) -> None:
        self.events: list[CloudEvent] = []
        self.attempts: dict[int, int] = {}
        self._failures = failures or {}

    async def __call__(self, received: CloudEvent) -> None:
        number = received.data["n"]
        self.attempts[number] = self.attempts.get(number, 0) + 1
        if self.attempts[number] <= self._failures.get(number, 0):
            raise RuntimeError(f"handler fails on delivery {self.attempts[number]}")
        self.events.append(received)

    def numbers(self) -> list[int]:
        return [received.data["n"] for received in self.events]


def test_each_service_has_its_stream() -> None:
    assert stream_for("catalog").name == "CATALOG"
    assert stream_for("catalog").subjects == ("catalog.>",)
    assert stream_for("twin").name == "TWIN"
    for bad in ("Catalog", "cat.alog", "cat>", "", "9lives", "a b"):
        with pytest.raises(ValueError, match="cannot name a stream"):
            stream_for(bad)


async def test_ensure_stream_creates_then_updates_idempotently(js: JetStreamContext) -> None:
    name = f"t{uuid.uuid4().hex[:10]}"
    try:
        created = await ensure_stream(js, name, duplicate_window=timedelta(minutes=2))
        again = await ensure_stream(js, name, duplicate_window=timedelta(minutes=2))
        updated = await ensure_stream(js, name, max_age=timedelta(hours=1))
    finally:
        await js.delete_stream(stream_for(name).name)
    assert created.config.subjects == [f"{name}.>"]
    assert created.config.duplicate_window == again.config.duplicate_window == 120
    assert (updated.config.max_age, updated.config.duplicate_window) == (3600, 600)


async def test_publish_sets_the_message_id_and_sends_the_event_as_json(
    js: JetStreamContext, service: str
) -> None:
    sent = event(1, extensions={"traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01"})
    ack = await EventPublisher(js).publish(f"{service}.thing.happened", sent)
    stored = await js.get_msg(stream_for(service).name, ack.seq)
    assert stored.headers is not None and stored.headers["Nats-Msg-Id"] == sent.id
    assert stored.headers["Content-Type"] == "application/cloudevents+json"
    assert CloudEvent.from_json(stored.data) == sent


async def test_republishing_an_event_is_dropped_by_the_duplicate_window(
    js: JetStreamContext, service: str
) -> None:
    publisher = EventPublisher(js)
    sent = event(1)
    first = await publisher.publish(f"{service}.thing.happened", sent)
    second = await publisher.publish(f"{service}.thing.happened", sent)
    info = await js.stream_info(stream_for(service).name)
    assert (first.duplicate, second.duplicate, second.seq) == (None, True, first.seq)
    assert info.state.messages == 1


async def test_publishing_to_a_subject_without_a_stream_is_unavailable(
    js: JetStreamContext,
) -> None:
    with pytest.raises(ServiceUnavailable, match=r"publish to nostream\.x"):
        await EventPublisher(js, timeout=1).publish("nostream.x", event(1))


async def test_publishing_while_nats_is_down_is_unavailable(nats_server: NatsServer) -> None:
    client = await connect_nats(nats_server.url, name="test-outage")
    try:
        await ensure_stream(client.jetstream(), "outage")
        nats_server.stop()
        with pytest.raises(ServiceUnavailable, match=r"NATS: publish to outage\.x") as caught:
            await EventPublisher(client.jetstream(), timeout=0.5).publish("outage.x", event(1))
        assert caught.value.detail == {"check": "nats"}
    finally:
        await client.close()


async def test_the_subscriber_hands_over_events_in_order_and_acks_them(
    js: JetStreamContext, service: str
) -> None:
    publisher = EventPublisher(js)
    for number in range(20):
        await publisher.publish(f"{service}.thing.happened", event(number))
    received = Received()
    stream = stream_for(service).name
    subscriber = await EventSubscriber(
        js, stream=stream, durable="reader", filter_subject=f"{service}.>", handler=received
    ).start()
    try:
        await eventually(lambda: len(received.events) == 20, within=10.0)
        await eventually(lambda: _settled(js, stream, "reader"), within=10.0)
    finally:
        await subscriber.stop()
    assert received.numbers() == list(range(20))


async def _settled(js: JetStreamContext, stream: str, durable: str) -> bool:
    info = await js.consumer_info(stream, durable)
    return info.num_pending == 0 and info.num_ack_pending == 0


async def test_a_failed_handler_gets_the_event_again(js: JetStreamContext, service: str) -> None:
    received = Received(failures={1: 2})
    stream = stream_for(service).name
    subscriber = await EventSubscriber(
        js,
        stream=stream,
        durable="retrying",
        filter_subject=f"{service}.>",
        handler=received,
        retry_delay=FAST_RETRY,
    ).start()
    try:
        for number in range(3):
            await EventPublisher(js).publish(f"{service}.thing.happened", event(number))
        await eventually(lambda: sorted(received.numbers()) == [0, 1, 2], within=10.0)
        await eventually(lambda: _settled(js, stream, "retrying"), within=10.0)
    finally:
        await subscriber.stop()
    assert received.attempts == {0: 1, 1: 3, 2: 1}


async def test_a_malformed_message_is_terminated_not_retried(
    js: JetStreamContext, service: str
) -> None:
    received = Received()
    stream = stream_for(service).name
    await js.publish(f"{service}.thing.happened", b'{"specversion": "1.0", "id": "x"}')
    await EventPublisher(js).publish(f"{service}.thing.happened", event(7))
    subscriber = await EventSubscriber(
        js, stream=stream, durable="strict", filter_subject=f"{service}.>", handler=received
    ).start()
    try:
        await eventually(lambda: received.numbers() == [7], within=10.0)
        await eventually(lambda: _settled(js, stream, "strict"), within=10.0)
        info = await js.consumer_info(stream, "strict")
    finally:
        await subscriber.stop()
    assert info.ack_floor.stream_seq == 2
    assert info.num_redelivered == 0


async def test_an_event_that_keeps_failing_is_given_up_after_max_deliver(
    js: JetStreamContext, service: str
) -> None:
    received = Received(failures={0: 1000})
    stream = stream_for(service).name
    subscriber = await EventSubscriber(
        js,
        stream=stream,
        durable="patient",
        filter_subject=f"{service}.>",
        handler=received,
        max_deliver=3,
        retry_delay=FAST_RETRY,
    ).start()
    try:
        for number in range(2):
            await EventPublisher(js).publish(f"{service}.thing.happened", event(number))
        await eventually(lambda: received.numbers() == [1], within=10.0)
        await eventually(lambda: _settled(js, stream, "patient"), within=10.0)
    finally:
        await subscriber.stop()
    assert received.attempts == {0: 3, 1: 1}


async def test_a_stopped_durable_subscriber_resumes_where_it_left_off(
    js: JetStreamContext, service: str
) -> None:
    publisher = EventPublisher(js)
    stream = stream_for(service).name
    first = Received()
    subscriber = await EventSubscriber(
        js, stream=stream, durable="resuming", filter_subject=f"{service}.>", handler=first
    ).start()
    await publisher.publish(f"{service}.thing.happened", event(0))
    await eventually(lambda: first.numbers() == [0], within=10.0)
    await eventually(lambda: _settled(js, stream, "resuming"), within=10.0)
    await subscriber.stop()

    await publisher.publish(f"{service}.thing.happened", event(1))
    second = Received()
    subscriber = await EventSubscriber(
        js, stream=stream, durable="resuming", filter_subject=f"{service}.>", handler=second
    ).start()
    try:
        await eventually(lambda: second.numbers() == [1], within=10.0)
    finally:
        await subscriber.stop()
    assert first.numbers() == [0]


async def test_nats_check_follows_the_server_down_and_up(nats_server: NatsServer) -> None:
    client = await connect_nats(nats_server.url, name="test-check", reconnect_wait=0.1)
    check = nats_check(client)
    try:
        await check()
        nats_server.stop()
        with pytest.raises(ServiceUnavailable, match="NATS"):
            await check()
        nats_server.start()

        async def passes() -> bool:
            try:
                await check()
            except ServiceUnavailable:
                return False
            return True

        await eventually(passes, within=10.0)
    finally:
        await client.close()


async def test_a_subscriber_keeps_consuming_across_a_server_restart(
    nats_server: NatsServer,
) -> None:
    client = await connect_nats(nats_server.url, name="test-restart", reconnect_wait=0.1)
    js = client.jetstream()
    received = Received()
    await ensure_stream(js, "restart")
    subscriber = await EventSubscriber(
        js, stream="RESTART", durable="survivor", filter_subject="restart.>", handler=received
    ).start()
    try:
        await EventPublisher(js).publish("restart.x", event(0))
        await eventually(lambda: received.numbers() == [0], within=10.0)
        nats_server.stop()
        nats_server.start()

        async def published() -> bool:
            try:
                await EventPublisher(js, timeout=0.5).publish("restart.x", event(1, id="one"))
            except ServiceUnavailable:
                return False
            return True

        await eventually(published, within=10.0)
        await eventually(lambda: received.numbers() == [0, 1], within=20)
    finally:
        await subscriber.stop()
        await client.close()


async def test_background_nats_waits_for_the_server_and_reports_its_changes(
    nats_server: NatsServer,
) -> None:
    seen: list[str] = []

    async def connected(client: Client) -> None:
        seen.append("connected" if client.is_connected else "not connected")

    async def note(what: str) -> None:
        seen.append(what)

    nats_server.stop()
    background = BackgroundNats(
        nats_server.url,
        name="test-background",
        on_connected=connected,
        on_disconnected=lambda: note("disconnected"),
        on_reconnected=lambda: note("reconnected"),
    )
    background.start()
    try:
        assert not background.connected
        nats_server.start()  # the first connection waits for it
        await eventually(lambda: background.connected, within=15.0)
        assert seen == ["connected"]
        nats_server.stop()
        await eventually(lambda: "disconnected" in seen, within=10.0)
        nats_server.start()
        await eventually(lambda: seen[-1] == "reconnected", within=15.0)
    finally:
        await background.stop()
    assert not background.connected
