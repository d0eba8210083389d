"""Identity tokens for upstream calls: reused briefly, never near or past their expiry."""

from __future__ import annotations

import time

import jwt

from gateway.identity import IdentityTokens
from servicekit.security import Identity, JWKSet, SigningKey, verify_identity_token

TTL = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def _claims(token: str) -> dict[str, float]:
    return jwt.decode(token, options={"verify_signature": False})


def test_a_token_is_reused_for_a_tenth_of_its_lifetime_then_replaced() -> None:
    clock = Clock()
    tokens = IdentityTokens(SigningKey.generate(), ttl=TTL, issuer="gw", clock=clock)
    alice = Identity("user/alice", frozenset({"group/a"}))
    first = tokens.token_for(alice)
    clock.now += TTL / 10 - 0.01
    assert tokens.token_for(alice) == first
    clock.now += 0.02
    fresh = tokens.token_for(alice)
    assert fresh != first
    assert _claims(fresh)["exp"] > _claims(first)["exp"]


def test_a_reused_token_always_has_most_of_its_lifetime_left() -> None:
    clock = Clock()
    tokens = IdentityTokens(SigningKey.generate(), ttl=TTL, issuer="gw", clock=clock)
    alice = Identity("user/alice", frozenset())
    for _ in range(50):
        clock.now += 0.5
        token = tokens.token_for(alice)
        assert _claims(token)["exp"] - clock.now >= TTL * 0.9 - 1  # exp is whole seconds


def test_each_identity_gets_its_own_token_that_verifies() -> None:
    key = SigningKey.generate()
    tokens = IdentityTokens(key, ttl=TTL, issuer="gw")
    alice = Identity("user/alice", frozenset({"group/a"}))
    admin = Identity("user/alice", frozenset({"group/a", "group/extract-admin"}))
    assert tokens.token_for(alice) != tokens.token_for(admin)
    verified = verify_identity_token(tokens.token_for(admin), JWKSet.of(key), issuer="gw")
    assert verified.claims >= {"group/extract-admin"}
