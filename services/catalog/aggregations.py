"""Nuvla's aggregations (`algo:field`) over the resources a search selects and its caller views.

Every aggregation runs over exactly the rows `search` would count for the same collection,
identity and filter: the caller never aggregates what it may not view. Values are read as in
Elasticsearch: an attribute holding an array contributes each of its elements; an object, a
nested array or JSON null contributes nothing. The response keeps Nuvla's shape, one entry per
spec, keyed by the spec as written:

    {"min:bytes": {"value": 1.0},                      # also max, sum, avg
     "stats:bytes": {"count": 3, "min": …, "max": …, "avg": …, "sum": …},
     "value_count:bytes": {"value": 3},                 # values, array elements each count
     "cardinality:format": {"value": 2},                # distinct values
     "terms:format": {"doc_count_error_upper_bound": 0, "sum_other_doc_count": 0,
                      "buckets": [{"key": "tiff", "doc_count": 2}, …]},
     "missing:bytes": {"doc_count": 4},                 # resources where `bytes=null`
     "percentiles:bytes": {"values": {"1.0": …, "5.0": …, …, "99.0": …}}}

Numeric aggregations read JSON numbers only (`"3"` is not a number) and answer floats; `sum`
of nothing is 0.0, `min`/`max`/`avg`/percentiles of nothing are None. `terms` gives the ten
values held by most resources (`doc_count` counts resources, not repeated elements), ties
broken by key: numbers (as floats) first, then strings by code point, then booleans. Unlike
Elasticsearch's estimates, cardinality and percentiles are exact; percentiles interpolate
linearly between the closest ranks (PostgreSQL's `percentile_cont`), computed in Python over
the selected numbers so both backends answer alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from servicekit.errors import InvalidInput
from servicekit.security import Identity
from services.catalog.filters import comparison
from services.catalog.query import selection
from services.catalog.sqlparts import ATTRIBUTE_KEY, ELEMENT, JsonPath, elements
from services.catalog.tables import catalog_resources

__all__ = [
    "ALGORITHMS",
    "PERCENTS",
    "TERMS_SIZE",
    "Aggregation",
    "aggregate",
    "parse_specs",
    "percentile",
]

ALGORITHMS = (
    "avg",
    "cardinality",
    "max",
    "min",
    "missing",
    "percentiles",
    "stats",
    "sum",
    "terms",
    "value_count",
)
PERCENTS = (1.0, 5.0, 25.0, 50.0, 75.0, 95.0, 99.0)
"""Elasticsearch's default percents."""
TERMS_SIZE = 10
"""Buckets returned by `terms`, as Elasticsearch's default `size`."""

_SCALARS = ("number", "string", "true", "false")


@dataclass(frozen=True)
class Aggregation:
    """One `algo:field` spec; `name` is its key in the response."""

    algorithm: str
    attribute: str

    @property
    def name(self) -> str:
        return f"{self.algorithm}:{self.attribute}"


def parse_specs(specs: str | Sequence[str]) -> list[Aggregation]:
    """`"min:bytes,terms:dc:format"` (or a list of such strings) as aggregations, in order."""
    texts = [specs] if isinstance(specs, str) else list(specs)
    parsed: list[Aggregation] = []
    for text in texts:
        for spec in text.split(","):
            spec = spec.strip()
            if not spec:
                continue
            algorithm, colon, attribute = spec.partition(":")
            if algorithm not in ALGORITHMS:
                raise InvalidInput(
                    f"aggregation: unknown algorithm {algorithm!r} in {spec!r}; "
                    f"expected one of {', '.join(ALGORITHMS)}",
                    detail={"aggregation": spec},
                )
            if not colon or not all(ATTRIBUTE_KEY.fullmatch(key) for key in attribute.split("/")):
                raise InvalidInput(
                    f"aggregation: invalid attribute {attribute!r} in {spec!r}; "
                    "expected algorithm:attribute, e.g. terms:content-type",
                    detail={"aggregation": spec},
                )
            parsed.append(Aggregation(algorithm, attribute))
    return parsed


async def aggregate(
    session: AsyncSession,
    *,
    collection: str,
    identity: Identity,
    filter_text: str | Sequence[str] | None = None,
    specs: str | Sequence[str],
) -> dict[str, Any]:
    """Each spec's aggregation over the resources `search` would select (and count)."""
    where = await selection(session, collection, identity, filter_text)
    result: dict[str, Any] = {}
    for aggregation in parse_specs(specs):
        path = JsonPath(catalog_resources.c.document, tuple(aggregation.attribute.split("/")))
        compute = _ALGORITHMS[aggregation.algorithm]
        result[aggregation.name] = await compute(session, where, path)
    return result


# --- one function per algorithm ------------------------------------------------------------


def _values(where: ColumnElement[bool], path: JsonPath, *columns: Any) -> sa.Select[Any]:
    """SELECT columns FROM each resource joined to its values at `path` (as `ELEMENT`)."""
    element_rows = elements(path.document, path.json_path).table_valued().alias("element")
    joined = catalog_resources.join(element_rows, sa.true())
    return sa.select(*columns).select_from(joined).where(where, path.is_("object") == sa.false())


async def _numbers(session: AsyncSession, where: ColumnElement[bool], path: JsonPath) -> Any:
    number = ELEMENT.number
    counted = sa.func.count(number)
    query = _values(where, path, counted, sa.func.min(number), sa.func.max(number))
    query = query.add_columns(sa.func.sum(number), sa.func.avg(number))
    return (await session.execute(query)).one()


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


async def _min(session: AsyncSession, where: ColumnElement[bool], path: JsonPath) -> dict:
    return {"value": _float((await _numbers(session, where, path))[1])}


async def _max(session: AsyncSession, where: ColumnElement[bool], path: JsonPath) -> dict:
    return {"value": _float((await _numbers(session, where, path))[2])}


async def _sum(session: AsyncSession, where: ColumnElement[bool], path: JsonPath) -> dict:
    return {"value": float((await _numbers(session, where, path))[3] or 0)}


async def _avg(session: AsyncSession, where: ColumnElement[bool], path: JsonPath) -> dict:
    return {"value": _float((await _numbers(session, where, path))[4])}


async def _stats(session: AsyncSession, where: ColumnElement[bool], path: JsonPath) -> dict:
    count, low, high, total, mean = await _numbers(session, where, path)
    return {
        "count": count,
        "min": _float(low),
        "max": _float(high),
        "avg": _float(mean),
        "sum": float(total or 0),
    }


def _is_scalar() -> ColumnElement[bool]:
    return sa.or_(*(ELEMENT.is_(kind) for kind in _SCALARS))


async def _value_count(session: AsyncSession, where: ColumnElement[bool], path: JsonPath) -> dict:
    query = _values(where, path, sa.func.count()).where(_is_scalar())
    return {"value": (await session.execute(query)).scalar_one()}


async def _cardinality(session: AsyncSession, where: ColumnElement[bool], path: JsonPath) -> dict:
    boolean = sa.case((ELEMENT.is_("true"), "true"), (ELEMENT.is_("false"), "false"))
    query = _values(
        where,
        path,
        sa.func.count(ELEMENT.number.distinct()),
        sa.func.count(ELEMENT.string.distinct()),
        sa.func.count(boolean.distinct()),
    )
    return {"value": sum((await session.execute(query)).one())}


async def _terms(session: AsyncSession, where: ColumnElement[bool], path: JsonPath) -> dict:
    kind, number, string = ELEMENT.kind, ELEMENT.number, ELEMENT.string
    doc_count = sa.func.count(catalog_resources.c.id.distinct()).label("doc_count")
    groups = (
        _values(where, path, kind, number, string, doc_count)
        .where(_is_scalar())
        .group_by(kind, number, string)
    )
    top = groups.order_by(
        doc_count.desc(), number.asc().nulls_last(), string.asc().nulls_last(), kind.desc()
    ).limit(TERMS_SIZE)
    buckets = [{"key": _key(k, n, s), "doc_count": c} for k, n, s, c in await session.execute(top)]
    every = groups.subquery()
    total = (await session.execute(sa.select(sa.func.sum(every.c.doc_count)))).scalar_one()
    return {
        "doc_count_error_upper_bound": 0,
        "sum_other_doc_count": (total or 0) - sum(b["doc_count"] for b in buckets),
        "buckets": buckets,
    }


def _key(kind: str, number: Any, string: str | None) -> float | str | bool:
    if kind == "number":
        return float(number)
    if kind == "string":
        assert string is not None
        return string
    return kind == "true"


async def _missing(session: AsyncSession, where: ColumnElement[bool], path: JsonPath) -> dict:
    query = sa.select(sa.func.count()).select_from(catalog_resources)
    query = query.where(where, comparison(path, "=", None))
    return {"doc_count": (await session.execute(query)).scalar_one()}


async def _percentiles(session: AsyncSession, where: ColumnElement[bool], path: JsonPath) -> dict:
    number = ELEMENT.number
    query = _values(where, path, number).where(ELEMENT.is_("number")).order_by(number)
    values = [float(v) for v in (await session.execute(query)).scalars()]
    return {"values": {str(p): percentile(values, p) for p in PERCENTS}}


def percentile(ordered: Sequence[float], percent: float) -> float | None:
    """The `percent` percentile of sorted values, interpolated as `percentile_cont` does."""
    if not ordered:
        return None
    rank = (len(ordered) - 1) * percent / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


_ALGORITHMS = {
    "avg": _avg,
    "cardinality": _cardinality,
    "max": _max,
    "min": _min,
    "missing": _missing,
    "percentiles": _percentiles,
    "stats": _stats,
    "sum": _sum,
    "terms": _terms,
    "value_count": _value_count,
}
