"""CIMI filters compiled to SQL: comparisons, full text, geo terms and ACL visibility.

One code path serves SQLite and PostgreSQL. Where the two differ (the type of a JSON value,
string collation, testing the viewers array) a small construct in `sqlparts.py` renders each
dialect; geo terms are resolved to ids by `geo.py`. Searches, their ordering, windows and
cursors are `query.py`'s.

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

import json
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.elements import ColumnElement

from servicekit.cimi_filter import And, Comparison, Filter, GeoComparison, Or
from servicekit.errors import InvalidInput
from servicekit.security import Identity
from services.catalog.fulltext import fulltext_match
from services.catalog.sqlparts import (
    ELEMENT,
    ArrayElement,
    JsonPath,
    contains_any,
    id_in,
    viewers_overlap,
)
from services.catalog.tables import catalog_resources, hot_columns

__all__ = [
    "comparison",
    "compile_filter",
    "hot_columns_of",
    "normalize_timestamp",
    "visible_to",
]


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


def hot_columns_of(path: JsonPath) -> tuple[sa.Column[float], sa.Column[str]] | None:
    """The generated (number, string) columns of a hot attribute's path, None if it has none."""
    if len(path.keys) != 1 or path.document is not catalog_resources.c.document:
        return None
    return hot_columns(str(path.keys[0]))


def _hot_comparison(path: JsonPath, op: str, value: Any) -> ColumnElement[bool] | None:
    """A comparison over a hot attribute's generated columns, None if it has none."""
    hot = hot_columns_of(path)
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
