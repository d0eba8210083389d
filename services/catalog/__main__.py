"""`python -m services.catalog`: serve the catalog with settings from the environment."""

from __future__ import annotations

from servicekit.serve import serve
from services.catalog.app import create_app
from services.catalog.settings import CatalogSettings


def main() -> None:
    settings = CatalogSettings()
    serve(lambda: create_app(settings), settings)


if __name__ == "__main__":
    main()
