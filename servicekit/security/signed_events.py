"""ES256 signatures on CloudEvents that drive automated decisions (model versions, hazards,
placements): the detached JWS travels in the event's `signature` extension attribute and
covers the event's JSON without it."""

from __future__ import annotations

import dataclasses
from typing import Any

from servicekit.cloudevents import SIGNATURE, CloudEvent
from servicekit.errors import Unauthorized
from servicekit.security.jws import sign_detached, verify_detached
from servicekit.security.keys import JWKSet, SigningKey

__all__ = ["sign_event", "verify_event"]


def _unsigned(event: CloudEvent) -> CloudEvent:
    extensions = {k: v for k, v in event.extensions.items() if k != SIGNATURE}
    return dataclasses.replace(event, extensions=extensions)


def sign_event(event: CloudEvent, key: SigningKey) -> CloudEvent:
    """A copy of `event` carrying the signature of everything else in it."""
    unsigned = _unsigned(event)
    signature = sign_detached(unsigned.to_json(), key)
    return dataclasses.replace(unsigned, extensions={**unsigned.extensions, SIGNATURE: signature})


def verify_event(event: CloudEvent, jwks: JWKSet) -> dict[str, Any]:
    """The signature's protected header when `event` is signed, unaltered, by a key of `jwks`;
    Unauthorized naming what is wrong otherwise."""
    signature = event.extensions.get(SIGNATURE)
    if not isinstance(signature, str):
        raise Unauthorized(f"event {event.id} carries no signature")
    return verify_detached(_unsigned(event).to_json(), signature, jwks)
