"""The declarative routing table: which path prefix goes to which upstream, and how."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["DEFAULT_ROUTES", "Route", "RoutingTable"]

MiB = 1024 * 1024


@dataclass(frozen=True)
class Route:
    """Requests whose path is `prefix` or starts with it go to `upstream`.

    A prefix ending in "/" matches below it only ("/api/" does not match "/apix");
    `strip_prefix` removes the prefix (keeping a leading "/") before forwarding;
    `max_body` caps the request body (413 while it streams); `critical` routes sign their
    responses and want a device signature on requests that carry a body.
    """

    prefix: str
    upstream: str
    strip_prefix: bool = False
    max_body: int = 16 * MiB
    critical: bool = False

    @property
    def path_format(self) -> str:
        """The template naming this route in metrics, logs and spans (as Starlette's routes)."""
        return f"{self.prefix}{{path:path}}"

    def matches(self, path: str) -> bool:
        if self.prefix.endswith("/"):
            return path.startswith(self.prefix) or path == self.prefix.rstrip("/")
        return path.startswith(self.prefix)

    def upstream_path(self, path: str) -> str:
        if not self.strip_prefix:
            return path
        rest = path[len(self.prefix.rstrip("/")) :]
        return rest if rest.startswith("/") else f"/{rest}"


DEFAULT_ROUTES: tuple[Route, ...] = (
    Route("/api/", "catalog", max_body=4 * MiB),
    Route("/v2/", "serving", max_body=64 * MiB),
    Route("/v1/", "serving", max_body=64 * MiB),
    Route("/sparql", "semantic", max_body=4 * MiB),
    Route("/graph-store", "semantic", max_body=64 * MiB),
    Route("/twin/", "semantic", max_body=1 * MiB),
    Route("/evacuation/", "semantic", max_body=64 * 1024, critical=True),
    Route("/scheduler/", "scheduler", max_body=4 * MiB),
    Route("/staging/", "staging", max_body=4 * MiB),
)


class RoutingTable:
    """Routes tried longest prefix first, so a specific route wins over a general one."""

    def __init__(self, routes: Iterable[Route]) -> None:
        self.routes = sorted(routes, key=lambda route: len(route.prefix), reverse=True)
        for route in self.routes:
            if not route.prefix.startswith("/"):
                raise ValueError(f"route prefix {route.prefix!r} must start with '/'")

    def match(self, path: str) -> Route | None:
        for route in self.routes:
            if route.matches(path):
                return route
        return None

    def upstream_names(self) -> set[str]:
        return {route.upstream for route in self.routes}
