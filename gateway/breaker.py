"""A circuit breaker per upstream: closed → open after N failures → half-open trial → closed."""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum

__all__ = ["BreakerState", "CircuitBreaker"]


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    """Counts consecutive failures; once open, refuses calls for `reset_after` seconds, then
    lets one trial call through, whose outcome closes or re-opens it."""

    def __init__(
        self,
        *,
        failures: int,
        reset_after: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = failures
        self.reset_after = reset_after
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        self._state = BreakerState.CLOSED
        self._trial_running = False

    @property
    def state(self) -> BreakerState:
        if self._state is BreakerState.OPEN and self._clock() - self._opened_at >= self.reset_after:
            self._state = BreakerState.HALF_OPEN
        return self._state

    def retry_after(self) -> float:
        """Seconds until an open breaker lets a trial call through."""
        return max(0.0, self.reset_after - (self._clock() - self._opened_at))

    def allow(self) -> bool:
        """Whether a call may go out now; in half-open state only one call at a time may."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and not self._trial_running:
            self._trial_running = True
            return True
        return False

    def success(self) -> None:
        self._failures = 0
        self._trial_running = False
        self._state = BreakerState.CLOSED

    def failure(self) -> None:
        self._trial_running = False
        self._failures += 1
        if self._state is BreakerState.HALF_OPEN or self._failures >= self.threshold:
            self._state = BreakerState.OPEN
            self._opened_at = self._clock()

    def probe_succeeded(self) -> None:
        """A health check reached the upstream: an open breaker may try a call right away."""
        if self._state is BreakerState.OPEN:
            self._state = BreakerState.HALF_OPEN
