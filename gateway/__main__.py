"""`python -m gateway`: serve the gateway over TLS (never clear text) with settings from the env."""

from __future__ import annotations

import os

from gateway.app import create_app
from gateway.settings import GatewaySettings
from servicekit.security import WeakCertificateError
from servicekit.serve import serve


def main() -> None:
    # The gateway is the edge: X-Forwarded-* from clients are not to be believed unless an
    # operator names the load balancers in front of it.
    os.environ.setdefault("FORWARDED_ALLOW_IPS", "")
    settings = GatewaySettings()
    cert, key = settings.tls_files()
    # serve() speaks TLS when both files are named; the gateway has no clear-text mode.
    tls = settings.model_copy(update={"tls_cert": str(cert), "tls_key": str(key)})
    try:
        serve(lambda: create_app(tls), tls)
    except (WeakCertificateError, FileNotFoundError) as exc:
        raise SystemExit(f"gateway: cannot serve TLS: {exc}") from None


if __name__ == "__main__":
    main()
