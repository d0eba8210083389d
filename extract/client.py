"""The Python SDK: the platform through its gateway, as a logged-in user.

    with Client() as extract:                       # https://localhost:8443, trusting the local CA
        extract.login_api_key(key, secret)
        extract.search("data-record", filter="bytes>100", orderby="timestamp:desc", last=10)
        object_id = extract.upload("spectrum.fits", object_key="runs/spectrum.fits")
        extract.download(object_id, "copy.fits")     # checked against the recorded sha256

Catalog calls go through the gateway (Nuvla's API and session cookie); the bytes of a
data-object go straight to the S3 endpoint the catalog presigns for, never through the catalog.
"""

from __future__ import annotations

import hashlib
import os
import ssl
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlencode

import httpx

from extract.localstack import StackHome

__all__ = ["DEFAULT_ENDPOINT", "ApiError", "Client", "IntegrityError"]

DEFAULT_ENDPOINT = "https://localhost:8443"
_CHUNK = 1024 * 1024

Progress = Callable[[int], None]
"""Called with the number of bytes moved since the last call."""


class ApiError(Exception):
    """The platform refused a request; `status` and `message` are what it answered."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class IntegrityError(Exception):
    """Downloaded bytes do not match the digest the catalog recorded."""


def _trust(ca_file: str | Path | None) -> ssl.SSLContext | bool:
    """The given CA file, else $EXTRACT_CA_FILE, else the local stack's CA, else the system's."""
    chosen = ca_file or os.environ.get("EXTRACT_CA_FILE")
    if not chosen and StackHome.from_env().ca_file.exists():
        chosen = StackHome.from_env().ca_file
    return ssl.create_default_context(cafile=str(chosen)) if chosen else True


def _raise_for(response: httpx.Response) -> None:
    if response.is_success or response.status_code == 303:
        return
    try:
        message = response.json().get("message", response.text)
    except ValueError:
        message = response.text or response.reason_phrase
    raise ApiError(response.status_code, message)


def _chunks(path: Path, progress: Progress | None) -> Iterator[bytes]:
    with path.open("rb") as source:
        while chunk := source.read(_CHUNK):
            if progress is not None:
                progress(len(chunk))
            yield chunk


class Client:
    def __init__(
        self,
        endpoint: str | None = None,
        *,
        ca_file: str | Path | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.endpoint = (endpoint or os.environ.get("EXTRACT_ENDPOINT") or DEFAULT_ENDPOINT).rstrip(
            "/"
        )
        trust = _trust(ca_file)
        self._api = httpx.Client(base_url=f"{self.endpoint}/api/", verify=trust, timeout=timeout)
        # Presigned transfers: no session cookie goes to the S3 endpoint.
        self._transfers = httpx.Client(verify=trust, timeout=timeout)
        self._session: str | None = None

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self._session is not None:
            self.logout()
        self._api.close()
        self._transfers.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._api.request(method, path, **kwargs)
        _raise_for(response)
        return response

    # --- session ---------------------------------------------------------------------------

    def _login(self, template: dict[str, str]) -> str:
        response = self._call("POST", "session", json={"template": template})
        self._session = response.json()["resource-id"]
        return self._session

    def login_api_key(self, key: str, secret: str) -> str:
        """Log in with an API key pair; returns the session id."""
        return self._login({"href": "session-template/api-key", "key": key, "secret": secret})

    def login_password(self, username: str, password: str) -> str:
        return self._login(
            {"href": "session-template/password", "username": username, "password": password}
        )

    def logout(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            self._call("DELETE", session)
            self._api.cookies.clear()

    def create_api_key(self, **fields: Any) -> tuple[str, str]:
        """A new API key pair of the logged-in user: (key id, secret); the secret is shown once."""
        template = {"href": "credential-template/generate-api-key", **fields}
        created = self._call("POST", "credential", json={"template": template}).json()
        return created["key"], created["secret"]

    def create_s3_key(self, **fields: Any) -> tuple[str, str, str]:
        """A new SkyStore S3 key pair of the logged-in user: (credential id, access key, secret
        key); the secret is shown once, and deleting the credential revokes the pair."""
        template = {"href": "credential-template/generate-s3-key", **fields}
        created = self._call("POST", "credential", json={"template": template}).json()
        return created["resource-id"], created["access-key"], created["secret-key"]

    # --- resources -------------------------------------------------------------------------

    def search(
        self,
        collection: str,
        *,
        filter: str | list[str] | None = None,
        orderby: str | None = None,
        first: int | None = None,
        last: int | None = None,
        select: str | None = None,
        aggregation: str | None = None,
    ) -> dict[str, Any]:
        """A Nuvla search; sent as a form-encoded PUT so long filters fit."""
        filters = [filter] if isinstance(filter, str) else list(filter or [])
        params = [("filter", text) for text in filters]
        for name, value in (
            ("orderby", orderby),
            ("first", first),
            ("last", last),
            ("select", select),
            ("aggregation", aggregation),
        ):
            if value is not None:
                params.append((name, str(value)))
        form = {"content-type": "application/x-www-form-urlencoded"}
        return self._call("PUT", collection, content=urlencode(params), headers=form).json()

    def get(self, resource_id: str) -> dict[str, Any]:
        return self._call("GET", resource_id).json()

    def add(self, collection: str, document: dict[str, Any]) -> str:
        """Add a resource; returns its id."""
        return self._call("POST", collection, json=document).json()["resource-id"]

    def edit(self, resource_id: str, changes: dict[str, Any]) -> dict[str, Any]:
        return self._call("PUT", resource_id, json=changes).json()

    def delete(self, resource_id: str) -> None:
        self._call("DELETE", resource_id)

    # --- data-objects ----------------------------------------------------------------------

    def upload(
        self,
        path: str | Path,
        *,
        object_key: str,
        bucket: str | None = None,
        content_type: str | None = None,
        progress: Progress | None = None,
        **fields: Any,
    ) -> str:
        """Make a data-object of the file, stream its bytes to S3 and mark it READY.

        The catalog records the file's size and sha256 as declared here, and `ready` refuses
        the object unless S3 holds exactly those bytes. Returns the data-object's id.
        """
        path = Path(path)
        size = path.stat().st_size
        template: dict[str, Any] = {
            "href": "data-object-template/generic",
            "object": object_key,
            "bytes": size,
            "sha256": _sha256_of(path),
            **fields,
        }
        if bucket is not None:
            template["bucket"] = bucket
        if content_type is not None:
            template["content-type"] = content_type
        resource_id = self.add("data-object", {"template": template})
        uri = self._call("POST", f"{resource_id}/upload").json()["uri"]
        headers = {"content-length": str(size)}
        if content_type is not None:
            headers["content-type"] = content_type
        put = self._transfers.put(uri, content=_chunks(path, progress), headers=headers)
        if not put.is_success:
            raise ApiError(put.status_code, f"S3 refused the upload: {put.text[:500]}")
        self._call("POST", f"{resource_id}/ready")
        return resource_id

    def download(
        self, resource_id: str, destination: str | Path, *, progress: Progress | None = None
    ) -> Path:
        """Stream a READY data-object to `destination`, checked against its recorded sha256;
        on a mismatch nothing is left at `destination`."""
        destination = Path(destination)
        document = self.get(resource_id)
        uri = self._call("POST", f"{resource_id}/download").json()["uri"]
        partial = destination.with_name(destination.name + ".part")
        digest = hashlib.sha256()
        try:
            with self._transfers.stream("GET", uri) as response, partial.open("wb") as target:
                if not response.is_success:
                    raise ApiError(response.status_code, "S3 refused the download")
                for chunk in response.iter_bytes(_CHUNK):
                    target.write(chunk)
                    digest.update(chunk)
                    if progress is not None:
                        progress(len(chunk))
            expected = document.get("sha256")
            if expected is not None and digest.hexdigest() != expected:
                raise IntegrityError(
                    f"{resource_id}: downloaded sha256 {digest.hexdigest()} is not the recorded "
                    f"{expected}"
                )
            partial.replace(destination)
        finally:
            partial.unlink(missing_ok=True)
        return destination


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    for chunk in _chunks(path, None):
        digest.update(chunk)
    return digest.hexdigest()
