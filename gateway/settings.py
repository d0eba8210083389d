"""The gateway's configuration: EXTRACT_GATEWAY_* environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from servicekit.settings import ServiceSettings, extract_home

__all__ = ["GatewaySettings"]


class GatewaySettings(ServiceSettings):
    """Every field reads `EXTRACT_GATEWAY_<FIELD>`; see ServiceSettings for the shared ones.

    The gateway always serves TLS: `tls_cert`/`tls_key` default to the local stack's
    certificate. Upstream URLs left empty are not routed (their prefixes answer 503).
    """

    model_config = SettingsConfigDict(env_prefix="EXTRACT_GATEWAY_", extra="ignore")

    port: int = Field(8443, description="TLS port to listen on")
    s3_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="TLS port for S3 clients, forwarded unchanged to skystore_url (SigV4 "
        "intact); 0 = off",
    )
    # Upstreams, by name; the routing table in routes.py maps path prefixes to these names.
    catalog_url: str = Field("http://127.0.0.1:8101", description="catalog (Nuvla API)")
    skystore_url: str = Field("http://127.0.0.1:8110", description="SkyStore S3 proxy")
    serving_url: str = Field("http://127.0.0.1:8105", description="model serving (OIP v1/v2)")
    semantic_url: str = Field("http://127.0.0.1:8106", description="semantic twin")
    scheduler_url: str = Field("http://127.0.0.1:8103", description="scheduler")
    staging_url: str = Field("http://127.0.0.1:8104", description="staging")
    locator_url: str = Field(
        "",
        description="SkyStore locator's internal API, where S3 key credentials are made; "
        "empty = credential-template/generate-s3-key answers 503 (not configured)",
    )
    locator_token: str = Field(
        "", description="file of the locator's bearer token; default keys/skystore-internal.token"
    )
    static_dir: str = Field(
        "", description="directory served at /app/; empty = clients/mobile when it exists"
    )

    identity_key: str = Field(
        "", description="ES256 key (PEM) signing identity tokens; default keys/identity.key.pem"
    )
    identity_token_ttl: float = Field(60.0, gt=0, description="seconds an identity token lives")
    signing_key: str = Field(
        "",
        description="ES256 key (PEM) signing critical responses; default keys/gateway-sign.key.pem",
    )

    connect_timeout: float = Field(2.0, gt=0, description="seconds to connect to an upstream")
    read_timeout: float = Field(30.0, gt=0, description="seconds between bytes from an upstream")
    write_timeout: float = Field(30.0, gt=0, description="seconds between bytes to an upstream")
    pool_size: int = Field(100, ge=1, description="keep-alive connections per upstream, at most")
    retries: int = Field(
        2, ge=0, description="retries of idempotent requests that failed to connect"
    )
    breaker_failures: int = Field(5, ge=1, description="consecutive failures that open a breaker")
    breaker_reset: float = Field(
        10.0, gt=0, description="seconds an open breaker refuses calls before one trial call"
    )
    health_interval: float = Field(5.0, gt=0, description="seconds between upstream health checks")

    rate_per_ip: float = Field(
        200.0, ge=0, description="requests/s one client address may make; 0 = unlimited"
    )
    burst_per_ip: float = Field(400.0, ge=1, description="requests one address may burst")
    rate_per_principal: float = Field(
        100.0, ge=0, description="requests/s one logged-in principal may make; 0 = unlimited"
    )
    burst_per_principal: float = Field(200.0, ge=1, description="requests a principal may burst")
    max_header_bytes: int = Field(
        16 * 1024, ge=1024, description="largest request header block; larger ones get 431"
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="origins browsers may call from (JSON list); empty = no cross-origin calls",
    )

    session_ttl: int = Field(
        24 * 3600, ge=60, description="seconds a session (cookie) lives after login"
    )
    admin_password: str = Field(
        "",
        description="password of user/admin (group/extract-admin), created at start; "
        "empty = no admin bootstrap",
    )
    oidc_jwks_url: str = Field(
        "", description="JWKS (URL or path) of an external ES256 token issuer; empty = none"
    )
    oidc_issuer: str = Field("", description="expected `iss` of external bearer tokens")
    oidc_audience: str = Field("", description="expected `aud` of external bearer tokens")

    def identity_key_location(self) -> Path:
        return Path(self.identity_key or extract_home() / "keys" / "identity.key.pem")

    def signing_key_location(self) -> Path:
        return Path(self.signing_key or extract_home() / "keys" / "gateway-sign.key.pem")

    def locator_token_location(self) -> Path:
        return Path(self.locator_token or extract_home() / "keys" / "skystore-internal.token")

    def tls_files(self) -> tuple[Path, Path]:
        """The certificate and key to serve: the configured ones, else the local stack's."""
        tls = extract_home() / "tls"
        cert = Path(self.tls_cert) if self.tls_cert else tls / "localhost.pem"
        key = Path(self.tls_key) if self.tls_key else tls / "localhost.key.pem"
        return cert, key

    def upstream_urls(self) -> dict[str, str]:
        return {
            "catalog": self.catalog_url,
            "skystore": self.skystore_url,
            "serving": self.serving_url,
            "semantic": self.semantic_url,
            "scheduler": self.scheduler_url,
            "staging": self.staging_url,
        }
