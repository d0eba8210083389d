from __future__ import annotations

import dataclasses

import pytest

from servicekit.cloudevents import SIGNATURE, CloudEvent
from servicekit.errors import Unauthorized
from servicekit.security import JWKSet, SigningKey, sign_event, verify_event


def _event() -> CloudEvent:
    return CloudEvent(
        type="catalog.model.published",
        source="/catalog",
        subject="data-record/1",
        data={"name": "flood", "version": "2", "sha256": "ab" * 32},
        extensions={"traceparent": "00-" + "1" * 32 + "-" + "2" * 16 + "-01"},
    )


def test_a_signed_event_verifies_after_a_trip_through_json() -> None:
    key = SigningKey.generate()
    signed = sign_event(_event(), key)
    received = CloudEvent.from_json(signed.to_json())
    assert verify_event(received, JWKSet.of(key))["kid"] == key.kid


@pytest.mark.parametrize(
    "tamper",
    [
        lambda e: dataclasses.replace(e, data={**e.data, "version": "3"}),
        lambda e: dataclasses.replace(e, type="catalog.model.retracted"),
        lambda e: dataclasses.replace(e, extensions={**e.extensions, "traceparent": "x"}),
    ],
)
def test_any_change_to_a_signed_event_fails_verification(tamper) -> None:
    key = SigningKey.generate()
    received = CloudEvent.from_json(tamper(sign_event(_event(), key)).to_json())
    with pytest.raises(Unauthorized, match="does not verify"):
        verify_event(received, JWKSet.of(key))


def test_unsigned_or_foreign_signed_events_are_refused() -> None:
    key, other = SigningKey.generate(), SigningKey.generate()
    with pytest.raises(Unauthorized, match="no signature"):
        verify_event(_event(), JWKSet.of(key))
    with pytest.raises(Unauthorized, match="unknown key"):
        verify_event(sign_event(_event(), other), JWKSet.of(key))
    assert SIGNATURE not in _event().extensions
