"""CIMI searches: the resources a filter selects for a caller, their order, windows and
cursors, with an exact count. Filters compile to SQL in `filters.py`, which states the
matching semantics; sorting, identical on SQLite and PostgreSQL:

- Strings compare and sort by code point (PostgreSQL `COLLATE "C"`, SQLite BINARY).
- `orderby=a:asc` sorts JSON numbers numerically first, then JSON strings, then everything else
  (booleans, null, missing) in either direction; `id` always breaks ties.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from servicekit.cimi_filter import parse_filter
from servicekit.errors import InvalidInput
from servicekit.security import Identity
from services.catalog.filters import compile_filter, hot_columns_of, visible_to
from services.catalog.geo import geo_comparisons, geo_matches
from services.catalog.sqlparts import ATTRIBUTE_KEY, JsonPath
from services.catalog.tables import catalog_resources

__all__ = [
    "MAX_WINDOW",
    "SearchResult",
    "order_by",
    "search",
    "selection",
]

MAX_WINDOW = 10_000
"""Nuvla's (Elasticsearch's) result window: `first`/`last` reach no further; cursors do."""


@dataclass(frozen=True)
class _SortKey:
    expression: ColumnElement[Any]
    descending: bool
    nullable: bool = True

    @property
    def clause(self) -> ColumnElement[Any]:
        ordered = self.expression.desc() if self.descending else self.expression.asc()
        return ordered.nulls_last() if self.nullable else ordered

    def after(self, value: Any) -> ColumnElement[bool]:
        """Rows sorting strictly after a row whose key is `value` (nulls sort last)."""
        if value is None:
            return sa.false()
        beyond = self.expression < value if self.descending else self.expression > value
        return sa.or_(beyond, self.expression.is_(None)) if self.nullable else beyond


def _sort_keys(spec: str | None) -> list[_SortKey]:
    keys: list[_SortKey] = []
    for part in (spec or "").split(","):
        part = part.strip()
        if not part:
            continue
        attribute, _, direction = part.rpartition(":")
        if direction not in ("asc", "desc"):
            attribute, direction = part, "asc"
        if not all(ATTRIBUTE_KEY.fullmatch(key) for key in attribute.split("/")):
            raise InvalidInput(
                f"orderby: invalid sort {part!r}; "
                "expected attribute[:asc|:desc], e.g. created:desc",
                detail={"orderby": spec},
            )
        path = JsonPath(catalog_resources.c.document, tuple(attribute.split("/")))
        descending = direction == "desc"
        number, string = hot_columns_of(path) or (path.number, path.string)
        keys += [_SortKey(number, descending), _SortKey(string, descending)]
    keys.append(_SortKey(catalog_resources.c.id, False, nullable=False))
    return keys


def order_by(spec: str | None) -> list[ColumnElement[Any]]:
    """Nuvla's `orderby=attr[:asc|desc],…` as ORDER BY clauses, `id` last for stable pages."""
    return [key.clause for key in _sort_keys(spec)]


def _encode_cursor(spec: str | None, values: Sequence[Any]) -> str:
    raw = json.dumps({"o": spec or "", "k": list(values)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str, spec: str | None, count: int) -> list[Any]:
    bad = InvalidInput(
        "after: invalid cursor; pass the cursor of a previous page of the same search",
        detail={"after": cursor},
    )
    try:
        decoded = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise bad from None
    if not isinstance(decoded, dict) or decoded.get("o") != (spec or ""):
        raise bad
    values = decoded.get("k")
    if not isinstance(values, list) or len(values) != count or not isinstance(values[-1], str):
        raise bad
    for n, value in enumerate(values[:-1]):
        wanted = (int, float) if n % 2 == 0 else (str,)
        if value is not None and (isinstance(value, bool) or not isinstance(value, wanted)):
            raise bad
    return values


def _after(keys: list[_SortKey], values: list[Any]) -> ColumnElement[bool]:
    """Keyset condition: sorts after the row whose keys are `values`."""
    branches = []
    for n, key in enumerate(keys):
        ties = [
            k.expression.is_not_distinct_from(v) for k, v in zip(keys[:n], values, strict=False)
        ]
        branches.append(sa.and_(*ties, key.after(values[n])))
    return sa.or_(*branches)


@dataclass(frozen=True)
class SearchResult:
    count: int
    resources: list[dict[str, Any]]
    next: str | None = field(default=None)
    """The cursor (`after=`) of the next page, None when this page was the last."""


async def selection(
    session: AsyncSession,
    collection: str,
    identity: Identity,
    filter_text: str | Sequence[str] | None,
    *,
    plan_settings: bool = False,
) -> ColumnElement[bool]:
    """The resources a search selects: in the collection, visible, matching every filter.
    `plan_settings`: on PostgreSQL, the transaction's statements from now on are planned as
    searches should be (`_PLAN_SETTINGS`), set by the same statement as the probe below."""
    texts = [filter_text] if isinstance(filter_text, str) else list(filter_text or ())
    trees = [parse_filter(text) for text in texts if text.strip()]
    arrays = await _probe(session, collection, filtered=bool(trees), plan_settings=plan_settings)
    scope = sa.and_(catalog_resources.c.collection == collection, visible_to(identity))
    matches = {
        geo: await geo_matches(session, scope, geo)
        for tree in trees
        for geo in geo_comparisons(tree)
    }
    conditions = [compile_filter(tree, geo_matches=matches, hot_arrays=arrays) for tree in trees]
    return sa.and_(scope, *conditions)


_PLAN_SETTINGS = (
    sa.func.set_config("jit", "off", True),
    sa.func.set_config("plan_cache_mode", "force_custom_plan", True),
)
"""PostgreSQL, for the searching transaction. No JIT: the JSON guards inflate cost estimates
past jit_above_cost, and compiling the plan would take longer (~80 ms) than running it.
Custom plans only: the statements are prepared (asyncpg), and after five runs PostgreSQL may
plan one for any value of its parameters, which misjudges a filter's bound values
(`collection = $1`, `hot_state_s = $2`): on 100k records, the bench's search went from 44 ms
p95 to 27 ms planning each time."""


async def _probe(
    session: AsyncSession, collection: str, *, filtered: bool, plan_settings: bool
) -> bool:
    """Whether a hot attribute holds an array in some resource of the collection (asked only
    of a filtered search), in one statement with the plan settings if they are wanted.

    Hot attributes almost never hold arrays: when none in the collection does (one probe of
    a partial index), their comparisons are the plain indexed columns, which plan better."""
    columns: list[ColumnElement[Any]] = []
    if filtered:
        columns.append(
            sa.exists().where(
                catalog_resources.c.collection == collection, catalog_resources.c.hot_arrays
            )
        )
    if plan_settings and session.get_bind().dialect.name == "postgresql":
        columns += _PLAN_SETTINGS
    if not columns:
        return False
    row = (await session.execute(sa.select(*columns))).one()
    return filtered and bool(row[0])


async def search(
    session: AsyncSession,
    *,
    collection: str,
    identity: Identity,
    filter_text: str | Sequence[str] | None = None,
    orderby: str | None = None,
    first: int = 1,
    last: int | None = None,
    after: str | None = None,
) -> SearchResult:
    """Nuvla's query: `first`/`last` are 1-based and inclusive (`last=0`: count only); with
    `after`, the page starts past that cursor and holds up to `last - first + 1` resources,
    with no limit on how deep it goes. Repeated filters are ANDed. `count` is exact."""
    if first < 1:
        raise InvalidInput(f"first: must be 1 or more, got {first}", detail={"first": first})
    if last is not None and last < 0:
        raise InvalidInput(f"last: must be 0 or more, got {last}", detail={"last": last})
    where = await selection(session, collection, identity, filter_text, plan_settings=True)
    keys = _sort_keys(orderby)
    if last is None:
        last = first + MAX_WINDOW - 1
    size = min(last - first + 1, MAX_WINDOW)
    counting = sa.select(sa.func.count()).select_from(catalog_resources).where(where)
    # The count rides along with the page, one statement: an uncorrelated subquery, run once.
    total = counting.correlate(None).scalar_subquery()
    page = sa.select(total, catalog_resources.c.document, *(k.expression for k in keys))
    page = page.where(where)
    if after is not None:
        page = page.where(_after(keys, _decode_cursor(after, orderby, len(keys))))
    elif first > MAX_WINDOW:
        raise InvalidInput(
            f"first: {first} is beyond the {MAX_WINDOW:,} result window; page with the "
            "cursor (after=) instead",
            detail={"first": first},
        )
    else:
        size = min(size, MAX_WINDOW - first + 1)
        page = page.offset(first - 1)
    if last == 0 or size <= 0:
        return SearchResult((await session.execute(counting)).scalar_one(), [])
    rows = (await session.execute(page.order_by(*(key.clause for key in keys)).limit(size))).all()
    if rows:
        count = rows[0][0]
    elif first == 1 and after is None:
        count = 0  # not even the first match
    else:  # a page past the end: no row to carry the count
        count = (await session.execute(counting)).scalar_one()
    following = _encode_cursor(orderby, rows[-1][2:]) if len(rows) == size else None
    return SearchResult(count, [row[1] for row in rows], following)
