"""Nuvla's create-from-template: `{"template": {"href": "<collection>-template/<name>", …}}`.

The template's fields are merged into the resource, the href decides the subtype; collections
without templates take their fields directly, as do templated ones given no template.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from servicekit.errors import InvalidInput

__all__ = ["TEMPLATES", "expand"]

TEMPLATES: Mapping[str, Mapping[str, Mapping[str, Any]]] = {
    "data-object": {
        "data-object-template/generic": {"subtype": "generic"},
        "data-object-template/public": {"subtype": "public"},
    },
    "infrastructure-service": {"infrastructure-service-template/generic": {}},
    "credential": {
        "credential-template/infrastructure-service-minio": {
            "subtype": "infrastructure-service-minio"
        },
    },
}


def expand(collection: str, body: Mapping[str, Any]) -> dict[str, Any]:
    """The resource described by `body`, its template (if any) merged in."""
    known = TEMPLATES.get(collection)
    if known is None or "template" not in body:
        return dict(body)
    template = body["template"]
    href = template.get("href") if isinstance(template, Mapping) else None
    if not isinstance(template, Mapping) or href not in known:
        raise InvalidInput(
            f"template.href: expected one of {', '.join(known)}, got {href!r:.80}",
            detail={"field": "template.href"},
        )
    fields = {key: value for key, value in template.items() if key != "href"}
    resource = {key: value for key, value in body.items() if key != "template"}
    return {**resource, **fields, **known[href]}
