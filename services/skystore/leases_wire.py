"""How the locator and the proxies speak about read leases on object records.

A proxy that caches object records subscribes, on core NATS, to its own revocation subject and
sends its holder id with every lookup; the locator answers a granted lease in the
`x-skystore-lease` header (`<seconds>;<seq>`). Before a write to a key is acknowledged, the
locator sends a revocation to every holder of a live lease on that key and waits for the reply
(or for the lease to run out). The subjects sit outside the SKYSTORE stream (`skystore.>`), so
JetStream never answers a revocation in the holder's place.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

__all__ = ["LEASE_HEADER", "Lease", "Revocation", "revocation_subject"]

LEASE_HEADER = "x-skystore-lease"
_SUBJECT_PREFIX = "skystore-lease."


def revocation_subject(holder: str) -> str:
    return _SUBJECT_PREFIX + holder


@dataclass(frozen=True)
class Lease:
    """A read lease on one key's record: valid `seconds` from when it was asked for; `seq` orders
    it against revocations (a revocation with a greater seq was sent after it was granted)."""

    seconds: float
    seq: int

    def header(self) -> str:
        return f"{self.seconds:g};{self.seq}"

    @classmethod
    def from_header(cls, value: str | None) -> Lease | None:
        if not value:
            return None
        seconds, _, seq = value.partition(";")
        return cls(float(seconds), int(seq))


@dataclass(frozen=True)
class Revocation:
    """The record of `bucket`/`key` changed: records leased before `seq` are stale."""

    bucket: str
    key: str
    seq: int

    def encode(self) -> bytes:
        return json.dumps({"bucket": self.bucket, "key": self.key, "seq": self.seq}).encode()

    @classmethod
    def decode(cls, data: bytes) -> Revocation:
        fields = json.loads(data)
        return cls(str(fields["bucket"]), str(fields["key"]), int(fields["seq"]))
