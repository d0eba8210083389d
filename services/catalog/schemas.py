"""What each collection's resources must look like: typed attributes, checked on every write.

Only the attributes named here are typed; anything else is open schema, as in Nuvla. A wrong
type is an InvalidInput naming the attribute.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from servicekit.cimi_filter import parse_filter
from servicekit.errors import InvalidInput
from servicekit.hashing import HASH_ALGORITHMS
from services.catalog.geo import as_geometry
from services.catalog.subscriptions import COLLECTION as SUBSCRIPTION_COLLECTION
from services.catalog.subscriptions import SECRET_KEY as WEBHOOK_SECRET
from services.catalog.subscriptions import check_delivery

__all__ = [
    "COLLECTIONS",
    "KEY_PREFIX_COLLECTION",
    "SERVER_KEYS",
    "CollectionSpec",
    "SearchParams",
    "collection_spec",
    "namespace_prefixes",
]

KEY_PREFIX_COLLECTION = "data-record-key-prefix"

SERVER_KEYS = frozenset(
    {"id", "resource-type", "created", "updated", "created-by", "updated-by", "operations"}
)
"""Set by the server on every write; values sent by the caller are ignored."""

# Namespaces whose keys are part of a collection's own schema, so need no key-prefix resource.
_BUILT_IN_PREFIXES = frozenset({"resource", "model"})

_MD5 = re.compile(r"[0-9a-fA-F]{32}")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_PREFIX = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")

Check = Callable[[str, Any], None]


def _fail(name: str, expected: str, value: Any) -> None:
    raise InvalidInput(
        f"{name}: expected {expected}, got {type(value).__name__} {value!r:.60}",
        detail={"field": name},
    )


def _string(name: str, value: Any) -> None:
    if not isinstance(value, str):
        _fail(name, "a string", value)


def _non_empty_string(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        _fail(name, "a non-empty string", value)


def _strings(name: str, value: Any) -> None:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        _fail(name, "a list of strings", value)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _timestamp(name: str, value: Any) -> None:
    if not isinstance(value, str):
        _fail(name, "an ISO-8601 date string", value)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        _fail(name, "an ISO-8601 date with a time zone, e.g. 2026-01-02T03:04:05Z", value)


def _bytes(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        _fail(name, "an integer of 0 or more", value)


def _md5(name: str, value: Any) -> None:
    if not isinstance(value, str) or not _MD5.fullmatch(value):
        _fail(name, "32 hexadecimal digits (an MD5 sum)", value)


def _sha256(name: str, value: Any) -> None:
    if not isinstance(value, str) or not _SHA256.fullmatch(value):
        _fail(name, "64 hexadecimal digits (a SHA-256 digest)", value)


def _hash_algorithm(name: str, value: Any) -> None:
    if value not in HASH_ALGORITHMS:
        _fail(name, f"one of {', '.join(HASH_ALGORITHMS)}", value)


def _check_value(name: str, value: Any) -> None:
    if value is not True and not isinstance(value, str):
        _fail(name, "true or the key of the check value file", value)


def _location(name: str, value: Any) -> None:
    if not isinstance(value, list) or len(value) not in (2, 3) or not all(map(_number, value)):
        _fail(name, "[longitude, latitude] or [longitude, latitude, altitude] numbers", value)
    lon, lat = value[0], value[1]
    if not (-180 <= lon <= 180 and -90 <= lat <= 90):
        _fail(name, "longitude in [-180, 180] and latitude in [-90, 90]", value)


_GEOJSON_TYPES = frozenset(
    {"Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon"}
)
_GEOJSON_KEYS = frozenset({"type", "coordinates", "bbox"})


def _geometry(name: str, value: Any) -> None:
    if (
        not isinstance(value, dict)
        or value.get("type") not in _GEOJSON_TYPES
        or not isinstance(value.get("coordinates"), list)
    ):
        _fail(
            name,
            f'a GeoJSON geometry {{"type": one of {sorted(_GEOJSON_TYPES)}, "coordinates": […]}}',
            value,
        )
    if unknown := sorted(value.keys() - _GEOJSON_KEYS):
        raise InvalidInput(
            f"{name}: unknown keys {', '.join(unknown)} in a GeoJSON geometry",
            detail={"field": name},
        )
    polygons = {"Polygon": [value["coordinates"]], "MultiPolygon": value["coordinates"]}
    for polygon in polygons.get(value["type"], []):
        for ring in polygon if isinstance(polygon, list) else [None]:
            if not isinstance(ring, list) or len(ring) < 4 or ring[0] != ring[-1]:
                _fail(
                    name, "polygon rings of 4 or more positions, the last equal to the first", value
                )
    if as_geometry(value) is None:
        _fail(name, "a valid GeoJSON geometry (closed rings, no self-intersection)", value)


def _filter(name: str, value: Any) -> None:
    _string(name, value)
    try:
        parse_filter(value)
    except InvalidInput as error:
        raise InvalidInput(f"{name}: {error.message}", detail={"field": name}) from None


def _prefix(name: str, value: Any) -> None:
    if not isinstance(value, str) or not _PREFIX.fullmatch(value):
        _fail(name, "lower-case letters, digits and inner dashes, e.g. schema-org", value)


_COMMON: dict[str, Check] = {"name": _string, "description": _string, "tags": _strings}


@dataclass(frozen=True)
class CollectionSpec:
    """A collection: its typed attributes, which are required, and who may add to it."""

    name: str
    attributes: Mapping[str, Check]
    required: frozenset[str] = frozenset()
    admin_only_add: bool = False
    namespaced: bool = False
    """Whether `prefix:key` attributes need a data-record-key-prefix resource."""
    secrets: frozenset[str] = frozenset()
    """Attributes stored but never shown in any response (webhook secrets, secret keys)."""

    def validate(self, document: Mapping[str, Any]) -> None:
        """Raise InvalidInput naming the first missing or mistyped attribute."""
        for name in sorted(self.required - document.keys()):
            raise InvalidInput(f"{name}: required attribute is missing", detail={"field": name})
        for name, check in self.attributes.items():
            if name in document:
                check(name, document[name])


COLLECTIONS: Mapping[str, CollectionSpec] = {
    spec.name: spec
    for spec in (
        CollectionSpec(
            "data-record",
            {
                **_COMMON,
                "infrastructure-service": _non_empty_string,
                "timestamp": _timestamp,
                "bytes": _bytes,
                "content-type": _string,
                "md5sum": _md5,
                "location": _location,
                "geometry": _geometry,
                "resource:object": _string,
                "model:name": _non_empty_string,
                "model:version": _non_empty_string,
                "model:hash-algo": _hash_algorithm,
            },
            required=frozenset({"infrastructure-service"}),
            namespaced=True,
        ),
        CollectionSpec(
            "data-set",
            {
                **_COMMON,
                "data-object-filter": _filter,
                "data-record-filter": _filter,
                "module-filter": _filter,
            },
        ),
        CollectionSpec(
            SUBSCRIPTION_COLLECTION,
            {
                **_COMMON,
                "data-set": _non_empty_string,
                "collection": _non_empty_string,
                "filter": _filter,
                "delivery": check_delivery,
            },
            secrets=frozenset({WEBHOOK_SECRET}),
        ),
        CollectionSpec(
            "data-object",
            {
                **_COMMON,
                "subtype": _string,
                "object-type": _string,
                "state": _string,
                "bucket": _string,
                "object": _non_empty_string,
                "credential": _non_empty_string,
                "content-type": _string,
                "bytes": _bytes,
                "md5sum": _md5,
                "sha256": _sha256,
                "check-value": _check_value,
                "timestamp": _timestamp,
                "location": _location,
            },
            required=frozenset({"object", "credential", "bucket"}),
        ),
        CollectionSpec(
            "infrastructure-service",
            {**_COMMON, "subtype": _string, "endpoint": _non_empty_string, "region": _string},
            required=frozenset({"subtype", "endpoint"}),
        ),
        CollectionSpec(
            "credential",
            {
                **_COMMON,
                "subtype": _string,
                "parent": _non_empty_string,
                "access-key": _non_empty_string,
                "secret-key": _non_empty_string,
            },
            required=frozenset({"subtype", "parent", "access-key", "secret-key"}),
            secrets=frozenset({"secret-key"}),
        ),
        CollectionSpec(
            "data-record-key",
            {**_COMMON, "prefix": _prefix, "key": _non_empty_string, "subtype": _non_empty_string},
            required=frozenset({"name", "description", "prefix", "key", "subtype"}),
        ),
        CollectionSpec(
            KEY_PREFIX_COLLECTION,
            {**_COMMON, "prefix": _prefix, "uri": _non_empty_string},
            required=frozenset({"prefix", "uri"}),
            admin_only_add=True,
        ),
    )
}


def collection_spec(collection: str) -> CollectionSpec | None:
    return COLLECTIONS.get(collection)


def namespace_prefixes(document: Mapping[str, Any]) -> set[str]:
    """The prefixes of the document's top-level `prefix:key` attributes that need defining."""
    prefixes = {key.partition(":")[0] for key in document if ":" in key}
    return prefixes - _BUILT_IN_PREFIXES


@dataclass(frozen=True)
class SearchParams:
    """A CIMI search, from query or form parameters: `filter` may repeat (ANDed)."""

    filters: tuple[str, ...] = ()
    orderby: str | None = None
    select: tuple[str, ...] = ()
    first: int = 1
    last: int | None = None
    after: str | None = None

    @classmethod
    def parse(cls, pairs: list[tuple[str, str]]) -> SearchParams:
        values: dict[str, list[str]] = {}
        for key, value in pairs:
            values.setdefault(key, []).append(value)

        def one_int(name: str) -> int | None:
            given = values.get(name)
            if not given:
                return None
            try:
                return int(given[-1])
            except ValueError:
                raise InvalidInput(
                    f"{name}: expected an integer, got {given[-1]!r:.40}", detail={"field": name}
                ) from None

        orderby = ",".join(v for v in values.get("orderby", []) if v.strip()) or None
        first = one_int("first")
        after = values.get("after", [None])[-1] or None
        return cls(
            filters=tuple(v for v in values.get("filter", []) if v.strip()),
            orderby=orderby,
            select=_split(values.get("select", [])),
            first=1 if first is None else first,
            last=one_int("last"),
            after=after,
        )


def _split(values: list[str]) -> tuple[str, ...]:
    """Nuvla's `select=a,b` or repeated `select=a&select=b`; `*` selects everything."""
    names = [name.strip() for value in values for name in value.split(",")]
    names = [name for name in names if name]
    return () if "*" in names else tuple(dict.fromkeys(names))
