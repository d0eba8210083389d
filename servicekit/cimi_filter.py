"""CIMI filters (Nuvla's grammar, plus floats) parsed into a small syntax tree."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import shapely
from shapely.errors import ShapelyError
from shapely.geometry.base import BaseGeometry

from servicekit.errors import InvalidInput

__all__ = [
    "And",
    "Comparison",
    "Filter",
    "FilterError",
    "GeoComparison",
    "Or",
    "Value",
    "attributes",
    "parse_filter",
    "to_text",
]

Scalar = str | int | float | bool | datetime | None
Value = Scalar | tuple[str | int | float | datetime, ...]

EQUALITY_OPS = frozenset({"=", "!="})
ORDER_OPS = frozenset({"<", "<=", ">", ">="})
STRING_OPS = frozenset({"^=", "=="})
GEO_OPS = frozenset({"intersects", "disjoint", "within", "contains"})
# Reading `3<a` as `a>3` keeps one shape for every comparison in the tree.
_FLIPPED = {
    "=": "=",
    "!=": "!=",
    "<": ">",
    "<=": ">=",
    ">": "<",
    ">=": "<=",
    "^=": "^=",
    "==": "==",
}
MAX_DEPTH = 100


class FilterError(InvalidInput):
    """A filter that does not parse; `detail["position"]` is the 1-based column."""

    def __init__(self, what: str, position: int) -> None:
        super().__init__(
            f"Invalid CIMI filter. {what} at column {position}", detail={"position": position}
        )
        self.position = position


@dataclass(frozen=True)
class Comparison:
    attribute: str
    op: str
    value: Value


@dataclass(frozen=True)
class GeoComparison:
    attribute: str
    op: str
    geometry: BaseGeometry


@dataclass(frozen=True)
class And:
    terms: tuple[Filter, ...]


@dataclass(frozen=True)
class Or:
    terms: tuple[Filter, ...]


Filter = Comparison | GeoComparison | And | Or


# --- tokens ---------------------------------------------------------------------------------

# Loose on purpose: a whole word is taken, then checked, so `a-` or `a/1` fail as one
# attribute at its own column rather than as a puzzling error on the character after it.
_WORD = re.compile(r"[A-Za-z_][\w:/-]*", re.ASCII)
_TERM = r"[A-Za-z](?:[\w-]*\w)?"
_ATTRIBUTE = re.compile(rf"{_TERM}(?::{_TERM})?(?:/{_TERM}(?::{_TERM})?)*", re.ASCII)
_DATE_LOOSE = re.compile(r"\d+-\d+(?:-\d+)?(?:T[\d:.]+(?:Z|[+-][\d:]+)?)?", re.ASCII)
_DATE = re.compile(
    r"(\d{4})-(\d{2})(?:-(\d{2}))?"
    r"(?:T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|([+-])(\d{2}):(\d{2})))?",
    re.ASCII,
)
_NUMBER = re.compile(r"-?\d+(\.\d+)?([eE][+-]?\d+)?", re.ASCII)
_STRING = re.compile(r""""((?:[^"\\]|\\.)*)"|'((?:[^'\\]|\\.)*)'""", re.DOTALL)
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_OP = re.compile(r"==|!=|<=|>=|\^=|=|<|>")
_PUNCT = "()[],"
_SPACE = re.compile(r"\s*")


@dataclass(frozen=True)
class _Token:
    kind: str  # "op", "word", "value", one of _PUNCT, or "end"
    text: str
    column: int
    value: Any = None


def _describe(token: _Token) -> str:
    return "end of filter" if token.kind == "end" else repr(token.text)


def _date(text: str, column: int) -> datetime:
    m = _DATE.fullmatch(text)
    if m is None:
        raise FilterError(
            f"invalid date {text!r} (expected YYYY-MM[-DD][Thh:mm:ss[.f](Z|+hh:mm|-hh:mm)])", column
        )
    year, month, day, hour, minute, second, fraction, zone, sign, zh, zm = m.groups()
    try:
        tz = UTC
        if zone and zone != "Z":
            offset = timedelta(hours=int(zh), minutes=int(zm))
            tz = timezone(-offset if sign == "-" else offset)
        moment = datetime(
            int(year),
            int(month),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((fraction or "").ljust(6, "0")[:6]),
            tzinfo=tz,
        )
    except ValueError as exc:
        raise FilterError(f"invalid date {text!r} ({exc})", column) from None
    return moment.astimezone(UTC)


def _tokens(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = _SPACE.match(text, 0).end()  # type: ignore[union-attr]
    while i < len(text):
        column, ch = i + 1, text[i]
        if ch in _PUNCT:
            tokens.append(_Token(ch, ch, column))
            i += 1
        elif m := _OP.match(text, i):
            tokens.append(_Token("op", m.group(), column))
            i = m.end()
        elif m := _STRING.match(text, i):
            raw = m.group(1) if m.group(1) is not None else m.group(2)
            tokens.append(_Token("value", m.group(), column, _ESCAPE.sub(r"\1", raw)))
            i = m.end()
        elif ch in "'\"":
            raise FilterError("unterminated string", column)
        elif m := _DATE_LOOSE.match(text, i):
            tokens.append(_Token("value", m.group(), column, _date(m.group(), column)))
            i = m.end()
        elif m := _NUMBER.match(text, i):
            number = float(m.group()) if m.group(1) or m.group(2) else int(m.group())
            if not math.isfinite(number):
                # `inf` would not print back as a filter, nor mean anything to compare with.
                raise FilterError(f"number {m.group()!r} out of range", column)
            tokens.append(_Token("value", m.group(), column, number))
            i = m.end()
        elif m := _WORD.match(text, i):
            tokens.append(_Token("word", m.group(), column))
            i = m.end()
        else:
            raise FilterError(f"unexpected {ch!r}", column)
        i = _SPACE.match(text, i).end()  # type: ignore[union-attr]
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


# --- parser ---------------------------------------------------------------------------------

_KEYWORD_VALUES: dict[str, Scalar] = {"true": True, "false": False, "null": None}


class _Parser:
    """Precedence climbing without recursion: one frame per open parenthesis, each frame a
    list of or-branches, each branch a list of and-terms; so depth costs no Python stack."""

    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.i = 0

    def next(self) -> _Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def peek(self) -> _Token:
        return self.tokens[self.i]

    def parse(self) -> Filter:
        frames: list[tuple[_Token | None, list[list[Filter]]]] = [(None, [[]])]
        expect_term = True
        while True:
            token = self.peek()
            if expect_term:
                if token.kind == "(":
                    if len(frames) > MAX_DEPTH:
                        raise FilterError(
                            f"parentheses nested deeper than {MAX_DEPTH}", token.column
                        )
                    self.next()
                    frames.append((token, [[]]))
                    continue
                if token.kind in (")", "end"):
                    raise FilterError(
                        f"expected a comparison, found {_describe(token)}", token.column
                    )
                _add_and(frames[-1][1][-1], self.comparison())
                expect_term = False
                continue
            self.next()
            if token.kind == "word" and token.text == "and":
                expect_term = True
            elif token.kind == "word" and token.text == "or":
                frames[-1][1].append([])
                expect_term = True
            elif token.kind == ")":
                if len(frames) == 1:
                    raise FilterError("unexpected ')'", token.column)
                _, branches = frames.pop()
                _add_and(frames[-1][1][-1], _build(branches))
            elif token.kind == "end":
                if len(frames) > 1:
                    opening = frames[-1][0]
                    assert opening is not None
                    raise FilterError("unclosed '('", opening.column)
                return _build(frames[0][1])
            else:
                raise FilterError(
                    f"expected 'and', 'or', ')' or the end, found {_describe(token)}",
                    token.column,
                )

    def comparison(self) -> Filter:
        left = self.next()
        if left.kind == "word" and left.text not in _KEYWORD_VALUES:
            attribute = _attribute(left)
            op = self.next()
            if op.kind == "word" and op.text in GEO_OPS:
                return GeoComparison(attribute, op.text, _geometry(op.text, self.next()))
            if op.kind != "op":
                raise FilterError(f"expected an operator, found {_describe(op)}", op.column)
            return Comparison(attribute, op.text, _checked(op.text, self.value()))
        # Nuvla also takes the value first (`3<a`, `'x'^=a`); geo operators only after.
        value = self.value(left)
        op = self.next()
        if op.kind != "op":
            raise FilterError(f"expected an operator, found {_describe(op)}", op.column)
        right = self.next()
        if right.kind != "word" or right.text in _KEYWORD_VALUES:
            raise FilterError(
                f"expected an attribute after a value and {op.text!r}, found {_describe(right)}",
                right.column,
            )
        return Comparison(_attribute(right), _FLIPPED[op.text], _checked(op.text, value))

    def value(self, token: _Token | None = None) -> tuple[_Token, Value]:
        token = token or self.next()
        if token.kind == "value":
            return token, token.value
        if token.kind == "word" and token.text in _KEYWORD_VALUES:
            return token, _KEYWORD_VALUES[token.text]
        if token.kind == "[":
            return token, self.values()
        raise FilterError(f"expected a value, found {_describe(token)}", token.column)

    def values(self) -> tuple[str | int | float | datetime, ...]:
        items: list[str | int | float | datetime] = []
        if self.peek().kind == "]":
            self.next()
            return ()
        while True:
            token = self.next()
            if token.kind != "value":
                raise FilterError(
                    f"expected a string, number or date in a list, found {_describe(token)}",
                    token.column,
                )
            items.append(token.value)
            after = self.peek()
            if after.kind == "]":
                self.next()
                return tuple(items)
            if after.kind == ",":
                self.next()
            elif after.kind != "value":
                raise FilterError(f"expected ',' or ']', found {_describe(after)}", after.column)


def _add_and(terms: list[Filter], term: Filter) -> None:
    # Flattening `a and (b and c)` keeps the tree canonical, so to_text round-trips.
    terms.extend(term.terms if isinstance(term, And) else (term,))


def _build(branches: list[list[Filter]]) -> Filter:
    flat: list[Filter] = []
    for terms in branches:
        branch = terms[0] if len(terms) == 1 else And(tuple(terms))
        flat.extend(branch.terms if isinstance(branch, Or) else (branch,))
    return flat[0] if len(flat) == 1 else Or(tuple(flat))


def _attribute(token: _Token) -> str:
    if not _ATTRIBUTE.fullmatch(token.text):
        raise FilterError(f"invalid attribute {token.text!r}", token.column)
    return token.text


def _checked(op: str, parsed: tuple[_Token, Value]) -> Value:
    token, value = parsed
    if op in ORDER_OPS:
        allowed = "a number, date or string"
        ok = isinstance(value, str | int | float | datetime) and not isinstance(value, bool)
    elif op in STRING_OPS:
        allowed, ok = "a quoted string", isinstance(value, str)
    else:
        allowed, ok = "", True
    if not ok:
        raise FilterError(f"operator {op!r} needs {allowed}, found {token.text!r}", token.column)
    return value


def _geometry(op: str, token: _Token) -> BaseGeometry:
    if token.kind != "value" or not isinstance(token.value, str):
        raise FilterError(f"operator {op!r} needs a quoted WKT string", token.column)
    try:
        geometry = shapely.from_wkt(token.value)
    except ShapelyError as exc:
        raise FilterError(f"invalid WKT {token.value!r} ({exc})", token.column) from None
    if geometry is None:
        raise FilterError(f"invalid WKT {token.value!r}", token.column)
    return geometry


def parse_filter(text: str) -> Filter:
    """Parse a CIMI filter; raises FilterError pointing at the offending column."""
    return _Parser(text).parse()


# --- printing and inspection ----------------------------------------------------------------


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _value_text(value: Value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _quote(value)
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, tuple):
        return "[" + " ".join(_value_text(item) for item in value) + "]"
    return repr(value)


def to_text(node: Filter) -> str:
    """Print a canonical filter that parses back to an equal tree."""
    # Explicit stack of pending pieces: a 1,000-term tree must not recurse either.
    out: list[str] = []
    stack: list[Filter | str] = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
        elif isinstance(item, Comparison):
            out.append(f"{item.attribute}{item.op}{_value_text(item.value)}")
        elif isinstance(item, GeoComparison):
            out.append(f"{item.attribute} {item.op} {_quote(item.geometry.wkt)}")
        else:
            glue = " and " if isinstance(item, And) else " or "
            pieces: list[Filter | str] = []
            for n, term in enumerate(item.terms):
                if n:
                    pieces.append(glue)
                # Only an Or inside an And needs parentheses: and binds tighter.
                wrap = isinstance(item, And) and isinstance(term, Or)
                pieces.extend(["(", term, ")"] if wrap else [term])
            stack.extend(reversed(pieces))
    return "".join(out)


def attributes(node: Filter) -> set[str]:
    """Every attribute the filter names, for checking against a whitelist."""
    found: set[str] = set()
    stack: list[Filter] = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, And | Or):
            stack.extend(item.terms)
        else:
            found.add(item.attribute)
    return found
