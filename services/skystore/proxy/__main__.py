"""`python -m services.skystore.proxy [--region local:edge]`: serve one region's S3 proxy."""

from __future__ import annotations

import argparse

from servicekit.serve import serve
from services.skystore.proxy.app import create_app
from services.skystore.settings import ProxySettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.skystore.proxy")
    parser.add_argument(
        "--region", help="the region served (default EXTRACT_SKYSTORE_PROXY_REGION)"
    )
    parser.add_argument("--port", type=int, help="port (default EXTRACT_SKYSTORE_PROXY_PORT)")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("region", args.region), ("port", args.port)) if v is not None}
    settings = ProxySettings(**overrides)
    serve(lambda: create_app(settings), settings)


if __name__ == "__main__":
    main()
