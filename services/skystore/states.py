"""The lifecycle of buckets, objects and replicas: one transition table, checked on every move.

    pending ──complete──▶ ready ──overwrite / delete / evict──▶ pending_deletion ──▶ (removed)
       └────────abort / stale roll-back──────────────────────────▲

A pending row is an operation under way (nothing lists it); a pending_deletion row is garbage
whose physical bytes are still to be removed (nothing lists it either).
"""

from __future__ import annotations

from enum import StrEnum

from servicekit.errors import Conflict

__all__ = ["State", "check_transition"]


class State(StrEnum):
    PENDING = "pending"
    READY = "ready"
    PENDING_DELETION = "pending_deletion"


TRANSITIONS: frozenset[tuple[State, State]] = frozenset(
    {
        (State.PENDING, State.READY),
        (State.PENDING, State.PENDING_DELETION),
        (State.READY, State.PENDING_DELETION),
    }
)


def check_transition(what: str, current: str, target: State) -> None:
    """Raise Conflict unless `current` → `target` is in the table."""
    if (State(current), target) not in TRANSITIONS:
        raise Conflict(
            f"{what} is {current}; it cannot become {target}",
            code="OperationAborted",
            detail={"state": current, "target": str(target)},
        )
