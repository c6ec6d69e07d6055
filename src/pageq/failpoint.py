"""Failpoints for crash tests: ``PAGEQ_FAILPOINT=name:action[@attempt][,name:action...]``; internal.

The variable is read once, at import. When it is unset, `ACTIVE` is False and callers skip `hit` entirely,
so production pays one boolean test per point. Actions:

- ``exit``: ``os._exit(137)`` at once, as a SIGKILL would (no cleanup, no flush, no rollback message);
- ``sleep=SECONDS``: block the calling thread that long (widens a race window);
- ``raise``: raise `FailpointError` (an ordinary error at that point).

``@N`` restricts a point to attempt N of the job (for a batch: its lowest attempt), so a crash on the first
attempt does not also kill the re-execution. Points: after_claim_commit, mid_handler (called by test
handlers), after_handler_before_ack, after_ack_commit, mid_retry_schedule, mid_dlq_move.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

POINTS = frozenset({
    "after_claim_commit", "mid_handler", "after_handler_before_ack", "after_ack_commit",
    "mid_retry_schedule", "mid_dlq_move",
})  # fmt: skip


class FailpointError(RuntimeError):
    """Raised by a failpoint whose action is ``raise``."""


@dataclass(frozen=True)
class Action:
    kind: str
    seconds: float = 0.0
    attempt: int | None = None


def parse(spec: str) -> dict[str, Action]:
    """``name:action[@attempt]`` items separated by commas; raises ValueError on a bad item."""
    found: dict[str, Action] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, action = item.partition(":")
        if name not in POINTS:
            raise ValueError(f"PAGEQ_FAILPOINT: unknown point {name!r}; known: {sorted(POINTS)}")
        action, _, attempt = action.partition("@")
        kind, _, value = action.partition("=")
        if kind not in ("exit", "sleep", "raise") or (kind == "sleep") != bool(value):
            raise ValueError(f"PAGEQ_FAILPOINT: bad action {action!r} (exit, sleep=SECONDS or raise)")
        found[name] = Action(kind, float(value or 0), int(attempt) if attempt else None)
    return found


_ACTIONS = parse(os.environ.get("PAGEQ_FAILPOINT", ""))
ACTIVE = bool(_ACTIONS)


def hit(name: str, attempt: int | None = None) -> None:
    """Trigger the point ``name`` if it is configured (and matches ``attempt``)."""
    action = _ACTIONS.get(name)
    if action is None or (action.attempt is not None and attempt != action.attempt):
        return
    if action.kind == "exit":
        os._exit(137)
    if action.kind == "sleep":
        time.sleep(action.seconds)
        return
    raise FailpointError(f"failpoint {name}")
