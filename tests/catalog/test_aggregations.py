"""Tests for services/catalog/aggregations.py: the same answers on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

import services.catalog
from servicekit.db import create_engine, session_factory
from servicekit.errors import InvalidInput
from servicekit.migrate import migrate_service_database
from servicekit.security import ADMIN_CLAIM, Identity
from services.catalog.aggregations import Aggregation, aggregate, parse_specs, percentile
from services.catalog.rows import put_resource

MIGRATIONS = Path(services.catalog.__file__).with_name("migrations")
COLLECTION = "file"

BOB = Identity("user/bob")
ADMIN = Identity("user/root", frozenset({ADMIN_CLAIM}))
ANON = Identity.anonymous()

SHARED = {"owners": ["user/alice"], "view-meta": ["user/bob"]}
ALICE_ONLY = {"owners": ["user/alice"]}

FILES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "f1": (SHARED, {"bytes": 10, "content-type": "tiff", "tags": ["x", "y"]}),
    "f2": (SHARED, {"bytes": 20, "content-type": "csv", "tags": ["x"]}),
    "f3": (SHARED, {"bytes": 30.5, "content-type": "tiff", "tags": "x"}),
    "f4": (SHARED, {"bytes": [1, 2], "content-type": "json", "meta": {"bytes": 7}}),
    "f5": (SHARED, {"bytes": "40", "content-type": ["tiff", "csv"], "tags": {"x": 1}}),
    "f6": (SHARED, {"bytes": None, "flag": True}),
    "f7": (SHARED, {"flag": [True, False], "mixed": [2, "2", True]}),
    "p1": (ALICE_ONLY, {"bytes": 1000, "content-type": "secret", "tags": ["x", "z"]}),
}


@pytest.fixture
async def session(database_url: str) -> AsyncIterator[AsyncSession]:
    await migrate_service_database(database_url, MIGRATIONS, "catalog_alembic_version")
    engine = create_engine(database_url)
    try:
        async with session_factory(engine)() as session:
            for name, (acl, extra) in FILES.items():
                await put_resource(session, {"id": f"{COLLECTION}/{name}", "acl": acl, **extra})
            await put_resource(session, {"id": "other/o1", "acl": SHARED, "bytes": 5})
            await session.commit()
            yield session
    finally:
        await engine.dispose()


async def aggregated(
    session: AsyncSession, specs: str | list[str], identity: Identity = BOB, **kw: Any
) -> dict[str, Any]:
    return await aggregate(session, collection=COLLECTION, identity=identity, specs=specs, **kw)


def terms(*buckets: tuple[Any, int], other: int = 0) -> dict[str, Any]:
    return {
        "doc_count_error_upper_bound": 0,
        "sum_other_doc_count": other,
        "buckets": [{"key": key, "doc_count": count} for key, count in buckets],
    }


# (spec, Bob's answer): Bob views f1…f7, not Alice's p1; the other collection never counts.
AS_BOB: list[tuple[str, Any]] = [
    ("min:bytes", {"value": 1.0}),
    ("max:bytes", {"value": 30.5}),
    ("sum:bytes", {"value": 63.5}),
    ("avg:bytes", {"value": 12.7}),
    ("stats:bytes", {"count": 5, "min": 1.0, "max": 30.5, "avg": 12.7, "sum": 63.5}),
    ("value_count:bytes", {"value": 6}),
    ("value_count:content-type", {"value": 6}),
    ("cardinality:content-type", {"value": 3}),
    ("cardinality:tags", {"value": 2}),
    ("cardinality:mixed", {"value": 3}),
    ("terms:content-type", terms(("tiff", 3), ("csv", 2), ("json", 1))),
    ("terms:tags", terms(("x", 3), ("y", 1))),
    ("terms:flag", terms((True, 2), (False, 1))),
    ("terms:mixed", terms((2.0, 1), ("2", 1), (True, 1))),
    ("terms:meta/bytes", terms((7.0, 1))),
    ("missing:bytes", {"doc_count": 2}),
    ("missing:content-type", {"doc_count": 2}),
    ("missing:tags", {"doc_count": 3}),
    ("sum:meta/bytes", {"value": 7.0}),
    ("sum:nothing", {"value": 0.0}),
    ("min:content-type", {"value": None}),
    ("stats:nothing", {"count": 0, "min": None, "max": None, "avg": None, "sum": 0.0}),
    ("terms:nothing", terms()),
    ("cardinality:nothing", {"value": 0}),
]


async def test_aggregations_answer_alike_on_every_backend(session: AsyncSession) -> None:
    specs = [spec for spec, _ in AS_BOB]
    result = await aggregated(session, specs)
    assert result == dict(AS_BOB)
    assert list(result) == specs


async def test_aggregations_never_include_invisible_resources(session: AsyncSession) -> None:
    specs = "max:bytes,terms:content-type,value_count:bytes,missing:bytes"
    assert await aggregated(session, specs) == {
        "max:bytes": {"value": 30.5},
        "terms:content-type": terms(("tiff", 3), ("csv", 2), ("json", 1)),
        "value_count:bytes": {"value": 6},
        "missing:bytes": {"doc_count": 2},
    }
    assert await aggregated(session, specs, ADMIN) == {
        "max:bytes": {"value": 1000.0},
        "terms:content-type": terms(("tiff", 3), ("csv", 2), ("json", 1), ("secret", 1)),
        "value_count:bytes": {"value": 7},
        "missing:bytes": {"doc_count": 2},
    }


async def test_anonymous_aggregates_nothing_it_may_not_view(session: AsyncSession) -> None:
    result = await aggregated(session, "value_count:bytes,terms:tags,missing:bytes", ANON)
    assert result == {
        "value_count:bytes": {"value": 0},
        "terms:tags": terms(),
        "missing:bytes": {"doc_count": 0},
    }


async def test_aggregations_cover_only_the_filtered_resources(session: AsyncSession) -> None:
    result = await aggregated(
        session, ["sum:bytes", "value_count:bytes"], filter_text="content-type='tiff'"
    )
    assert result == {"sum:bytes": {"value": 40.5}, "value_count:bytes": {"value": 3}}
    result = await aggregated(session, "terms:tags", filter_text=["tags='x'", "bytes<25"])
    assert result == {"terms:tags": terms(("x", 2), ("y", 1))}


async def test_percentiles_are_exact_and_alike_on_every_backend(session: AsyncSession) -> None:
    result = await aggregated(session, "percentiles:bytes")
    assert result == {
        "percentiles:bytes": {
            "values": pytest.approx(
                {
                    "1.0": 1.04,
                    "5.0": 1.2,
                    "25.0": 2.0,
                    "50.0": 10.0,
                    "75.0": 20.0,
                    "95.0": 28.4,
                    "99.0": 30.08,
                }
            )
        }
    }


async def test_percentiles_of_nothing_are_none(session: AsyncSession) -> None:
    result = await aggregated(session, "percentiles:bytes", filter_text="bytes>5000")
    assert set(result["percentiles:bytes"]["values"].values()) == {None}


async def test_terms_give_the_ten_most_held_values_then_the_rest(session: AsyncSession) -> None:
    keys = [f"k{n:02d}" for n in range(12)]
    for n, key in enumerate([*keys, "k05"]):
        await put_resource(session, {"id": f"many/m{n}", "acl": SHARED, "key": key})
    result = await aggregate(session, collection="many", identity=BOB, specs="terms:key")
    expected = [("k05", 2), *((k, 1) for k in keys[:10] if k != "k05")]
    assert result == {"terms:key": terms(*expected, other=2)}


def test_specs_split_on_commas_and_keep_namespaced_attributes() -> None:
    assert parse_specs(["min:bytes, terms:dc:format", "missing:a/b"]) == [
        Aggregation("min", "bytes"),
        Aggregation("terms", "dc:format"),
        Aggregation("missing", "a/b"),
    ]
    assert parse_specs(" ,") == []


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("median:bytes", "unknown algorithm 'median'"),
        ("min", "invalid attribute ''"),
        ("min:", "invalid attribute ''"),
        ("min:1bytes", "invalid attribute '1bytes'"),
        ("min:a//b", "invalid attribute 'a//b'"),
        ("min:bytes,max:b c", "invalid attribute 'b c'"),
    ],
)
def test_a_bad_spec_is_invalid_input_naming_it(spec: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_specs(spec)


@pytest.mark.parametrize(
    ("values", "percent", "expected"),
    [([], 50.0, None), ([3.0], 99.0, 3.0), ([1.0, 2.0], 50.0, 1.5), ([1.0, 2.0, 4.0], 75.0, 3.0)],
)
def test_percentile_interpolates_between_closest_ranks(
    values: list[float], percent: float, expected: float | None
) -> None:
    assert percentile(values, percent) == expected


async def test_aggregations_take_geo_filters(session: AsyncSession) -> None:
    await put_resource(session, {"id": "file/near", "acl": SHARED, "location": [6.1, 46.2]})
    await put_resource(session, {"id": "file/far", "acl": SHARED, "location": [9.0, 40.0]})
    filter_text = "location within 'POLYGON ((6 46, 6.3 46, 6.3 46.4, 6 46.4, 6 46))'"
    result = await aggregated(session, "value_count:location", filter_text=filter_text)
    assert result == {"value_count:location": {"value": 2}}  # both coordinates of one point
    assert await aggregated(session, "missing:bytes", ANON, filter_text=filter_text) == {
        "missing:bytes": {"doc_count": 0}
    }
