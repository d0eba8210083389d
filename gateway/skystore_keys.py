"""S3 key pairs for SkyStore, made and revoked through the locator's internal API over HTTP."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import httpx

from servicekit.errors import ServiceUnavailable, UpstreamError

__all__ = ["S3KeyPair", "SkyStoreKeys"]

NOT_CONFIGURED = (
    "S3 keys are not configured on this gateway: set EXTRACT_GATEWAY_LOCATOR_URL to the "
    "SkyStore locator and EXTRACT_GATEWAY_LOCATOR_TOKEN to its internal token file"
)


@dataclass(frozen=True)
class S3KeyPair:
    key_id: str
    secret: str


class SkyStoreKeys:
    """The locator's `/access-keys`; every failure to reach it is a 503 naming the locator.

    The token file is read at each call: the locator writes it on its first start, which may
    come after the gateway's.
    """

    def __init__(
        self,
        url: str,
        token_file: Path,
        *,
        timeout: httpx.Timeout,
    ) -> None:
        self.url = url.rstrip("/")
        self._token_file = token_file
        self._client = httpx.AsyncClient(timeout=timeout)

    async def aclose(self) -> None:
        await self._client.aclose()

    def _headers(self) -> dict[str, str]:
        if not self.url:
            raise ServiceUnavailable(NOT_CONFIGURED)
        try:
            token = self._token_file.read_text().strip()
        except OSError as exc:
            raise ServiceUnavailable(
                f"S3 keys: cannot read the locator token file {self._token_file} "
                f"({exc.strerror}); set EXTRACT_GATEWAY_LOCATOR_TOKEN"
            ) from None
        return {"Authorization": f"Bearer {token}"}

    async def _call(
        self, method: str, path: str, json: dict[str, str] | None = None
    ) -> httpx.Response:
        headers = self._headers()
        try:
            return await self._client.request(
                method, f"{self.url}{path}", headers=headers, json=json
            )
        except httpx.HTTPError as exc:
            raise ServiceUnavailable(
                f"S3 keys: the SkyStore locator at {self.url} does not answer "
                f"({type(exc).__name__}); try again later"
            ) from None

    @staticmethod
    def _unexpected(response: httpx.Response, doing: str) -> UpstreamError:
        if response.status_code == 401:
            return UpstreamError(
                f"S3 keys: the SkyStore locator refused the gateway's token while {doing}; "
                "check EXTRACT_GATEWAY_LOCATOR_TOKEN"
            )
        return UpstreamError(
            f"S3 keys: the SkyStore locator answered {response.status_code} while {doing}"
        )

    async def create(self, principal: str) -> S3KeyPair:
        """A new key pair whose requests SkyStore attributes to `principal`."""
        response = await self._call("POST", "/access-keys", json={"principal": principal})
        if response.status_code != 201:
            raise self._unexpected(response, "creating a key")
        body = response.json()
        return S3KeyPair(key_id=body["key_id"], secret=body["secret"])

    async def revoke(self, key_id: str) -> None:
        """Delete the key at the locator; one already gone there counts as revoked."""
        response = await self._call("DELETE", f"/access-keys/{key_id}")
        if response.status_code not in (204, 404):
            raise self._unexpected(response, f"revoking {key_id}")
