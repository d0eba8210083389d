"""The SQL pieces whose text differs between SQLite and PostgreSQL, and JSON paths built on them.

Each construct renders the same meaning on both backends (the JSON type of a value, code-point
string order, a viewers-array overlap, array elements as rows, `id IN` a JSON array, the
jsonb_path_ops containment, or any condition written once per dialect); `JsonPath` and
`ELEMENT` type a document's attribute, or the current array element, over them. Every search,
geo match and aggregation reads documents through these.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement

__all__ = [
    "ATTRIBUTE_KEY",
    "ELEMENT",
    "ArrayElement",
    "JsonPath",
    "any_element",
    "binary_text",
    "contains_any",
    "element_kind",
    "element_number",
    "element_string",
    "elements",
    "id_in",
    "json_kind",
    "per_dialect",
    "viewers_overlap",
]

ATTRIBUTE_KEY = re.compile(r"[A-Za-z](?:[\w-]*\w)?(?::[A-Za-z](?:[\w-]*\w)?)?", re.ASCII)
"""One key of an attribute path (`a`, `ns:key`): what `orderby` and aggregations accept."""


class json_kind(sa.sql.functions.FunctionElement[str]):
    """The JSON type of `document` at a path, the same words on both backends:
    'number', 'string', 'true', 'false', 'null', 'array', 'object', or 'missing'."""

    type = sa.Text()
    inherit_cache = True
    name = "json_kind"


@compiles(json_kind, "sqlite")
def _json_kind_sqlite(element: json_kind, compiler: SQLCompiler, **kw: Any) -> str:
    document, path = (compiler.process(arg, **kw) for arg in element.clauses)
    kind = f"json_type({document}, {path})"
    return (
        f"(CASE {kind} WHEN 'integer' THEN 'number' WHEN 'real' THEN 'number' "
        f"WHEN 'text' THEN 'string' ELSE coalesce({kind}, 'missing') END)"
    )


@compiles(json_kind, "postgresql")
def _json_kind_postgresql(element: json_kind, compiler: SQLCompiler, **kw: Any) -> str:
    document, path = (compiler.process(arg, **kw) for arg in element.clauses)
    value = f"({document} #> {path})"
    return (
        f"(CASE jsonb_typeof({value}) WHEN 'boolean' THEN {value} #>> '{{}}' "
        f"ELSE coalesce(jsonb_typeof({value}), 'missing') END)"
    )


class binary_text(sa.sql.functions.FunctionElement[str]):
    """A text expression compared by code point on both backends."""

    type = sa.Text()
    inherit_cache = True
    name = "binary_text"


@compiles(binary_text, "sqlite")
def _binary_text_sqlite(element: binary_text, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)  # SQLite's default collation is BINARY


@compiles(binary_text, "postgresql")
def _binary_text_postgresql(element: binary_text, compiler: SQLCompiler, **kw: Any) -> str:
    return f'({compiler.process(element.clauses, **kw)} COLLATE "C")'


class viewers_overlap(sa.sql.functions.FunctionElement[bool]):
    """True if the JSON array `viewers` (first argument) holds any of the other arguments."""

    type = sa.Boolean()
    inherit_cache = True
    name = "viewers_overlap"


@compiles(viewers_overlap, "sqlite")
def _viewers_overlap_sqlite(element: viewers_overlap, compiler: SQLCompiler, **kw: Any) -> str:
    viewers, *claims = (compiler.process(arg, **kw) for arg in element.clauses)
    return (
        f"EXISTS (SELECT 1 FROM json_each({viewers}) AS viewer "
        f"WHERE viewer.value IN ({', '.join(claims)}))"
    )


@compiles(viewers_overlap, "postgresql")
def _viewers_overlap_postgresql(element: viewers_overlap, compiler: SQLCompiler, **kw: Any) -> str:
    viewers, *claims = (compiler.process(arg, **kw) for arg in element.clauses)
    return f"({viewers} ?| CAST(ARRAY[{', '.join(claims)}] AS TEXT[]))"


class any_element(sa.sql.functions.FunctionElement[bool]):
    """True if some element of the JSON array at a path (document, path) satisfies the
    predicate (third argument), written over `ELEMENT` (`element_kind`, `element_number`,
    `element_string`)."""

    type = sa.Boolean()
    inherit_cache = True
    name = "any_element"


@compiles(any_element, "sqlite")
def _any_element_sqlite(element: any_element, compiler: SQLCompiler, **kw: Any) -> str:
    document, path, predicate = (compiler.process(arg, **kw) for arg in element.clauses)
    return f"(EXISTS (SELECT 1 FROM json_each({document}, {path}) AS element WHERE {predicate}))"


@compiles(any_element, "postgresql")
def _any_element_postgresql(element: any_element, compiler: SQLCompiler, **kw: Any) -> str:
    document, path, predicate = (compiler.process(arg, **kw) for arg in element.clauses)
    value = f"({document} #> {path})"
    array = f"(CASE jsonb_typeof({value}) WHEN 'array' THEN {value} ELSE '[]'::jsonb END)"
    return (
        f"EXISTS (SELECT 1 FROM jsonb_array_elements({array}) AS element(value) WHERE {predicate})"
    )


class elements(sa.sql.functions.FunctionElement[Any]):
    """A table function (use `.table_valued().alias("element")`): one row per value at a
    path of a document (document, path): each element of an array, else the value itself."""

    inherit_cache = True
    name = "elements"


@compiles(elements, "sqlite")
def _elements_sqlite(element: elements, compiler: SQLCompiler, **kw: Any) -> str:
    document, path = (compiler.process(arg, **kw) for arg in element.clauses)
    return f"json_each({document}, {path})"  # objects yield members: callers exclude them


@compiles(elements, "postgresql")
def _elements_postgresql(element: elements, compiler: SQLCompiler, **kw: Any) -> str:
    document, path = (compiler.process(arg, **kw) for arg in element.clauses)
    value = f"({document} #> {path})"
    return (
        f"jsonb_array_elements(CASE WHEN {value} IS NULL THEN '[]'::jsonb "
        f"WHEN jsonb_typeof({value}) = 'array' THEN {value} ELSE jsonb_build_array({value}) END)"
    )


class id_in(sa.sql.functions.FunctionElement[bool]):
    """The id (first argument) is in a JSON array of strings (second, bound as text): one
    parameter however many ids, where `IN (…)` would exceed the drivers' parameter limits."""

    type = sa.Boolean()
    inherit_cache = True
    name = "id_in"


@compiles(id_in, "sqlite")
def _id_in_sqlite(element: id_in, compiler: SQLCompiler, **kw: Any) -> str:
    column, ids = (compiler.process(arg, **kw) for arg in element.clauses)
    return f"({column} IN (SELECT value FROM json_each({ids})))"


@compiles(id_in, "postgresql")
def _id_in_postgresql(element: id_in, compiler: SQLCompiler, **kw: Any) -> str:
    column, ids = (compiler.process(arg, **kw) for arg in element.clauses)
    return f"({column} IN (SELECT jsonb_array_elements_text(CAST({ids} AS JSONB))))"


class per_dialect(sa.sql.functions.FunctionElement[bool]):
    """A condition written twice: the first argument on PostgreSQL, the second on SQLite."""

    type = sa.Boolean()
    inherit_cache = True
    name = "per_dialect"


@compiles(per_dialect, "sqlite")
def _per_dialect_sqlite(element: per_dialect, compiler: SQLCompiler, **kw: Any) -> str:
    return f"({compiler.process(element.clauses.clauses[1], **kw)})"


@compiles(per_dialect, "postgresql")
def _per_dialect_postgresql(element: per_dialect, compiler: SQLCompiler, **kw: Any) -> str:
    return f"({compiler.process(element.clauses.clauses[0], **kw)})"


class element_kind(sa.sql.functions.FunctionElement[str]):
    """`json_kind` of the current `element` (of `any_element` or an aggregation)."""

    type = sa.Text()
    inherit_cache = True
    name = "element_kind"


@compiles(element_kind, "sqlite")
def _element_kind_sqlite(element: element_kind, compiler: SQLCompiler, **kw: Any) -> str:
    return (
        "(CASE element.type WHEN 'integer' THEN 'number' WHEN 'real' THEN 'number' "
        "WHEN 'text' THEN 'string' ELSE element.type END)"
    )


@compiles(element_kind, "postgresql")
def _element_kind_postgresql(element: element_kind, compiler: SQLCompiler, **kw: Any) -> str:
    return (
        "(CASE jsonb_typeof(element.value) WHEN 'boolean' THEN element.value #>> '{}' "
        "ELSE jsonb_typeof(element.value) END)"
    )


class element_number(sa.sql.functions.FunctionElement[float]):
    """The current `element` as a float; only meaningful where its kind is 'number'."""

    type = sa.Float()
    inherit_cache = True
    name = "element_number"


@compiles(element_number, "sqlite")
def _element_number_sqlite(element: element_number, compiler: SQLCompiler, **kw: Any) -> str:
    return "CAST(element.value AS REAL)"


@compiles(element_number, "postgresql")
def _element_number_postgresql(element: element_number, compiler: SQLCompiler, **kw: Any) -> str:
    return "CAST(element.value #>> '{}' AS DOUBLE PRECISION)"


class element_string(sa.sql.functions.FunctionElement[str]):
    """The current `element` as text; only meaningful where its kind is 'string'."""

    type = sa.Text()
    inherit_cache = True
    name = "element_string"


@compiles(element_string, "sqlite")
def _element_string_sqlite(element: element_string, compiler: SQLCompiler, **kw: Any) -> str:
    return "element.value"


@compiles(element_string, "postgresql")
def _element_string_postgresql(element: element_string, compiler: SQLCompiler, **kw: Any) -> str:
    return "(element.value #>> '{}')"


class contains_any(sa.sql.functions.FunctionElement[bool]):
    """`=` as written portably (first argument) or, on PostgreSQL, as `document @> …` for
    each of the other arguments: the same rows, found through the jsonb_path_ops GIN index."""

    type = sa.Boolean()
    inherit_cache = True
    name = "contains_any"


@compiles(contains_any, "sqlite")
def _contains_any_sqlite(element: contains_any, compiler: SQLCompiler, **kw: Any) -> str:
    return f"({compiler.process(element.clauses.clauses[0], **kw)})"


@compiles(contains_any, "postgresql")
def _contains_any_postgresql(element: contains_any, compiler: SQLCompiler, **kw: Any) -> str:
    document, *shapes = (compiler.process(arg, **kw) for arg in element.clauses.clauses[1:])
    return "(" + " OR ".join(f"{document} @> {shape}" for shape in shapes) + ")"


@dataclass(frozen=True)
class JsonPath:
    """One attribute of the document: `a/b/ns:c` is the JSON path a → b → ns:c."""

    document: ColumnElement[Any]
    keys: tuple[str | int, ...]  # an int indexes an array

    @property
    def json_path(self) -> ColumnElement[Any]:
        return sa.bindparam(None, self.keys, type_=sa.JSON.JSONPathType())

    @property
    def kind(self) -> ColumnElement[str]:
        return json_kind(self.document, self.json_path)

    def any_element(self, predicate: ColumnElement[bool]) -> ColumnElement[bool]:
        """An element of the array here satisfies `predicate` (written over `ELEMENT`)."""
        return sa.and_(self.is_("array"), any_element(self.document, self.json_path, predicate))

    def is_(self, kind: str) -> ColumnElement[bool]:
        return self.kind == sa.literal(kind, sa.Text())

    @property
    def number(self) -> ColumnElement[float]:
        # CASE, not AND: PostgreSQL would otherwise cast "abc" to a float and fail.
        return sa.case((self.is_("number"), self.document[self.keys].as_float()))

    @property
    def string(self) -> ColumnElement[str]:
        return binary_text(sa.case((self.is_("string"), self.document[self.keys].as_string())))


class ArrayElement:
    """One element of the JSON array being tested, inside `any_element`'s subquery."""

    @property
    def kind(self) -> ColumnElement[str]:
        return element_kind()

    def is_(self, kind: str) -> ColumnElement[bool]:
        return element_kind() == sa.literal(kind, sa.Text())

    @property
    def number(self) -> ColumnElement[float]:
        return sa.case((self.is_("number"), element_number()))

    @property
    def string(self) -> ColumnElement[str]:
        return binary_text(sa.case((self.is_("string"), element_string())))


ELEMENT = ArrayElement()
