"""Nuvla collection parameters on the `session` collection: `filter`, `first`/`last`,
`orderby`, `select`.

As on Nuvla, a caller sees its own current session only; `group/extract-admin` sees every live
session. Filters are CIMI filters (servicekit.cimi_filter) over the session's attributes,
compiled to SQL; full-text and geo terms, and `aggregation`, answer 400.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

from gateway.tables import sessions
from servicekit.cimi_filter import And, Filter, GeoComparison, Or, attributes, parse_filter
from servicekit.errors import InvalidInput

__all__ = ["MAX_WINDOW", "SessionSearch"]

# Nuvla's (Elasticsearch's) result window: `first`/`last` reach no further.
MAX_WINDOW = 10_000
_SORTABLE: dict[str, sa.Column[Any]] = {
    "id": sessions.c.id,
    "user": sessions.c.principal,
    "method": sessions.c.method,
    "identifier": sessions.c.identifier,
    "created": sessions.c.created,
    "updated": sessions.c.created,  # sessions are never updated
    "expiry": sessions.c.expiry,
}
_ALWAYS_SELECTED = ("id", "resource-type")
_UNSUPPORTED = {"aggregation": "aggregations on session are not supported by the gateway"}
_DATES = frozenset({"created", "updated", "expiry"})
_DEFAULT_ORDER = (("created", True),)


def _int(values: dict[str, list[str]], name: str) -> int | None:
    given = values.get(name)
    if not given or not given[-1].strip():
        return None
    try:
        return int(given[-1])
    except ValueError:
        raise InvalidInput(
            f"{name}: expected an integer, got {given[-1]!r:.40}", detail={"field": name}
        ) from None


def _orderby(values: list[str]) -> tuple[tuple[str, bool], ...]:
    keys: list[tuple[str, bool]] = []
    for spec in (part.strip() for value in values for part in value.split(",")):
        if not spec:
            continue
        name, _, direction = spec.partition(":")
        if name not in _SORTABLE:
            raise InvalidInput(
                f"orderby: cannot sort sessions by {name!r}; use one of {', '.join(_SORTABLE)}",
                detail={"field": "orderby"},
            )
        if direction not in ("", "asc", "desc"):
            raise InvalidInput(
                f"orderby: direction of {name!r} must be asc or desc, got {direction!r}",
                detail={"field": "orderby"},
            )
        keys.append((name, direction == "desc"))
    return tuple(keys) or _DEFAULT_ORDER


def _where(texts: list[str]) -> sa.ColumnElement[bool] | None:
    """The filters (repeated = AND) as a condition on the sessions table."""
    terms = [parse_filter(text) for text in texts if text.strip()]
    unknown = sorted({name for term in terms for name in attributes(term)} - set(_SORTABLE))
    if unknown:
        raise InvalidInput(
            f"filter: sessions have no attribute {unknown[0]!r}; use one of {', '.join(_SORTABLE)}",
            detail={"field": "filter"},
        )
    return sa.and_(*map(_condition, terms)) if terms else None


def _condition(node: Filter) -> sa.ColumnElement[bool]:
    if isinstance(node, And):
        return sa.and_(*map(_condition, node.terms))
    if isinstance(node, Or):
        return sa.or_(*map(_condition, node.terms))
    if isinstance(node, GeoComparison) or node.op == "==":
        raise InvalidInput(
            f"filter: {node.op} does not apply to session attributes", detail={"field": "filter"}
        )
    column, value = _SORTABLE[node.attribute], node.value
    if value is None:
        return column.is_(None) if node.op == "=" else column.is_not(None)
    if isinstance(value, tuple):
        members = column.in_([_typed(node.attribute, v) for v in value])
        return members if node.op == "=" else ~members
    if node.op == "^=":
        return column.startswith(str(value), autoescape=True)
    typed = _typed(node.attribute, value)
    return {
        "=": column == typed,
        "!=": column != typed,
        "<": column < typed,
        "<=": column <= typed,
        ">": column > typed,
        ">=": column >= typed,
    }[node.op]


def _typed(attribute: str, value: object) -> str | datetime:
    """`value` as the attribute's column holds it: a date for the dates, else a string."""
    if attribute not in _DATES:
        return str(value)
    if isinstance(value, datetime):
        return value
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(
            f"filter: {attribute} compares with a date, not {value!r:.40}",
            detail={"field": "filter"},
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _select(values: list[str]) -> tuple[str, ...]:
    names = [name.strip() for value in values for name in value.split(",")]
    names = [name for name in names if name]
    return () if "*" in names else tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class SessionSearch:
    """A search of the session collection, from query or form parameters."""

    orderby: tuple[tuple[str, bool], ...] = _DEFAULT_ORDER
    select: tuple[str, ...] = ()
    first: int = 1
    last: int | None = None
    where: sa.ColumnElement[bool] | None = None

    @classmethod
    def parse(cls, pairs: list[tuple[str, str]]) -> SessionSearch:
        values: dict[str, list[str]] = {}
        for key, value in pairs:
            values.setdefault(key, []).append(value)
        for name, why in _UNSUPPORTED.items():
            if any(v.strip() for v in values.get(name, [])):
                raise InvalidInput(f"{name}: {why}", detail={"field": name})
        first = _int(values, "first")
        last = _int(values, "last")
        if first is not None and first < 1:
            raise InvalidInput(f"first: must be 1 or more, got {first}", detail={"field": "first"})
        if last is not None and last < 0:
            raise InvalidInput(f"last: must be 0 or more, got {last}", detail={"field": "last"})
        if max(first or 1, last or 0) > MAX_WINDOW:
            raise InvalidInput(
                f"first/last reach at most {MAX_WINDOW} sessions", detail={"field": "last"}
            )
        return cls(
            orderby=_orderby(values.get("orderby", [])),
            select=_select(values.get("select", [])),
            first=first or 1,
            last=last,
            where=_where(values.get("filter", [])),
        )

    def order_clauses(self) -> list[sa.ColumnElement[Any]]:
        clauses = [
            _SORTABLE[name].desc() if descending else _SORTABLE[name].asc()
            for name, descending in self.orderby
        ]
        return [*clauses, sessions.c.id.asc()]  # stable pages

    def window(self) -> tuple[int, int]:
        """(offset, limit) of the page: 1-based inclusive `first`..`last`, as Nuvla's."""
        offset = self.first - 1
        last = MAX_WINDOW if self.last is None else self.last
        return offset, max(0, last - offset)

    def project(self, document: dict[str, Any]) -> dict[str, Any]:
        if not self.select:
            return document
        keep = {*self.select, *_ALWAYS_SELECTED}
        return {key: value for key, value in document.items() if key in keep}
