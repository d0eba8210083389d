"""The locator: SkyStore's location database and its internal REST API for the proxies."""
