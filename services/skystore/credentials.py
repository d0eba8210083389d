"""A region's S3 endpoint, its key pair resolved from the region's credentials reference."""

from __future__ import annotations

from servicekit.credential_refs import resolve_credentials
from servicekit.infra.seaweed import S3Endpoint
from services.skystore.schemas import Region

__all__ = ["endpoint_of"]


def endpoint_of(region: Region) -> S3Endpoint:
    access, secret = resolve_credentials(region.credentials)
    return S3Endpoint(region.name, region.endpoint, access, secret)
