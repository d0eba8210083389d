"""The platform's OpenAPI document: every upstream's paths as the gateway routes them, merged.

Each upstream's component schemas are renamed `<upstream>.<name>` (and every `$ref` with
them), so two services may both call a schema `Error`. Paths the routing table would not send
to the upstream that documents them are left out, as are upstreams that do not answer.
"""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Callable
from typing import Any

from gateway.routes import RoutingTable
from gateway.upstreams import Upstream, UpstreamFailure, Upstreams

__all__ = ["MergedOpenAPI"]

_CACHE_SECONDS = 30.0
_COMPONENT_KINDS = ("schemas", "parameters", "responses", "requestBodies")


def _rename_refs(node: Any, upstream: str) -> Any:
    if isinstance(node, dict):
        renamed = {}
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str) and value.startswith("#/components/"):
                _, _, kind, name = value.split("/", 3)
                renamed[key] = f"#/components/{kind}/{upstream}.{name}"
            else:
                renamed[key] = _rename_refs(value, upstream)
        return renamed
    if isinstance(node, list):
        return [_rename_refs(item, upstream) for item in node]
    return node


def _public_path(path: str, upstream: str, table: RoutingTable) -> str | None:
    """Where clients reach upstream `path` through the gateway, or None when they cannot."""
    for route in table.routes:
        if route.upstream != upstream:
            continue
        public = route.prefix.rstrip("/") + path if route.strip_prefix else path
        if table.match(public) is route and route.upstream_path(public) == path:
            return public
    return None


class MergedOpenAPI:
    def __init__(
        self,
        own: Callable[[], dict[str, Any]],
        upstreams: Upstreams,
        table: RoutingTable,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._own = own
        self.upstreams = upstreams
        self.table = table
        self._clock = clock
        self._cached: tuple[float, dict[str, Any]] | None = None

    async def document(self) -> dict[str, Any]:
        if self._cached is not None and self._clock() - self._cached[0] < _CACHE_SECONDS:
            return self._cached[1]
        wanted = [u for u in self.upstreams if u.name in self.table.upstream_names()]
        fetched = await asyncio.gather(*(self._fetch(u) for u in wanted))
        merged = copy.deepcopy(self._own())
        merged["info"] = {"title": "EXTRACT platform", "version": merged["info"]["version"]}
        for upstream, document in zip(wanted, fetched, strict=True):
            if document is not None:
                self._merge(merged, upstream.name, document)
        self._cached = (self._clock(), merged)
        return merged

    async def _fetch(self, upstream: Upstream) -> dict[str, Any] | None:
        try:
            status, body = await upstream.status_of("/openapi.json", within=5.0)
            document = json.loads(body) if status == 200 else None
        except (UpstreamFailure, ValueError):
            return None
        return document if isinstance(document, dict) else None

    def _merge(self, merged: dict[str, Any], upstream: str, document: dict[str, Any]) -> None:
        document = _rename_refs(document, upstream)
        paths = merged.setdefault("paths", {})
        for path, operations in document.get("paths", {}).items():
            public = _public_path(path, upstream, self.table)
            if public is None:
                continue
            target = paths.setdefault(public, {})
            for method, operation in operations.items():
                target.setdefault(method, operation)  # the gateway's own operations win
        components = merged.setdefault("components", {})
        for kind in _COMPONENT_KINDS:
            for name, value in document.get("components", {}).get(kind, {}).items():
                components.setdefault(kind, {})[f"{upstream}.{name}"] = value
