"""The circuit breaker's transitions, on an injected clock."""

from __future__ import annotations

from gateway.breaker import BreakerState, CircuitBreaker


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker(failures=3, reset_after=10, clock=clock)


def test_opens_after_consecutive_failures_only() -> None:
    breaker = _breaker(Clock())
    breaker.failure()
    breaker.failure()
    breaker.success()
    breaker.failure()
    breaker.failure()
    assert breaker.state is BreakerState.CLOSED
    breaker.failure()
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allow()


def test_half_open_after_the_reset_time_lets_one_trial_through() -> None:
    clock = Clock()
    breaker = _breaker(clock)
    for _ in range(3):
        breaker.failure()
    clock.now = 9.9
    assert not breaker.allow()
    assert breaker.retry_after() > 0
    clock.now = 10
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()
    assert not breaker.allow()  # one trial at a time


def test_a_failed_trial_reopens_and_a_good_one_closes() -> None:
    clock = Clock()
    breaker = _breaker(clock)
    for _ in range(3):
        breaker.failure()
    clock.now = 10
    assert breaker.allow()
    breaker.failure()
    assert breaker.state is BreakerState.OPEN
    clock.now = 20
    assert breaker.allow()
    breaker.success()
    assert breaker.state is BreakerState.CLOSED


def test_a_good_health_probe_ends_the_wait() -> None:
    breaker = _breaker(Clock())
    for _ in range(3):
        breaker.failure()
    breaker.probe_succeeded()
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allow()
