"""Tests for services/catalog/store.py: a batch (save_many) writes the rows and events of
saving its resources one by one, on SQLite and PostgreSQL."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import services.catalog
from servicekit.cloudevents import CloudEvent
from servicekit.db import create_engine, session_factory
from servicekit.migrate import migrate_service_database
from servicekit.outbox import outbox_events
from servicekit.security import JWKSet, SigningKey, verify_event
from services.catalog import store, watchers
from services.catalog.autocommit import STATEMENTS, StatementPool
from services.catalog.events import EVENT_SIGNER
from services.catalog.rows import put_resource
from services.catalog.tables import catalog_resources

MIGRATIONS = Path(services.catalog.__file__).with_name("migrations")
KEY = SigningKey.generate()
ALICE = {"owners": ["user/alice"]}
SHARED_WITH_BOB = {"owners": ["user/alice"], "view-meta": ["user/bob"]}
GENEVA = "POLYGON ((6 46, 6.3 46, 6.3 46.4, 6 46.4, 6 46))"

WATCHERS = [
    {
        "id": "data-set/floods",
        "resource-type": "data-set",
        "data-record-filter": "tags='flood' and bytes>10",
        "acl": SHARED_WITH_BOB,
    },
    {
        "id": "data-set/geneva",
        "resource-type": "data-set",
        "data-record-filter": f"location intersects '{GENEVA}'",
        "acl": ALICE,
    },
    {
        "id": "data-set/words",
        "resource-type": "data-set",
        "data-record-filter": "description=='river flood'",
        "acl": ALICE,
    },
    {  # bob's, on a data-set: hears of the records he may see
        "id": "subscription/on-floods",
        "resource-type": "subscription",
        "created-by": "user/bob",
        "subscriber-claims": ["user/bob"],
        "data-set": "data-set/floods",
        "acl": {"owners": ["user/bob"]},
    },
    {  # carol's, on a filter
        "id": "subscription/big",
        "resource-type": "subscription",
        "created-by": "user/carol",
        "subscriber-claims": ["user/carol"],
        "collection": "data-record",
        "filter": "bytes>100",
        "acl": {"owners": ["user/carol"]},
    },
    {  # alice's, on every record
        "id": "subscription/all",
        "resource-type": "subscription",
        "created-by": "user/alice",
        "subscriber-claims": ["user/alice"],
        "collection": "data-record",
        "acl": ALICE,
    },
]


def record(n: int, **attributes: Any) -> dict[str, Any]:
    return {
        "id": f"data-record/r{n}",
        "resource-type": "data-record",
        "created": "2026-03-01T00:00:00.000Z",
        "updated": "2026-03-01T00:00:00.000Z",
        "created-by": "user/alice",
        "infrastructure-service": "infrastructure-service/s3-edge",
        "acl": ALICE,
        **attributes,
    }


RECORDS = [
    record(0, tags=["flood"], bytes=50, acl=SHARED_WITH_BOB),
    record(1, tags=["flood"], bytes=5),
    record(2, tags=["fire"], bytes=500, location=[6.1, 46.2]),
    record(3, bytes=1000, acl={"owners": ["user/alice"], "view-meta": ["user/carol"]}),
    record(4, description="The river is in flood", location=[2.3, 48.9]),
    record(5, **{"model:name": "flood-risk", "model:version": "1", "resource:object": "x/y"}),
    record(6),
]


def renamed(document: dict[str, Any], prefix: str) -> dict[str, Any]:
    """The same resource under the id `data-record/<prefix>…`."""
    return {**copy.deepcopy(document), "id": document["id"].replace("/r", f"/{prefix}r", 1)}


def edited(document: dict[str, Any]) -> dict[str, Any]:
    """A new state: floods drop below the data-set's size, others grow into carol's filter."""
    bytes_ = document.get("bytes", 0)
    new = {
        **document,
        "bytes": 1 if "flood" in document.get("tags", ()) else bytes_ + 200,
        "updated": "2026-03-02T00:00:00.000Z",
    }
    if "model:name" in document:
        new["model:version"] = "2"  # a new version of a model is no new model
    return new


@pytest.fixture
async def session(database_url: str) -> AsyncIterator[AsyncSession]:
    await migrate_service_database(database_url, MIGRATIONS, "catalog_alembic_version")
    engine = create_engine(database_url)
    try:
        sessions = session_factory(engine, info={EVENT_SIGNER: KEY})
        async with sessions() as session:
            for watcher in WATCHERS:
                await put_resource(session, watcher)
            await session.commit()
            yield session
    finally:
        await engine.dispose()


async def events(session: AsyncSession) -> list[tuple[str, CloudEvent]]:
    rows = await session.execute(
        sa.select(outbox_events.c.subject, outbox_events.c.payload).order_by(outbox_events.c.seq)
    )
    return [(subject, CloudEvent.from_json(payload)) for subject, payload in rows.all()]


def comparable(event: CloudEvent, prefix: str) -> tuple[str, str | None, Any]:
    """What an event says, with the resource ids of one run written without its prefix."""

    def plain(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace(f"data-record/{prefix}r", "data-record/r")
        if isinstance(value, dict):
            return {key: plain(item) for key, item in value.items()}
        if isinstance(value, list):
            return [plain(item) for item in value]
        return value

    return event.type, plain(event.subject), plain(event.data)


async def run(
    session: AsyncSession,
    prefix: str,
    write: Callable[[AsyncSession, Sequence[tuple[Any, dict[str, Any]]]], Any],
    writes: Sequence[tuple[Any, dict[str, Any]]],
) -> list[tuple[str, str | None, Any]]:
    """The events of `writes` (ids renamed with `prefix`), written by `write`, committed."""
    seen = len(await events(session))
    renamed_writes = [
        (None if before is None else renamed(before, prefix), renamed(after, prefix))
        for before, after in writes
    ]
    await write(session, renamed_writes)
    await session.commit()
    return [comparable(event, prefix) for _, event in (await events(session))[seen:]]


async def one_by_one(session: AsyncSession, writes: Sequence[tuple[Any, dict[str, Any]]]) -> None:
    for before, after in writes:
        await store.save(session, before=before, after=after)


async def batched(session: AsyncSession, writes: Sequence[tuple[Any, dict[str, Any]]]) -> None:
    await store.save_many(session, writes)


async def stored(session: AsyncSession, prefix: str) -> list[dict[str, Any]]:
    rows = await session.execute(
        sa.select(catalog_resources.c.document)
        .where(catalog_resources.c.id.like(f"data-record/{prefix}r%"))
        .order_by(catalog_resources.c.id)
    )
    return [
        {**document, "id": document["id"].replace(f"/{prefix}r", "/r", 1)}
        for document in rows.scalars()
    ]


@pytest.fixture(params=["whole", "chunked"])
def chunks(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Batches matched in one query, or in queries of 2 ids by 2 watchers."""
    if request.param == "chunked":
        monkeypatch.setattr(watchers, "_IDS_PER_QUERY", 2)
        monkeypatch.setattr(watchers, "_COLUMNS_PER_QUERY", 2)
    return str(request.param)


async def test_a_batch_of_new_resources_announces_what_adding_them_one_by_one_does(
    session: AsyncSession, chunks: str
) -> None:
    creations = [(None, document) for document in RECORDS]
    singly = await run(session, "a", one_by_one, creations)
    together = await run(session, "b", batched, creations)
    assert together == singly
    subjects = [subject for subject, _, _ in singly]
    assert subjects.count("catalog.data-record.created") == len(RECORDS)
    assert subjects.count("catalog.model.published") == 1
    changed = [(d["data-set"], d["resource-id"]) for s, _, d in singly if s.endswith("changed")]
    assert changed == [
        ("data-set/floods", "data-record/r0"),
        ("data-set/geneva", "data-record/r2"),
        ("data-set/words", "data-record/r4"),
    ]
    bob = "catalog.subscription.on-floods"
    assert [d["resource-id"] for s, _, d in singly if s == bob] == ["data-record/r0"]
    carol = "catalog.subscription.big"  # r2 is hers by filter, but she may not see it
    assert [d["resource-id"] for s, _, d in singly if s == carol] == ["data-record/r3"]


async def test_a_batch_stores_what_saving_one_by_one_stores(session: AsyncSession) -> None:
    creations = [(None, document) for document in RECORDS]
    await run(session, "a", one_by_one, creations)
    await run(session, "b", batched, creations)
    assert await stored(session, "b") == await stored(session, "a")
    assert len(await stored(session, "a")) == len(RECORDS)


async def test_a_batch_of_edits_announces_entering_leaving_and_staying_as_one_by_one(
    session: AsyncSession, chunks: str
) -> None:
    creations = [(None, document) for document in RECORDS]
    edits = [(document, edited(document)) for document in RECORDS]
    await run(session, "a", one_by_one, creations)
    await run(session, "b", one_by_one, creations)
    singly = await run(session, "a", one_by_one, edits)
    together = await run(session, "b", batched, edits)
    assert together == singly
    changes_of = {(d["data-set"], d["change"]) for s, _, d in singly if s.endswith("changed")}
    assert ("data-set/floods", "left") in changes_of
    assert ("data-set/geneva", "updated") in changes_of
    big = [d["change"] for s, _, d in singly if s == "catalog.subscription.big"]
    assert big == ["updated"]  # r3 stays big; r2 entered, but carol may not see it


async def test_model_events_of_a_batch_are_signed(session: AsyncSession) -> None:
    await store.save_many(session, [(None, renamed(RECORDS[5], "m"))])
    (event,) = [e for s, e in await events(session) if s.endswith("published")]
    verify_event(event, JWKSet.of(KEY))
    assert event.data["data-record"] == "data-record/mr5"


async def test_a_batch_sees_the_watchers_written_before_it_in_the_batch(
    session: AsyncSession,
) -> None:
    data_set = {**WATCHERS[0], "id": "data-set/new", "data-record-filter": "bytes=7"}
    member = record(7, bytes=7)
    await store.save_many(session, [(None, data_set), (None, member)])
    changed = [e.data for s, e in await events(session) if s == "catalog.data-set.changed"]
    assert changed == [
        {
            "data-set": "data-set/new",
            "resource-id": member["id"],
            "change": "entered",
            "resource-event": "created",
        }
    ]


async def test_a_batch_writing_one_resource_twice_writes_its_states_in_turn(
    session: AsyncSession,
) -> None:
    first = record(8, tags=["flood"], bytes=50)
    second = {**first, "bytes": 1}
    await store.save_many(session, [(None, first), (first, second)])
    seen = [(s, e.data.get("change")) for s, e in await events(session)]
    assert ("catalog.data-record.created", None) in seen
    assert ("catalog.data-record.updated", None) in seen
    assert ("catalog.data-set.changed", "entered") in seen
    assert ("catalog.data-set.changed", "left") in seen
    (document,) = await stored(session, "")
    assert document["bytes"] == 1


async def test_an_empty_batch_writes_nothing(session: AsyncSession) -> None:
    await store.save_many(session, [])
    assert await events(session) == []


class Statements:
    """The statements a session sends to its database (executemany counts once)."""

    def __init__(self, session: AsyncSession) -> None:
        self.engine = session.get_bind()
        self.seen: list[str] = []

    def __enter__(self) -> list[str]:
        sa.event.listen(self.engine, "before_cursor_execute", self.note)
        return self.seen

    def __exit__(self, *_: object) -> None:
        sa.event.remove(self.engine, "before_cursor_execute", self.note)

    def note(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        self.seen.append(statement.split(None, 1)[0])


def postgresql(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


async def test_a_batch_costs_the_same_few_statements_however_large(session: AsyncSession) -> None:
    batch = [(None, record(100 + n, tags=["flood"], bytes=n)) for n in range(60)]
    with Statements(session) as seen:
        await store.save_many(session, batch)
    # watchers, upsert (one executemany), the geo data-set's candidates, matching, outbox
    # (one executemany); SQLite also replaces the full-text rows (a delete and an insert).
    assert len(seen) == (5 if postgresql(session) else 7)
    assert len(await stored(session, "")) == 60


async def test_a_new_resource_nothing_watches_is_one_statement_on_postgresql(
    session: AsyncSession,
) -> None:
    data_object = {
        "id": "data-object/o1",
        "resource-type": "data-object",
        "created-by": "user/alice",
        "state": "NEW",
        "acl": ALICE,
    }
    with Statements(session) as seen:
        await store.save(session, before=None, after=data_object)
    assert len(seen) == (1 if postgresql(session) else 5)
    ((subject, event),) = await events(session)
    assert (subject, event.data["resource"]["id"]) == (
        "catalog.data-object.created",
        "data-object/o1",
    )


@pytest.fixture
async def pg_sessions(pg_database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    """Sessions on a PostgreSQL catalog with no watcher yet, sharing their sightings and a
    statement pool, as the app's do."""
    await migrate_service_database(pg_database_url, MIGRATIONS, "catalog_alembic_version")
    engine = create_engine(pg_database_url)
    statements = await StatementPool.open(pg_database_url, size=2)
    try:
        yield session_factory(
            engine,
            info={
                EVENT_SIGNER: KEY,
                watchers.SIGHTINGS: watchers.WatcherSightings(),
                STATEMENTS: statements,
            },
        )
    finally:
        await statements.close()
        await engine.dispose()


async def _rolled_back_save(
    sessions: async_sessionmaker[AsyncSession], *, read_first: bool
) -> None:
    """A new record saved as the end of its transaction, which is then rolled back."""
    async with sessions() as session:
        if read_first:
            await session.execute(sa.select(catalog_resources.c.id).limit(1))
        await store.save(session, before=None, after=record(1), ends_transaction=True)
        await session.rollback()


async def _stored_and_announced(sessions: async_sessionmaker[AsyncSession]) -> tuple[int, int]:
    async with sessions() as session:
        return len(await stored(session, "")), len(await events(session))


async def test_a_new_resource_ending_its_transaction_commits_alone_on_postgresql(
    pg_sessions: async_sessionmaker[AsyncSession],
) -> None:
    await _rolled_back_save(pg_sessions, read_first=False)
    assert await _stored_and_announced(pg_sessions) == (1, 1)  # the rollback had nothing left


async def test_a_new_resource_after_another_statement_stays_in_its_transaction(
    pg_sessions: async_sessionmaker[AsyncSession],
) -> None:
    await _rolled_back_save(pg_sessions, read_first=True)
    assert await _stored_and_announced(pg_sessions) == (0, 0)


async def test_a_watched_new_resource_stays_in_its_transaction_and_is_announced(
    pg_sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with pg_sessions() as session:
        await put_resource(session, WATCHERS[0])  # data-set/floods
        await session.commit()
    for sightings in (False, True):  # first not yet seen, then known from the first attempt
        assert pg_sessions.kw["info"][watchers.SIGHTINGS].seen is sightings
        await _rolled_back_save(pg_sessions, read_first=False)
        assert await _stored_and_announced(pg_sessions) == (0, 0)
    async with pg_sessions() as session:
        flood = record(2, tags=["flood"], bytes=50)
        await store.save(session, before=None, after=flood, ends_transaction=True)
        await session.commit()
        assert [subject for subject, _ in await events(session)] == [
            "catalog.data-record.created",
            "catalog.data-set.changed",
        ]
