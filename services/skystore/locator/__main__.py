"""`python -m services.skystore.locator`: serve the locator with settings from the environment."""

from __future__ import annotations

from servicekit.serve import serve
from services.skystore.locator.app import create_app
from services.skystore.settings import LocatorSettings


def main() -> None:
    settings = LocatorSettings()
    serve(lambda: create_app(settings), settings)


if __name__ == "__main__":
    main()
