"""Tests for services/catalog/geo.py: which values are geometries, which filter terms are geo."""

from __future__ import annotations

from typing import Any

import pytest

from servicekit.cimi_filter import parse_filter
from services.catalog.geo import as_geometry, geo_comparisons


def test_lon_lat_pair_is_a_point() -> None:
    point = as_geometry([6.1, 46.2])
    assert point is not None
    assert (point.geom_type, point.x, point.y) == ("Point", 6.1, 46.2)


def test_geojson_polygon_is_a_geometry() -> None:
    square = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]}
    geometry = as_geometry(square)
    assert geometry is not None and geometry.geom_type == "Polygon"


@pytest.mark.parametrize(
    "value",
    [
        [1, 2, 3],
        [True, 1],
        "POINT (1 2)",
        None,
        {"type": "Polygon", "coordinates": "nonsense"},
        {"type": "Polygon", "coordinates": [[[0, 0], [1, 1], [1, 0], [0, 1], [0, 0]]]},
    ],
)
def test_anything_else_is_no_geometry(value: Any) -> None:
    assert as_geometry(value) is None


def test_geo_comparisons_finds_nested_geo_terms() -> None:
    tree = parse_filter("name='x' and (location intersects 'POINT(1 2)' or bytes>1)")
    assert [geo.attribute for geo in geo_comparisons(tree)] == ["location"]
