"""CIMI searches compiled to SQL: filters, ACL visibility, ordering, windows and cursors.

One code path serves SQLite and PostgreSQL. Where the two differ (the type of a JSON value,
string collation, testing the viewers array) a small construct in `sqlparts.py` renders each
dialect; geo terms are resolved to ids by `geo.py`.

Semantics, chosen to be identical on both backends and close to Nuvla's Elasticsearch:

- A comparison is typed by its value: numbers match JSON numbers, strings JSON strings, booleans
  JSON booleans, dates JSON strings holding `normalize_timestamp` text. A value of another
  JSON type never matches (`a="3"` does not match `{"a": 3}`).
- `a!=v` is the negation of `a=v`, so it also matches documents without `a` (Elasticsearch's
  `must_not`); `a=null` matches a missing key or JSON null, `a!=null` a present, non-null value.
- `a^="p"` is a case-sensitive prefix match.
- `a=="w1 w2"` is full text (fulltext.py): every word is a token of the attribute, or of one
  element of an array of strings, case-insensitively, in any order; no prefix, no phrase. A
  query without a letter or digit matches nothing.
- Strings compare and sort by code point (PostgreSQL `COLLATE "C"`, SQLite BINARY).
- `orderby=a:asc` sorts JSON numbers numerically first, then JSON strings, then everything else
  (booleans, null, missing) in either direction; `id` always breaks ties.
- Dates have millisecond precision: a filter date is truncated to the millisecond.
- Arrays, as in Elasticsearch: an attribute holding an array matches if any element does, for
  every operator (`tags="x"`, `tags=["x" "y"]`, `tags^="x"`, `sizes>2`); `!=` is the negation
  (no element matches); `a=null` also matches `[]` and `[null]`. Each term of a filter may match
  a different element (`sizes>1 and sizes<3` matches `[1, 5]`). Arrays of objects are not
  flattened: `loc/city="x"` does not look inside `{"loc": [{"city": "x"}]}`. On PostgreSQL,
  `=` is written as `document @> …` so the jsonb_path_ops GIN index serves it.
- Hot attributes (`tables.HOT_ATTRIBUTES`: timestamp, created, updated, name, bytes, …) are
  read from generated, btree-indexed columns holding their number or string value, with the
  same meaning (`=` included, instead of `@>`); sorting on them follows the indexes. Their
  array elements are read from the document, only where `hot_arrays` says there are some;
  when no resource of the collection has any, the search compiles without that branch.
- Geo (`intersects`, `disjoint`, `within`, `contains`): the document's attribute, a GeoJSON
  geometry or a `[lon, lat]` point, related to the filter's WKT geometry, exactly (shapely).
  A resource whose attribute is no valid geometry matches no geo operator, `disjoint`
  included. SQL cannot evaluate it, so each geo term is first resolved to the ids of the
  visible resources it matches (geo.py: for `geometry` and `location`, only the resources
  whose stored bounding box can relate are read), then compiled as `id IN (those ids)`:
  counts, windows and cursors stay exact.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from servicekit.cimi_filter import And, Comparison, Filter, GeoComparison, Or, parse_filter
from servicekit.db import utc_now
from servicekit.errors import InvalidInput
from servicekit.security import Identity
from services.catalog.acl import principals_with
from services.catalog.fulltext import fulltext_match, index_texts, unindex_texts
from services.catalog.geo import as_geometry, geo_comparisons, geo_matches
from services.catalog.sqlparts import (
    ATTRIBUTE_KEY,
    ELEMENT,
    ArrayElement,
    JsonPath,
    contains_any,
    id_in,
    viewers_overlap,
)
from services.catalog.tables import GEO_ATTRIBUTES, catalog_resources, hot_columns

__all__ = [
    "MAX_WINDOW",
    "SearchResult",
    "comparison",
    "compile_filter",
    "delete_resource",
    "insert_resources",
    "normalize_timestamp",
    "order_by",
    "put_resource",
    "put_resources",
    "search",
    "selection",
    "upsert_parameters",
    "upsert_statement",
    "visible_to",
]

MAX_WINDOW = 10_000
"""Nuvla's (Elasticsearch's) result window: `first`/`last` reach no further; cursors do."""

# --- filters ---------------------------------------------------------------------------------


def normalize_timestamp(value: datetime | str) -> str:
    """UTC ISO-8601 text with milliseconds, `2026-01-02T03:04:05.000Z`: sorts as time does."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidInput(
                f"invalid timestamp {value!r}: expected ISO-8601, e.g. 2026-01-02T03:04:05Z"
            ) from None
    if value.tzinfo is None:
        raise InvalidInput(f"timestamp {value.isoformat()!r} has no time zone: add Z or +hh:mm")
    v = value.astimezone(UTC)
    return (
        f"{v.year:04d}-{v.month:02d}-{v.day:02d}T{v.hour:02d}:{v.minute:02d}:{v.second:02d}"
        f".{v.microsecond // 1000:03d}Z"
    )


_SQL_OPS = {
    "=": lambda a, b: a == b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _typed(path: JsonPath | ArrayElement, value: Any) -> tuple[str, ColumnElement[Any], Any]:
    """The JSON kind a value matches, the expression to compare, the bound value."""
    if isinstance(value, datetime):
        return "string", path.string, normalize_timestamp(value)
    if isinstance(value, int | float):
        return "number", path.number, float(value)
    return "string", path.string, value


def comparison(
    path: JsonPath, op: str, value: Any, *, hot_arrays: bool = True
) -> ColumnElement[bool]:
    """Elasticsearch's semantics: a value matches the attribute or any element of it.
    `hot_arrays=False` promises that no hot attribute of the searched rows holds an array."""
    if op == "!=":
        return sa.not_(comparison(path, "=", value, hot_arrays=hot_arrays))
    if op == "==":
        return fulltext_match(path, value)
    if value is None:  # like Elasticsearch's `exists`: [] and [null, null] hold no value
        return sa.or_(
            path.is_("missing"),
            path.is_("null"),
            sa.and_(path.is_("array"), sa.not_(path.any_element(sa.not_(ELEMENT.is_("null"))))),
        )
    elements = path.any_element(_scalar_comparison(ELEMENT, op, value))
    hot = _hot_comparison(path, op, value)
    if hot is not None and not hot_arrays:
        return hot
    if hot is not None:  # both branches indexed: `hot_arrays` has a partial index
        return sa.or_(hot, sa.and_(catalog_resources.c.hot_arrays, elements))
    either = sa.or_(_scalar_comparison(path, op, value), elements)
    if op == "=" and not (isinstance(value, tuple) and not value):
        shapes = [sa.bindparam(None, shape, JSONB) for shape in _containments(path.keys, value)]
        return contains_any(either, path.document, *shapes)
    return either


def _containments(keys: tuple[str | int, ...], value: Any) -> list[Any]:
    """Documents that PostgreSQL's `@>` finds through the GIN index, equivalent to `=`."""
    values = value if isinstance(value, tuple) else (value,)
    documents = []
    for item in values:
        if isinstance(item, datetime):
            item = normalize_timestamp(item)
        for shape in (item, [item]):
            for key in reversed(keys):
                shape = {key: shape}
            documents.append(shape)
    return documents


def _scalar_comparison(path: JsonPath | ArrayElement, op: str, value: Any) -> ColumnElement[bool]:
    if isinstance(value, bool):
        return path.is_("true" if value else "false")
    if isinstance(value, tuple):
        return _in(path, value)
    if op == "^=":
        text = path.string
        return sa.and_(
            path.is_("string"),
            text.like(_escape_like(value) + "%", escape="\\"),
            # LIKE ignores ASCII case on SQLite; this keeps the match case-sensitive.
            sa.func.substr(text, 1, len(value)) == value,
        )
    kind, expression, bound = _typed(path, value)
    # Guarded by the kind so the result is never NULL, and NOT of it is exact.
    return sa.and_(path.is_(kind), _SQL_OPS[op](expression, bound))


def _hot(path: JsonPath) -> tuple[sa.Column[float], sa.Column[str]] | None:
    if len(path.keys) != 1 or path.document is not catalog_resources.c.document:
        return None
    return hot_columns(str(path.keys[0]))


def _hot_comparison(path: JsonPath, op: str, value: Any) -> ColumnElement[bool] | None:
    """A comparison over a hot attribute's generated columns, None if it has none."""
    hot = _hot(path)
    if hot is None or op not in _SQL_OPS or isinstance(value, bool | tuple):
        return None
    number, string = hot
    kind, _, bound = _typed(path, value)
    if kind == "number":
        return sa.and_(number.is_not(None), _SQL_OPS[op](number, bound))
    # `number IS NULL` holds for every string: it lets the (collection, n, s) index range on s.
    return sa.and_(number.is_(None), string.is_not(None), _SQL_OPS[op](string, bound))


def _in(path: JsonPath | ArrayElement, values: tuple[Any, ...]) -> ColumnElement[bool]:
    groups: dict[str, tuple[ColumnElement[Any], list[Any]]] = {}
    for value in values:
        kind, expression, bound = _typed(path, value)
        groups.setdefault(kind, (expression, []))[1].append(bound)
    return sa.or_(
        sa.false(),
        *(sa.and_(path.is_(k), e.in_(bounds)) for k, (e, bounds) in sorted(groups.items())),
    )


def compile_filter(
    tree: Filter,
    columns: Mapping[str, ColumnElement[Any]] | None = None,
    *,
    geo_matches: Mapping[GeoComparison, Collection[str]] | None = None,
    hot_arrays: bool = True,
) -> ColumnElement[bool]:
    """A filter tree as a SQL condition over the `document` column (or `columns["document"]`).
    A geo comparison compiles only with the ids of the resources it matches (`geo_matches`,
    from `geo.geo_matches`): SQL alone cannot evaluate it."""
    document = (columns or {}).get("document", catalog_resources.c.document)
    if isinstance(tree, And | Or):
        terms = (
            compile_filter(term, columns, geo_matches=geo_matches, hot_arrays=hot_arrays)
            for term in tree.terms
        )
        return sa.and_(*terms) if isinstance(tree, And) else sa.or_(*terms)
    if isinstance(tree, GeoComparison):
        if geo_matches is None or tree not in geo_matches:
            raise InvalidInput("geo filters need a search: compile_filter cannot evaluate them")
        ids = json.dumps(sorted(geo_matches[tree]))
        return id_in(catalog_resources.c.id, sa.literal(ids, sa.Text()))
    assert isinstance(tree, Comparison)
    path = JsonPath(document, tuple(tree.attribute.split("/")))
    return comparison(path, tree.op, tree.value, hot_arrays=hot_arrays)


def visible_to(identity: Identity) -> ColumnElement[bool]:
    """Resources whose `viewers` share a claim with `identity`; admins see everything."""
    if identity.is_admin:
        return sa.true()
    claims = [sa.literal(claim, sa.Text()) for claim in sorted(identity.claims)]
    return viewers_overlap(catalog_resources.c.viewers, *claims)


# --- ordering and cursors --------------------------------------------------------------------


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
        number, string = _hot(path) or (path.number, path.string)
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


# --- search and writes -----------------------------------------------------------------------


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


_SIDES = ("west", "south", "east", "north")
_REPLACED = (
    "collection",
    "document",
    "created",
    "updated",
    "viewers",
    *(f"{attribute}_{side}" for attribute in GEO_ATTRIBUTES for side in _SIDES),
)
"""The columns a write sets besides `id` (the others are generated by the database)."""


def _row(document: dict[str, Any], now: str) -> dict[str, Any]:
    """The table row of a resource (its document with `created`/`updated` normalised)."""
    resource_id = document["id"]
    collection, slash, _ = resource_id.partition("/")
    if not slash or not collection:
        raise InvalidInput(f"id: expected collection/identifier, got {resource_id!r}")
    document = dict(document)
    for key in ("created", "updated"):
        document[key] = normalize_timestamp(document.get(key) or now)
    row = {
        "id": resource_id,
        "collection": collection,
        "document": document,
        "created": datetime.fromisoformat(document["created"]),
        "updated": datetime.fromisoformat(document["updated"]),
        "viewers": sorted(principals_with(document.get("acl", {}), "view-meta")),
    }
    for attribute in GEO_ATTRIBUTES:
        geometry = as_geometry(document.get(attribute))
        bounds = geometry.bounds if geometry is not None else (None,) * 4
        for side, bound in zip(_SIDES, bounds, strict=True):
            row[f"{attribute}_{side}"] = bound
    return row


@functools.cache
def _upsert(dialect: str) -> Any:
    """`INSERT … ON CONFLICT (id) DO UPDATE` every written column, built once per dialect and
    executed with one parameter set per row (asyncpg pipelines them): SQLAlchemy's cache then
    serves its compiled form, where building it from each row's values cost more than the
    statement itself."""
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(catalog_resources)
    replace = {name: insert.excluded[name] for name in _REPLACED}
    return insert.on_conflict_do_update(index_elements=["id"], set_=replace)


async def put_resource(session: AsyncSession, document: dict[str, Any]) -> None:
    """Insert or replace a resource by its id (`collection/uuid`); `created`/`updated` are
    normalised in the document (set to now if absent), `viewers` computed from its ACL."""
    await put_resources(session, [document])


def _rows(documents: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    now = normalize_timestamp(utc_now())
    rows = [_row(document, now) for document in documents]
    if len({row["id"] for row in rows}) != len(rows):
        raise ValueError("put_resources: an id appears twice; write its states one by one")
    return rows


async def put_resources(session: AsyncSession, documents: Sequence[dict[str, Any]]) -> None:
    """put_resource of every document, in one statement; their ids must be distinct."""
    rows = _rows(documents)
    ids = [row["id"] for row in rows]
    if not rows:
        return
    await session.execute(_upsert(session.get_bind().dialect.name), rows)
    await unindex_texts(session, ids)
    await index_texts(session, [row["document"] for row in rows])


def upsert_statement(where: ColumnElement[bool] | None = None) -> Any:
    """PostgreSQL: put_resource's upsert of one row, bound by name (`upsert_parameters`), to run
    inside another statement (a data-modifying CTE), writing only if `where` holds. SQLite has
    no such CTEs, and put_resource also indexes the texts there."""
    written = ("id", *_REPLACED)
    row = sa.select(*(sa.bindparam(name, type_=catalog_resources.c[name].type) for name in written))
    insert = postgresql.insert(catalog_resources).from_select(
        written, row if where is None else row.where(where)
    )
    replace = {name: insert.excluded[name] for name in _REPLACED}
    return insert.on_conflict_do_update(index_elements=["id"], set_=replace)


def upsert_parameters(document: dict[str, Any]) -> dict[str, Any]:
    """The parameters of `upsert_statement` that write `document`."""
    (row,) = _rows([document])
    return row


async def insert_resources(session: AsyncSession, documents: Sequence[dict[str, Any]]) -> None:
    """Insert new resources in one statement (an existing id fails it), as put_resource would."""
    now = normalize_timestamp(utc_now())
    rows = [_row(document, now) for document in documents]
    if rows:
        await session.execute(sa.insert(catalog_resources), rows)
        await index_texts(session, [row["document"] for row in rows])


async def delete_resource(session: AsyncSession, resource_id: str) -> bool:
    """Delete a resource; False if there was none with that id."""
    table = catalog_resources
    result = await session.execute(sa.delete(table).where(table.c.id == resource_id))
    await unindex_texts(session, [resource_id])
    return bool(result.rowcount)  # type: ignore[attr-defined]
