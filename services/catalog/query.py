"""CIMI searches compiled to SQL: filters, ACL visibility, ordering, windows and cursors.

One code path serves SQLite and PostgreSQL. Where the two differ (the type of a JSON value,
string collation, testing the viewers array) a small construct below renders each dialect.

Semantics, chosen to be identical on both backends and close to Nuvla's Elasticsearch:

- A comparison is typed by its value: numbers match JSON numbers, strings JSON strings, booleans
  JSON booleans, dates JSON strings holding `normalize_timestamp` text. A value of another
  JSON type never matches (`a="3"` does not match `{"a": 3}`).
- `a!=v` is the negation of `a=v`, so it also matches documents without `a` (Elasticsearch's
  `must_not`); `a=null` matches a missing key or JSON null, `a!=null` a present, non-null value.
- `a^="p"` is a case-sensitive prefix match; `a=="w1 w2"` (full text) is, for now, a
  case-insensitive containment of every word: a stopgap until tsvector / FTS5. Case folding of
  non-ASCII letters is PostgreSQL's only (SQLite's lower() folds ASCII).
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
- Geo (`intersects`, `disjoint`, `within`, `contains`): the document's attribute, a GeoJSON
  geometry or a `[lon, lat]` point, related to the filter's WKT geometry, exactly (shapely).
  A resource whose attribute is no valid geometry matches no geo operator, `disjoint`
  included. SQL cannot evaluate it, so each geo term is first resolved to the ids of the
  visible resources it matches (points outside the filter's bounds are skipped in SQL; GeoJSON
  objects are all read), then compiled as `id IN (those ids)`: counts, windows and cursors stay
  exact, at the price of reading every candidate of the collection once per geo term.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import shapely
import shapely.geometry
import sqlalchemy as sa
from shapely.errors import ShapelyError
from shapely.geometry.base import BaseGeometry
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement

from servicekit.db import utc_now
from servicekit.errors import InvalidInput
from servicekit.security import Identity
from services.catalog.acl import principals_with
from services.catalog.filters import And, Comparison, Filter, GeoComparison, Or, parse_filter
from services.catalog.tables import catalog_resources

__all__ = [
    "MAX_WINDOW",
    "SearchResult",
    "compile_filter",
    "delete_resource",
    "normalize_timestamp",
    "order_by",
    "put_resource",
    "search",
    "visible_to",
]

MAX_WINDOW = 10_000
"""Nuvla's (Elasticsearch's) result window: `first`/`last` reach no further; cursors do."""

_ATTRIBUTE = re.compile(r"[A-Za-z](?:[\w-]*\w)?(?::[A-Za-z](?:[\w-]*\w)?)?", re.ASCII)


# --- dialect-specific constructs -------------------------------------------------------------


class _json_kind(sa.sql.functions.FunctionElement[str]):
    """The JSON type of `document` at a path, the same words on both backends:
    'number', 'string', 'true', 'false', 'null', 'array', 'object', or 'missing'."""

    type = sa.Text()
    inherit_cache = True
    name = "json_kind"


@compiles(_json_kind, "sqlite")
def _json_kind_sqlite(element: _json_kind, compiler: SQLCompiler, **kw: Any) -> str:
    document, path = (compiler.process(arg, **kw) for arg in element.clauses)
    kind = f"json_type({document}, {path})"
    return (
        f"(CASE {kind} WHEN 'integer' THEN 'number' WHEN 'real' THEN 'number' "
        f"WHEN 'text' THEN 'string' ELSE coalesce({kind}, 'missing') END)"
    )


@compiles(_json_kind, "postgresql")
def _json_kind_postgresql(element: _json_kind, compiler: SQLCompiler, **kw: Any) -> str:
    document, path = (compiler.process(arg, **kw) for arg in element.clauses)
    value = f"({document} #> {path})"
    return (
        f"(CASE jsonb_typeof({value}) WHEN 'boolean' THEN {value} #>> '{{}}' "
        f"ELSE coalesce(jsonb_typeof({value}), 'missing') END)"
    )


class _binary_text(sa.sql.functions.FunctionElement[str]):
    """A text expression compared by code point on both backends."""

    type = sa.Text()
    inherit_cache = True
    name = "binary_text"


@compiles(_binary_text, "sqlite")
def _binary_text_sqlite(element: _binary_text, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)  # SQLite's default collation is BINARY


@compiles(_binary_text, "postgresql")
def _binary_text_postgresql(element: _binary_text, compiler: SQLCompiler, **kw: Any) -> str:
    return f'({compiler.process(element.clauses, **kw)} COLLATE "C")'


class _viewers_overlap(sa.sql.functions.FunctionElement[bool]):
    """True if the JSON array `viewers` (first argument) holds any of the other arguments."""

    type = sa.Boolean()
    inherit_cache = True
    name = "viewers_overlap"


@compiles(_viewers_overlap, "sqlite")
def _viewers_overlap_sqlite(element: _viewers_overlap, compiler: SQLCompiler, **kw: Any) -> str:
    viewers, *claims = (compiler.process(arg, **kw) for arg in element.clauses)
    return (
        f"EXISTS (SELECT 1 FROM json_each({viewers}) AS viewer "
        f"WHERE viewer.value IN ({', '.join(claims)}))"
    )


@compiles(_viewers_overlap, "postgresql")
def _viewers_overlap_postgresql(element: _viewers_overlap, compiler: SQLCompiler, **kw: Any) -> str:
    viewers, *claims = (compiler.process(arg, **kw) for arg in element.clauses)
    return f"({viewers} ?| CAST(ARRAY[{', '.join(claims)}] AS TEXT[]))"


class _any_element(sa.sql.functions.FunctionElement[bool]):
    """True if some element of the JSON array at a path (document, path) satisfies the
    predicate (third argument), written over `_element_kind` / `_number` / `_string`."""

    type = sa.Boolean()
    inherit_cache = True
    name = "any_element"


@compiles(_any_element, "sqlite")
def _any_element_sqlite(element: _any_element, compiler: SQLCompiler, **kw: Any) -> str:
    document, path, predicate = (compiler.process(arg, **kw) for arg in element.clauses)
    return f"(EXISTS (SELECT 1 FROM json_each({document}, {path}) AS element WHERE {predicate}))"


@compiles(_any_element, "postgresql")
def _any_element_postgresql(element: _any_element, compiler: SQLCompiler, **kw: Any) -> str:
    document, path, predicate = (compiler.process(arg, **kw) for arg in element.clauses)
    value = f"({document} #> {path})"
    array = f"(CASE jsonb_typeof({value}) WHEN 'array' THEN {value} ELSE '[]'::jsonb END)"
    return (
        f"EXISTS (SELECT 1 FROM jsonb_array_elements({array}) AS element(value) WHERE {predicate})"
    )


class _elements(sa.sql.functions.FunctionElement[Any]):
    """A table function (use `.table_valued().alias("element")`): one row per value at a
    path of a document (document, path): each element of an array, else the value itself."""

    inherit_cache = True
    name = "elements"


@compiles(_elements, "sqlite")
def _elements_sqlite(element: _elements, compiler: SQLCompiler, **kw: Any) -> str:
    document, path = (compiler.process(arg, **kw) for arg in element.clauses)
    return f"json_each({document}, {path})"  # objects yield members: callers exclude them


@compiles(_elements, "postgresql")
def _elements_postgresql(element: _elements, compiler: SQLCompiler, **kw: Any) -> str:
    document, path = (compiler.process(arg, **kw) for arg in element.clauses)
    value = f"({document} #> {path})"
    return (
        f"jsonb_array_elements(CASE WHEN {value} IS NULL THEN '[]'::jsonb "
        f"WHEN jsonb_typeof({value}) = 'array' THEN {value} ELSE jsonb_build_array({value}) END)"
    )


class _id_in(sa.sql.functions.FunctionElement[bool]):
    """The id (first argument) is in a JSON array of strings (second, bound as text): one
    parameter however many ids, where `IN (…)` would exceed the drivers' parameter limits."""

    type = sa.Boolean()
    inherit_cache = True
    name = "id_in"


@compiles(_id_in, "sqlite")
def _id_in_sqlite(element: _id_in, compiler: SQLCompiler, **kw: Any) -> str:
    column, ids = (compiler.process(arg, **kw) for arg in element.clauses)
    return f"({column} IN (SELECT value FROM json_each({ids})))"


@compiles(_id_in, "postgresql")
def _id_in_postgresql(element: _id_in, compiler: SQLCompiler, **kw: Any) -> str:
    column, ids = (compiler.process(arg, **kw) for arg in element.clauses)
    return f"({column} IN (SELECT jsonb_array_elements_text(CAST({ids} AS JSONB))))"


class _element_kind(sa.sql.functions.FunctionElement[str]):
    """`_json_kind` of the current `element` (of `_any_element` or an aggregation)."""

    type = sa.Text()
    inherit_cache = True
    name = "element_kind"


@compiles(_element_kind, "sqlite")
def _element_kind_sqlite(element: _element_kind, compiler: SQLCompiler, **kw: Any) -> str:
    return (
        "(CASE element.type WHEN 'integer' THEN 'number' WHEN 'real' THEN 'number' "
        "WHEN 'text' THEN 'string' ELSE element.type END)"
    )


@compiles(_element_kind, "postgresql")
def _element_kind_postgresql(element: _element_kind, compiler: SQLCompiler, **kw: Any) -> str:
    return (
        "(CASE jsonb_typeof(element.value) WHEN 'boolean' THEN element.value #>> '{}' "
        "ELSE jsonb_typeof(element.value) END)"
    )


class _element_number(sa.sql.functions.FunctionElement[float]):
    """The current `element` as a float; only meaningful where its kind is 'number'."""

    type = sa.Float()
    inherit_cache = True
    name = "element_number"


@compiles(_element_number, "sqlite")
def _element_number_sqlite(element: _element_number, compiler: SQLCompiler, **kw: Any) -> str:
    return "CAST(element.value AS REAL)"


@compiles(_element_number, "postgresql")
def _element_number_postgresql(element: _element_number, compiler: SQLCompiler, **kw: Any) -> str:
    return "CAST(element.value #>> '{}' AS DOUBLE PRECISION)"


class _element_string(sa.sql.functions.FunctionElement[str]):
    """The current `element` as text; only meaningful where its kind is 'string'."""

    type = sa.Text()
    inherit_cache = True
    name = "element_string"


@compiles(_element_string, "sqlite")
def _element_string_sqlite(element: _element_string, compiler: SQLCompiler, **kw: Any) -> str:
    return "element.value"


@compiles(_element_string, "postgresql")
def _element_string_postgresql(element: _element_string, compiler: SQLCompiler, **kw: Any) -> str:
    return "(element.value #>> '{}')"


class _contains_any(sa.sql.functions.FunctionElement[bool]):
    """`=` as written portably (first argument) or, on PostgreSQL, as `document @> …` for
    each of the other arguments: the same rows, found through the jsonb_path_ops GIN index."""

    type = sa.Boolean()
    inherit_cache = True
    name = "contains_any"


@compiles(_contains_any, "sqlite")
def _contains_any_sqlite(element: _contains_any, compiler: SQLCompiler, **kw: Any) -> str:
    return f"({compiler.process(element.clauses.clauses[0], **kw)})"


@compiles(_contains_any, "postgresql")
def _contains_any_postgresql(element: _contains_any, compiler: SQLCompiler, **kw: Any) -> str:
    document, *shapes = (compiler.process(arg, **kw) for arg in element.clauses.clauses[1:])
    return "(" + " OR ".join(f"{document} @> {shape}" for shape in shapes) + ")"


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


@dataclass(frozen=True)
class _Path:
    """One attribute of the document: `a/b/ns:c` is the JSON path a → b → ns:c."""

    document: ColumnElement[Any]
    keys: tuple[str | int, ...]  # an int indexes an array

    @property
    def json_path(self) -> ColumnElement[Any]:
        return sa.bindparam(None, self.keys, type_=sa.JSON.JSONPathType())

    @property
    def kind(self) -> ColumnElement[str]:
        return _json_kind(self.document, self.json_path)

    def any_element(self, predicate: ColumnElement[bool]) -> ColumnElement[bool]:
        """An element of the array here satisfies `predicate` (written over `_ELEMENT`)."""
        return sa.and_(self.is_("array"), _any_element(self.document, self.json_path, predicate))

    def is_(self, kind: str) -> ColumnElement[bool]:
        return self.kind == sa.literal(kind, sa.Text())

    @property
    def number(self) -> ColumnElement[float]:
        # CASE, not AND: PostgreSQL would otherwise cast "abc" to a float and fail.
        return sa.case((self.is_("number"), self.document[self.keys].as_float()))

    @property
    def string(self) -> ColumnElement[str]:
        return _binary_text(sa.case((self.is_("string"), self.document[self.keys].as_string())))


_SQL_OPS = {
    "=": lambda a, b: a == b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _typed(path: _Path | _Element, value: Any) -> tuple[str, ColumnElement[Any], Any]:
    """The JSON kind a value matches, the expression to compare, the bound value."""
    if isinstance(value, datetime):
        return "string", path.string, normalize_timestamp(value)
    if isinstance(value, int | float):
        return "number", path.number, float(value)
    return "string", path.string, value


class _Element:
    """One element of the JSON array being tested, inside `_any_element`'s subquery."""

    @property
    def kind(self) -> ColumnElement[str]:
        return _element_kind()

    def is_(self, kind: str) -> ColumnElement[bool]:
        return _element_kind() == sa.literal(kind, sa.Text())

    @property
    def number(self) -> ColumnElement[float]:
        return sa.case((self.is_("number"), _element_number()))

    @property
    def string(self) -> ColumnElement[str]:
        return _binary_text(sa.case((self.is_("string"), _element_string())))


_ELEMENT = _Element()


def _comparison(path: _Path, op: str, value: Any) -> ColumnElement[bool]:
    """Elasticsearch's semantics: a value matches the attribute or any element of it."""
    if op == "!=":
        return sa.not_(_comparison(path, "=", value))
    if value is None:  # like Elasticsearch's `exists`: [] and [null, null] hold no value
        return sa.or_(
            path.is_("missing"),
            path.is_("null"),
            sa.and_(path.is_("array"), sa.not_(path.any_element(sa.not_(_ELEMENT.is_("null"))))),
        )
    either = sa.or_(
        _scalar_comparison(path, op, value),
        path.any_element(_scalar_comparison(_ELEMENT, op, value)),
    )
    if op == "=" and not (isinstance(value, tuple) and not value):
        shapes = [sa.bindparam(None, shape, JSONB) for shape in _containments(path.keys, value)]
        return _contains_any(either, path.document, *shapes)
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


def _scalar_comparison(path: _Path | _Element, op: str, value: Any) -> ColumnElement[bool]:
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
    if op == "==":
        lowered = sa.func.lower(path.string)
        words = [lowered.like(f"%{_escape_like(w.lower())}%", escape="\\") for w in value.split()]
        return sa.and_(path.is_("string"), *words)
    kind, expression, bound = _typed(path, value)
    # Guarded by the kind so the result is never NULL, and NOT of it is exact.
    return sa.and_(path.is_(kind), _SQL_OPS[op](expression, bound))


def _in(path: _Path | _Element, values: tuple[Any, ...]) -> ColumnElement[bool]:
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
) -> ColumnElement[bool]:
    """A filter tree as a SQL condition over the `document` column (or `columns["document"]`).
    A geo comparison compiles only with the ids of the resources it matches (`geo_matches`,
    from `_geo_matches`): SQL alone cannot evaluate it."""
    document = (columns or {}).get("document", catalog_resources.c.document)
    if isinstance(tree, And | Or):
        terms = (compile_filter(term, columns, geo_matches=geo_matches) for term in tree.terms)
        return sa.and_(*terms) if isinstance(tree, And) else sa.or_(*terms)
    if isinstance(tree, GeoComparison):
        if geo_matches is None or tree not in geo_matches:
            raise InvalidInput("geo filters need a search: compile_filter cannot evaluate them")
        ids = json.dumps(sorted(geo_matches[tree]))
        return _id_in(catalog_resources.c.id, sa.literal(ids, sa.Text()))
    assert isinstance(tree, Comparison)
    return _comparison(_Path(document, tuple(tree.attribute.split("/"))), tree.op, tree.value)


def _geo_comparisons(tree: Filter) -> list[GeoComparison]:
    if isinstance(tree, And | Or):
        return [geo for term in tree.terms for geo in _geo_comparisons(term)]
    return [tree] if isinstance(tree, GeoComparison) else []


def _geometry(value: Any) -> BaseGeometry | None:
    """A GeoJSON geometry, or a `[lon, lat]` point; None for anything else."""
    if isinstance(value, list):
        if len(value) == 2 and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value
        ):
            return shapely.Point(value)
        return None
    if not isinstance(value, dict):
        return None
    try:
        geometry = shapely.geometry.shape(value)
    except (ShapelyError, ValueError, TypeError, KeyError, AttributeError, IndexError):
        return None
    return geometry if geometry.is_valid and not geometry.is_empty else None


_GEO_RELATIONS = {
    "intersects": shapely.intersects,
    "disjoint": shapely.disjoint,
    "within": shapely.within,
    "contains": shapely.contains,
}


async def _geo_matches(
    session: AsyncSession, scope: ColumnElement[bool], geo: GeoComparison
) -> frozenset[str]:
    """Ids of the resources in `scope` whose attribute holds a geometry in relation `geo.op`
    to `geo.geometry` (as the document's geometry relates to the filter's, as in
    Elasticsearch's geo_shape). Exact, evaluated by shapely over every candidate: SQL only
    narrows the candidates to resources where the attribute is an object or an array."""
    path = _Path(catalog_resources.c.document, tuple(geo.attribute.split("/")))
    points = path.is_("array")
    if geo.op != "disjoint":  # a [lon, lat] point relating so lies in the filter's bounds
        west, south, east, north = geo.geometry.bounds
        lon, lat = (_Path(path.document, (*path.keys, n)).number for n in (0, 1))
        points = sa.and_(points, lon.between(west, east), lat.between(south, north))
    candidates = sa.select(catalog_resources.c.id, path.document[path.keys]).where(
        scope, sa.or_(path.is_("object"), points)
    )
    relation = _GEO_RELATIONS[geo.op]
    matches = set()
    for resource_id, value in await session.execute(candidates):
        geometry = _geometry(value)
        if geometry is not None and relation(geometry, geo.geometry):
            matches.add(resource_id)
    return frozenset(matches)


def visible_to(identity: Identity) -> ColumnElement[bool]:
    """Resources whose `viewers` share a claim with `identity`; admins see everything."""
    if identity.is_admin:
        return sa.true()
    claims = [sa.literal(claim, sa.Text()) for claim in sorted(identity.claims)]
    return _viewers_overlap(catalog_resources.c.viewers, *claims)


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
        if not all(_ATTRIBUTE.fullmatch(key) for key in attribute.split("/")):
            raise InvalidInput(
                f"orderby: invalid sort {part!r}; "
                "expected attribute[:asc|:desc], e.g. created:desc",
                detail={"orderby": spec},
            )
        path = _Path(catalog_resources.c.document, tuple(attribute.split("/")))
        descending = direction == "desc"
        keys += [_SortKey(path.number, descending), _SortKey(path.string, descending)]
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


async def _where(
    session: AsyncSession,
    collection: str,
    identity: Identity,
    filter_text: str | Sequence[str] | None,
) -> ColumnElement[bool]:
    """The resources a search selects: in the collection, visible, matching every filter."""
    texts = [filter_text] if isinstance(filter_text, str) else list(filter_text or ())
    trees = [parse_filter(text) for text in texts if text.strip()]
    scope = sa.and_(catalog_resources.c.collection == collection, visible_to(identity))
    geo_matches = {
        geo: await _geo_matches(session, scope, geo)
        for tree in trees
        for geo in _geo_comparisons(tree)
    }
    conditions = [compile_filter(tree, geo_matches=geo_matches) for tree in trees]
    return sa.and_(scope, *conditions)


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
    where = await _where(session, collection, identity, filter_text)
    keys = _sort_keys(orderby)
    if last is None:
        last = first + MAX_WINDOW - 1
    size = min(last - first + 1, MAX_WINDOW)
    page = sa.select(catalog_resources.c.document, *(k.expression for k in keys)).where(where)
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
    counting = sa.select(sa.func.count()).select_from(catalog_resources).where(where)
    count = (await session.execute(counting)).scalar_one()
    if last == 0 or size <= 0:
        return SearchResult(count, [])
    ordered = page.order_by(*(key.clause for key in keys)).limit(size)
    rows = (await session.execute(ordered)).all()
    following = _encode_cursor(orderby, rows[-1][1:]) if len(rows) == size else None
    return SearchResult(count, [row[0] for row in rows], following)


async def put_resource(session: AsyncSession, document: dict[str, Any]) -> None:
    """Insert or replace a resource by its id (`collection/uuid`); `created`/`updated` are
    normalised in the document (set to now if absent), `viewers` computed from its ACL."""
    resource_id = document["id"]
    collection, slash, _ = resource_id.partition("/")
    if not slash or not collection:
        raise InvalidInput(f"id: expected collection/identifier, got {resource_id!r}")
    now = normalize_timestamp(utc_now())
    document = dict(document)
    for key in ("created", "updated"):
        document[key] = normalize_timestamp(document.get(key) or now)
    values = {
        "collection": collection,
        "document": document,
        "created": datetime.fromisoformat(document["created"]),
        "updated": datetime.fromisoformat(document["updated"]),
        "viewers": sorted(principals_with(document.get("acl", {}), "view-meta")),
    }
    table = catalog_resources
    result = await session.execute(
        sa.update(table).where(table.c.id == resource_id).values(**values)
    )
    if result.rowcount == 0:  # type: ignore[attr-defined]
        await session.execute(sa.insert(table).values(id=resource_id, **values))


async def delete_resource(session: AsyncSession, resource_id: str) -> bool:
    """Delete a resource; False if there was none with that id."""
    table = catalog_resources
    result = await session.execute(sa.delete(table).where(table.c.id == resource_id))
    return bool(result.rowcount)  # type: ignore[attr-defined]
