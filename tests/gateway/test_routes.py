"""The routing table: prefixes to upstreams, longest first, prefix stripping."""

from __future__ import annotations

import pytest

from gateway.routes import DEFAULT_ROUTES, Route, RoutingTable


@pytest.mark.parametrize(
    ("path", "upstream"),
    [
        ("/api/data-record", "catalog"),
        ("/api", "catalog"),
        ("/v2/models/m/infer", "serving"),
        ("/v1/models/m:predict", "serving"),
        ("/sparql", "semantic"),
        ("/sparql-update", "semantic"),
        ("/graph-store", "semantic"),
        ("/twin/observations", "semantic"),
        ("/evacuation/routes", "semantic"),
        ("/scheduler/workflows", "scheduler"),
        ("/staging/jobs", "staging"),
    ],
)
def test_default_routes_send_each_prefix_to_its_service(path: str, upstream: str) -> None:
    route = RoutingTable(DEFAULT_ROUTES).match(path)
    assert route is not None
    assert route.upstream == upstream


@pytest.mark.parametrize("path", ["/apix", "/", "/v3/x", "/app-not", "/s3/bucket/key"])
def test_paths_outside_every_prefix_match_nothing(path: str) -> None:
    assert RoutingTable(DEFAULT_ROUTES).match(path) is None


def test_longest_prefix_wins() -> None:
    table = RoutingTable([Route("/api/", "catalog"), Route("/api/special/", "other")])
    assert table.match("/api/special/x").upstream == "other"  # type: ignore[union-attr]
    assert table.match("/api/x").upstream == "catalog"  # type: ignore[union-attr]


def test_strip_prefix_keeps_a_leading_slash() -> None:
    route = Route("/s3/", "skystore", strip_prefix=True)
    assert route.upstream_path("/s3/bucket/key") == "/bucket/key"
    assert route.upstream_path("/s3") == "/"
    assert Route("/api/", "catalog").upstream_path("/api/x") == "/api/x"


def test_prefix_must_be_absolute() -> None:
    with pytest.raises(ValueError, match="must start with '/'"):
        RoutingTable([Route("api/", "catalog")])
