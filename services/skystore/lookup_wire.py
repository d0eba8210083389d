"""Object lookups over core NATS: how a proxy connected to NATS asks the locator for a record it
does not hold.

The REST lookup (`GET /buckets/{name}/objects/{key}`) costs the locator ~1 ms of CPU on this
class of machine, most of it uvicorn, the middleware stack and routing; the first read of a key
pays it. The same lookup as a NATS request costs a fraction of that: a proxy that hears lease
revocations (it is connected already) asks here first, and over REST when no locator answers
on NATS. Both answer the same record and grant the same lease.

Request: JSON `{"bucket", "key", "holder", "token"}` on LOOKUP_SUBJECT (queue group
LOOKUP_QUEUE), the token being the locator's internal bearer token. Answer: the REST answer's
body, its status in the STATUS_HEADER header and a granted lease in LEASE_HEADER. The subject
sits outside the SKYSTORE stream (`skystore.>`), so JetStream never answers in the locator's
place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from services.skystore.leases_wire import LEASE_HEADER, Lease

__all__ = ["LOOKUP_QUEUE", "LOOKUP_SUBJECT", "LookupAnswer", "LookupRequest"]

LOOKUP_SUBJECT = "skystore-lookup"
LOOKUP_QUEUE = "skystore-locator"
STATUS_HEADER = "x-skystore-status"


@dataclass(frozen=True)
class LookupRequest:
    bucket: str
    key: str
    holder: str | None
    token: str

    def encode(self) -> bytes:
        fields = {"bucket": self.bucket, "key": self.key, "holder": self.holder}
        return json.dumps({**fields, "token": self.token}, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, data: bytes) -> LookupRequest:
        """The request in `data`; ValueError naming what is wrong with it."""
        try:
            fields = json.loads(data)
        except ValueError as exc:
            raise ValueError(f"a lookup request must be a JSON object: {exc}") from None
        if not isinstance(fields, dict):
            raise ValueError("a lookup request must be a JSON object")
        for name in ("bucket", "key", "token"):
            if not isinstance(fields.get(name), str):
                raise ValueError(f"a lookup request needs {name!r} as a string")
        holder = fields.get("holder")
        if holder is not None and not isinstance(holder, str):
            raise ValueError("a lookup request's 'holder' is a string or null")
        return cls(fields["bucket"], fields["key"], holder, fields["token"])


@dataclass(frozen=True)
class LookupAnswer:
    status: int
    body: bytes
    lease: Lease | None = None

    def headers(self) -> dict[str, str]:
        headers = {STATUS_HEADER: str(self.status)}
        if self.lease is not None:
            headers[LEASE_HEADER] = self.lease.header()
        return headers

    @classmethod
    def of(cls, body: bytes, headers: dict[str, str] | None) -> LookupAnswer:
        """The answer carried by a reply's body and headers; ValueError if it is not one."""
        headers = headers or {}
        status = headers.get(STATUS_HEADER)
        if status is None or not status.isdigit():
            raise ValueError(f"a lookup answer without a status: {headers!r}")
        return cls(int(status), body, Lease.from_header(headers.get(LEASE_HEADER)))
