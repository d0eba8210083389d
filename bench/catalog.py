"""Catalog search benchmark: the catalog's HTTP API (uvicorn) vs the same work in raw SQL.

    python -m bench.catalog [--records 100000] [--operations 200] [--concurrency 1 8]
                            [--rounds 4]

Creates a throwaway PostgreSQL database (EXTRACT_BENCH_PG_URL, a libpq URL of a server where
one may be created, or 127.0.0.1:5432), migrates it, seeds `--records` data-records, serves the
catalog from it in a real `python -m services.catalog` process, then runs each path at each
concurrency, side by side with asyncpg running the hand-written SQL that gives the same
answer over the same indexes (every index the catalog's migrations create: the generated hot
columns', the service-and-state one, the viewers GIN index), with PostgreSQL's JIT off as the
catalog sets it:

- search: a 3-predicate filter + orderby, first page of 50, with its exact count;
- count: every visible data-record (`last=0`);
- insert: one data-record per request, with the HTTP floor beside it: an authenticated
  `GET /api/cloud-entry-point`, which touches no database (what HTTP, the middleware and
  the identity token cost any request);
- bulk insert: `--bulk-size` data-records per request (`bulk: yes`), rate in records/s.

The paths of one table take turns: each runs a quarter of its requests (`--rounds 4`), then
the next, in alternating order (A B C, C B A, …), so that the machine's drift in speed (this
VM's varies by ±30 % over minutes) weighs on every path alike. Runs before 2026-12-04 ran each
path's requests in one go, the baseline first.

An add writes the record and its change event (`catalog.data-record.created`, a CloudEvent
carrying the record) to the outbox in one transaction, so the inserts' baseline does the same
two writes by hand: one statement, the record's insert a data-modifying CTE of the event's (a
statement is its own transaction), with the same event payload. The catalog's statement also
reads the data-sets and subscriptions (none here) that would be told of the record. The bare
INSERT of the record alone is printed above it, for comparison with earlier runs.

The API's client is aiohttp, keep-alive, one connection per concurrent request. Runs before
2026-12-03 used httpx, which spent 1.1-1.8 ms of CPU per request (as much as the catalog's own
add, 0.5 ms for the floor) on the same two cores as the catalog and PostgreSQL; aiohttp spends
0.25-0.5 ms. The raw SQL paths' client, asyncpg, spends ~0.1 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import sqlalchemy as sa

import services.catalog
from bench._stats import Result, print_table
from bench.outbox import postgres_database
from servicekit.cloudevents import CloudEvent
from servicekit.db import create_engine, session_factory
from servicekit.infra import free_port
from servicekit.migrate import migrate_service_database
from servicekit.security import Identity, SigningKey, issue_identity_token, write_jwks
from servicekit.testing import ServiceProcess
from services.catalog.filters import normalize_timestamp
from services.catalog.rows import insert_resources

MIGRATIONS = Path(services.catalog.__file__).with_name("migrations")
PRINCIPAL = "user/bench"
OTHERS = ("user/other", "group/elsewhere")
SERVICES = [f"infrastructure-service/s3-{n}" for n in range(10)]
STATES = ("new", "ready", "gone")
FILTER = "state='ready' and bytes>500000 and infrastructure-service='infrastructure-service/s3-3'"
ORDERBY = "timestamp:desc"
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)

# Written to use the same indexes: `hot_<attr>_n IS NULL` lets a (collection, n, s, id) index
# range on the string column.
RAW_WHERE = """collection = 'data-record' AND viewers ?| $1::text[]
    AND hot_state_n IS NULL AND hot_state_s = 'ready' AND hot_bytes_n > 500000
    AND hot_infrastructure_service_n IS NULL
    AND hot_infrastructure_service_s = 'infrastructure-service/s3-3'"""
RAW_PAGE = f"""SELECT document FROM catalog_resources WHERE {RAW_WHERE}
    ORDER BY hot_timestamp_n DESC NULLS LAST, hot_timestamp_s DESC NULLS LAST, id LIMIT 50"""
RAW_COUNT = f"SELECT count(*) FROM catalog_resources WHERE {RAW_WHERE}"
RAW_COUNT_ALL = (
    "SELECT count(*) FROM catalog_resources WHERE collection = 'data-record' "
    "AND viewers ?| $1::text[]"
)
RAW_INSERT = """INSERT INTO catalog_resources (id, collection, document, created, updated, viewers)
    VALUES ($1, 'data-record', $2::jsonb, $3, $3, $4::jsonb)"""
RAW_INSERT_WITH_EVENT = f"""WITH record AS ({RAW_INSERT})
    INSERT INTO outbox_events (id, subject, payload, created_at, attempts)
    VALUES ($5, 'catalog.data-record.created', $6, $3, 0)"""


def record(n: int, rng: random.Random) -> dict[str, Any]:
    owner = PRINCIPAL if n % 4 else rng.choice(OTHERS)  # a quarter belongs to someone else
    moment = EPOCH + timedelta(seconds=rng.randrange(300 * 86400))
    return {
        "infrastructure-service": rng.choice(SERVICES),
        "name": f"record {n}",
        "description": f"spectrum {n % 1000} of campaign {n % 37}",
        "timestamp": normalize_timestamp(moment),
        "bytes": rng.randrange(1_000_000),
        "state": rng.choice(STATES),
        "tags": ["bench", f"t{n % 11}"],
        "acl": {"owners": [owner]},
    }


async def seed(url: str, count: int) -> None:
    rng = random.Random(7)
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as session:
            for start in range(0, count, 5_000):
                batch = []
                for n in range(start, min(start + 5_000, count)):
                    document = record(n, rng)
                    document |= {
                        "id": f"data-record/{uuid.uuid4()}",
                        "resource-type": "data-record",
                    }
                    batch.append(document)
                await insert_resources(session, batch)
                await session.commit()
            await session.execute(sa.text("ANALYZE catalog_resources"))
            await session.commit()
    finally:
        await engine.dispose()


async def measure(
    name: str,
    operations: int,
    concurrency: int,
    work: Callable[[int], Awaitable[int]],
    start: int = 0,
) -> Result:
    """`operations` calls of work(n), n from `start` (each returning how many items it did),
    `concurrency` at a time; latencies per call, the rate in items."""
    latencies: list[float] = []
    done = 0
    queue = iter(range(start, start + operations))

    async def worker() -> None:
        nonlocal done
        for n in queue:
            sent = time.perf_counter()
            items = await work(n)  # not `done += await …`: that reads `done` before awaiting
            done += items
            latencies.append(time.perf_counter() - sent)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Result(name, done, time.perf_counter() - began, latencies)


async def side_by_side(
    works: list[tuple[str, Callable[[int], Awaitable[int]]]],
    operations: int,
    concurrency: int,
    rounds: int,
) -> list[Result]:
    """Each path's `operations` calls, in `rounds` turns taken in alternating order (A B C,
    C B A, …), so that a drift in the machine's speed weighs on every path alike."""
    results = [Result(f"{name}, concurrency {concurrency}", 0, 0.0) for name, _ in works]
    share = -(-operations // rounds)
    for turn, start in enumerate(range(0, operations, share)):
        order = list(enumerate(works))
        for index, (name, work) in order if turn % 2 == 0 else reversed(order):
            part = await measure(name, min(share, operations - start), concurrency, work, start)
            results[index].count += part.count
            results[index].seconds += part.seconds
            results[index].latencies += part.latencies
    return results


async def call(
    client: aiohttp.ClientSession, method: str, path: str, status: int, **kwargs: Any
) -> dict[str, Any]:
    """The JSON answer of one request, which must have `status`."""
    async with client.request(method, path, **kwargs) as response:
        body = await response.read()
        if response.status != status:
            raise RuntimeError(f"{method} {path}: {response.status} {body[:500]!r}")
        return json.loads(body)


async def run(
    records: int, operations: int, levels: list[int], bulk_size: int, rounds: int
) -> None:
    async with postgres_database() as url:
        if url is None:
            return
        print(f"seeding {records:,} data-records …", flush=True)
        await migrate_service_database(url, MIGRATIONS, "catalog_alembic_version")
        started = time.perf_counter()
        await seed(url, records)
        print(f"seeded in {time.perf_counter() - started:.1f} s", flush=True)
        with tempfile.TemporaryDirectory(prefix="extract-bench-") as scratch:
            key = SigningKey.generate()
            write_jwks(Path(scratch) / "jwks.json", [key])
            port = free_port()
            catalog = ServiceProcess(
                "services.catalog",
                Path(scratch),
                port=port,
                env={
                    "EXTRACT_CATALOG_PORT": str(port),
                    "EXTRACT_HOME": scratch,
                    "EXTRACT_CATALOG_DATABASE_URL": url,
                    "EXTRACT_CATALOG_IDENTITY_JWKS": str(Path(scratch) / "jwks.json"),
                    "EXTRACT_CATALOG_NATS_URL": "",
                    "EXTRACT_CATALOG_LOG_LEVEL": "warning",
                },
            )
            catalog.start()
            try:
                token = issue_identity_token(key, PRINCIPAL, (), ttl=3600)
                await compare(url, catalog.url, token, operations, levels, bulk_size, rounds)
            finally:
                catalog.stop()


async def compare(
    url: str,
    base_url: str,
    token: str,
    operations: int,
    levels: list[int],
    bulk_size: int,
    rounds: int,
) -> None:
    claims = sorted(Identity(PRINCIPAL).claims)
    dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
    settings = {"jit": "off"}
    async with (
        asyncpg.create_pool(
            dsn, min_size=max(levels), max_size=max(levels), server_settings=settings
        ) as pool,
        aiohttp.ClientSession(
            base_url,
            headers={"Authorization": f"Bearer {token}"},
            connector=aiohttp.TCPConnector(limit=max(levels)),
            timeout=aiohttp.ClientTimeout(total=60),
        ) as client,
    ):
        search = {"filter": FILTER, "orderby": ORDERBY, "last": 50}
        body = await call(client, "GET", "/api/data-record", 200, params=search)
        async with pool.acquire() as connection:
            raw_ids = [json.loads(row[0])["id"] for row in await connection.fetch(RAW_PAGE, claims)]
            raw_count = await connection.fetchval(RAW_COUNT, claims)
        if [r["id"] for r in body["resources"]] != raw_ids or body["count"] != raw_count:
            raise RuntimeError("the API and the raw SQL disagree on the search's answer")
        print(f"search matches {raw_count:,} of the visible records; first page agrees\n")

        async def api_search(_: int) -> int:
            await call(client, "GET", "/api/data-record", 200, params=search)
            return 1

        async def raw_search(_: int) -> int:
            async with pool.acquire() as connection, connection.transaction():
                await connection.fetchval(RAW_COUNT, claims)
                await connection.fetch(RAW_PAGE, claims)
            return 1

        async def api_count(_: int) -> int:
            await call(client, "GET", "/api/data-record", 200, params={"last": 0})
            return 1

        async def raw_count_all(_: int) -> int:
            await pool.fetchval(RAW_COUNT_ALL, claims)
            return 1

        rng = random.Random(11)

        def body_of(n: int) -> dict[str, Any]:
            document = record(n, rng)
            del document["acl"]
            return document

        def raw_row(n: int) -> tuple[Any, ...]:
            now = datetime.now(UTC)
            document = body_of(n) | {
                "id": f"data-record/{uuid.uuid4()}",
                "resource-type": "data-record",
                "created": normalize_timestamp(now),
                "updated": normalize_timestamp(now),
                "created-by": PRINCIPAL,
                "acl": {"owners": [PRINCIPAL]},
            }
            return (document["id"], json.dumps(document), now, json.dumps([PRINCIPAL]))

        def raw_row_with_event(n: int) -> tuple[Any, ...]:
            row = raw_row(n)
            resource_id, document = row[0], json.loads(row[1])
            event = CloudEvent(
                type="catalog.data-record.created",
                source="/catalog",
                subject=resource_id,
                data={"resource-id": resource_id, "resource": document},
            )
            return (*row, event.id, event.to_json())

        async def api_insert(n: int) -> int:
            await call(client, "POST", "/api/data-record", 201, json=body_of(n))
            return 1

        async def raw_insert(n: int) -> int:
            await pool.execute(RAW_INSERT, *raw_row(n))
            return 1

        async def raw_insert_with_event(n: int) -> int:
            await pool.execute(RAW_INSERT_WITH_EVENT, *raw_row_with_event(n))
            return 1

        async def api_bulk(n: int) -> int:
            bodies = [body_of(n * bulk_size + i) for i in range(bulk_size)]
            answer = await call(
                client, "POST", "/api/data-record", 201, json=bodies, headers={"bulk": "yes"}
            )
            return answer["count"]

        async def raw_bulk(n: int) -> int:
            rows = [raw_row(n * bulk_size + i) for i in range(bulk_size)]
            async with pool.acquire() as connection, connection.transaction():
                await connection.executemany(RAW_INSERT, rows)
            return bulk_size

        async def raw_bulk_with_events(n: int) -> int:
            rows = [raw_row_with_event(n * bulk_size + i) for i in range(bulk_size)]
            async with pool.acquire() as connection, connection.transaction():
                await connection.executemany(RAW_INSERT_WITH_EVENT, rows)
            return bulk_size

        async def api_floor(_: int) -> int:
            await call(client, "GET", "/api/cloud-entry-point", 200)
            return 1

        # (title, [(row name, work)], the baseline's index, requests per level)
        paths = [
            (
                "search: 3-predicate filter + orderby, page of 50 + count",
                [("raw SQL (asyncpg)", raw_search), ("catalog HTTP API", api_search)],
                0,
                operations,
            ),
            (
                "count over every visible record",
                [("raw SQL (asyncpg)", raw_count_all), ("catalog HTTP API", api_count)],
                0,
                operations,
            ),
            (
                "insert: one record per request",
                [
                    ("raw SQL: bare INSERT of the record", raw_insert),
                    ("raw SQL: record + outbox event (one transaction)", raw_insert_with_event),
                    ("catalog HTTP API", api_insert),
                    ("HTTP floor (GET cloud-entry-point)", api_floor),
                ],
                1,
                operations,
            ),
            (
                f"bulk insert: {bulk_size} records per request",
                [
                    ("raw SQL: bare INSERTs of the records", raw_bulk),
                    ("raw SQL: records + outbox events (one transaction)", raw_bulk_with_events),
                    ("catalog HTTP API", api_bulk),
                ],
                1,
                operations // 10,
            ),
        ]
        for title, works, baseline, requests in paths:
            for level in levels:
                count = max(requests, level)
                turns = min(rounds, max(1, count // level))
                rows = await side_by_side(works, count, level, turns)
                taken = f", in {turns} alternating turns" if turns > 1 else ""
                print(f"{title} — {count} requests, concurrency {level}{taken}")
                print_table(rows, baseline=baseline)
                print()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.catalog", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--records", type=int, default=100_000, help="seeded (100000)")
    parser.add_argument(
        "--operations", type=int, default=200, help="requests per path and level (200)"
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8], help="levels (1 8)")
    parser.add_argument("--bulk-size", type=int, default=100, help="records per bulk (100)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="alternating turns per path and level (4; 1: one after the other)",
    )
    args = parser.parse_args(argv)
    asyncio.run(run(args.records, args.operations, args.concurrency, args.bulk_size, args.rounds))


if __name__ == "__main__":
    main()
