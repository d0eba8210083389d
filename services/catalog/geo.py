"""Geo filter terms (`intersects`, `disjoint`, `within`, `contains`) resolved to resource ids.

SQL cannot relate geometries, so each geo term is evaluated by shapely over the candidates SQL
narrows it to, exactly; the search then compiles the term as `id IN (those ids)`. For
`geometry` and `location` (tables.GEO_ATTRIBUTES) put_resource stores the bounding box of a
valid geometry, indexed: a term reads only the resources whose box can relate to the filter's
box (`intersects`: the boxes overlap; `within`: inside it; `contains`: around it); for
`disjoint`, a resource whose box does not overlap is disjoint without shapely, and only the
overlapping ones are read. For any other attribute, SQL narrows to objects and to `[lon, lat]`
points inside the filter's bounds.
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

from servicekit.cimi_filter import And, Filter, GeoComparison, Or
from services.catalog.sqlparts import JsonPath, per_dialect
from services.catalog.tables import catalog_resources, geo_box

__all__ = ["GEO_RELATIONS", "as_geometry", "boxed_candidates", "geo_comparisons", "geo_matches"]


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
    Elasticsearch's geo_shape). Exact, evaluated by shapely over every candidate SQL narrows
    them to (see the module docstring)."""
    path = JsonPath(catalog_resources.c.document, tuple(geo.attribute.split("/")))
    near = boxed_candidates(scope, geo)
    if near is not None:
        return await _boxed_matches(session, scope, geo, near)
    points = path.is_("array")
    if geo.op != "disjoint":  # a [lon, lat] point relating so lies in the filter's bounds
        west, south, east, north = geo.geometry.bounds
        lon, lat = (JsonPath(path.document, (*path.keys, n)).number for n in (0, 1))
        points = sa.and_(points, lon.between(west, east), lat.between(south, north))
    candidates = sa.select(catalog_resources.c.id, path.document[path.keys]).where(
        scope, sa.or_(path.is_("object"), points)
    )
    return frozenset(await _related(session, candidates, geo))


async def _related(
    session: AsyncSession, candidates: sa.Select[Any], geo: GeoComparison
) -> set[str]:
    relation = GEO_RELATIONS[geo.op]
    matches = set()
    for resource_id, value in await session.execute(candidates):
        geometry = as_geometry(value)
        if geometry is not None and relation(geometry, geo.geometry):
            matches.add(resource_id)
    return matches


def boxed_candidates(scope: ColumnElement[bool], geo: GeoComparison) -> sa.Select[Any] | None:
    """Ids and values of the resources in `scope` whose stored bounding box can relate to the
    filter's (for `disjoint`: whose box overlaps it); None if the attribute has no box."""
    box = geo_box(geo.attribute)
    if box is None:
        return None
    west, south, east, north = box
    w, s, e, n = geo.geometry.bounds
    stored = sa.func.box(sa.func.point(west, south), sa.func.point(east, north))
    bounds = [sa.literal(bound, sa.Float()) for bound in (w, s, e, n)]
    wanted = sa.func.box(sa.func.point(*bounds[:2]), sa.func.point(*bounds[2:]))
    # The GiST index over the box (PostgreSQL, migration 0002) finds the rows; the comparisons
    # are the exact condition on both backends.
    operator, exactly = {
        "within": ("<@", (west >= w, east <= e, south >= s, north <= n)),
        "contains": ("@>", (west <= w, east >= e, south <= s, north >= n)),
    }.get(geo.op, ("&&", (west <= e, east >= w, south <= n, north >= s)))
    condition = sa.and_(per_dialect(stored.op(operator)(wanted), sa.true()), *exactly)
    value = catalog_resources.c.document[geo.attribute]
    return sa.select(catalog_resources.c.id, value).where(scope, condition)


async def _boxed_matches(
    session: AsyncSession, scope: ColumnElement[bool], geo: GeoComparison, near: sa.Select[Any]
) -> frozenset[str]:
    matches = await _related(session, near, geo)
    if geo.op == "disjoint":  # a valid geometry whose box is apart is disjoint
        west = catalog_resources.c[f"{geo.attribute}_west"]
        overlapping = near.with_only_columns(catalog_resources.c.id)
        apart = sa.select(catalog_resources.c.id).where(
            scope, west.is_not(None), catalog_resources.c.id.not_in(overlapping)
        )
        matches |= set((await session.execute(apart)).scalars())
    return frozenset(matches)
