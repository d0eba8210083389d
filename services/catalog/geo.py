"""Geo filter terms (`intersects`, `disjoint`, `within`, `contains`) resolved to resource ids.

SQL cannot relate geometries, so each geo term is evaluated by shapely over the candidates SQL
narrows it to (objects, and `[lon, lat]` points inside the filter's bounds), exactly; the search
then compiles the term as `id IN (those ids)`.
"""

from __future__ import annotations

from typing import Any

import shapely
import shapely.geometry
import sqlalchemy as sa
from shapely.errors import ShapelyError
from shapely.geometry.base import BaseGeometry
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from services.catalog.filters import And, Filter, GeoComparison, Or
from services.catalog.sqlparts import JsonPath
from services.catalog.tables import catalog_resources

__all__ = ["GEO_RELATIONS", "as_geometry", "geo_comparisons", "geo_matches"]


def geo_comparisons(tree: Filter) -> list[GeoComparison]:
    if isinstance(tree, And | Or):
        return [geo for term in tree.terms for geo in geo_comparisons(term)]
    return [tree] if isinstance(tree, GeoComparison) else []


def as_geometry(value: Any) -> BaseGeometry | None:
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


GEO_RELATIONS = {
    "intersects": shapely.intersects,
    "disjoint": shapely.disjoint,
    "within": shapely.within,
    "contains": shapely.contains,
}


async def geo_matches(
    session: AsyncSession, scope: ColumnElement[bool], geo: GeoComparison
) -> frozenset[str]:
    """Ids of the resources in `scope` whose attribute holds a geometry in relation `geo.op`
    to `geo.geometry` (as the document's geometry relates to the filter's, as in
    Elasticsearch's geo_shape). Exact, evaluated by shapely over every candidate: SQL only
    narrows the candidates to resources where the attribute is an object or an array."""
    path = JsonPath(catalog_resources.c.document, tuple(geo.attribute.split("/")))
    points = path.is_("array")
    if geo.op != "disjoint":  # a [lon, lat] point relating so lies in the filter's bounds
        west, south, east, north = geo.geometry.bounds
        lon, lat = (JsonPath(path.document, (*path.keys, n)).number for n in (0, 1))
        points = sa.and_(points, lon.between(west, east), lat.between(south, north))
    candidates = sa.select(catalog_resources.c.id, path.document[path.keys]).where(
        scope, sa.or_(path.is_("object"), points)
    )
    relation = GEO_RELATIONS[geo.op]
    matches = set()
    for resource_id, value in await session.execute(candidates):
        geometry = as_geometry(value)
        if geometry is not None and relation(geometry, geo.geometry):
            matches.add(resource_id)
    return frozenset(matches)
