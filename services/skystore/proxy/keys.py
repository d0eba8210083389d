"""Access keys as the proxy sees them: fetched from the locator, cached for a short while.

An entry is fetched again once it is `ttl` seconds old (KEY_CACHE_SECONDS), so a key revoked
at the locator (`DELETE /access-keys/{id}`) is refused by every proxy within that time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from servicekit.errors import Forbidden, NotFound
from services.skystore.proxy.locator_client import LocatorClient
from services.skystore.schemas import AccessKey

__all__ = ["KeyCache"]


class KeyCache:
    def __init__(
        self,
        locator: LocatorClient,
        *,
        ttl: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._locator = locator
        self._ttl = ttl
        self._clock = clock
        self._keys: dict[str, tuple[float, AccessKey | None]] = {}

    async def get(self, key_id: str) -> AccessKey:
        """The key, else InvalidAccessKeyId (403); unknown ids are cached too, briefly."""
        now = self._clock()
        cached = self._keys.get(key_id)
        if cached is None or cached[0] <= now:
            try:
                key: AccessKey | None = await self._locator.access_key(key_id)
            except NotFound:
                key = None
            if len(self._keys) > 10_000:
                self._keys.clear()
            self._keys[key_id] = (now + self._ttl, key)
        else:
            key = cached[1]
        if key is None:
            raise Forbidden(
                "The AWS Access Key Id you provided does not exist in our records.",
                code="InvalidAccessKeyId",
                detail={"AWSAccessKeyId": key_id},
            )
        return key
