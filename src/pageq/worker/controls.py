"""A worker's cached view of its queues' controls (`<schema>.queues`), refreshed every second.

Queues without controls are claimed with the plain `claim` query; only when a queue has a concurrency or
rate limit or a weight does the worker use the controlled claim (a locked, counted transaction).
"""

from __future__ import annotations

from collections.abc import Sequence

from pageq.types import QueueControl


class QueueControls:
    """What to claim from: the unpaused queues, and whether the controlled claim is needed."""

    def __init__(self, queues: Sequence[str]) -> None:
        self.queues = list(queues)
        self.active: list[str] = self.queues  # unpaused queues, in the worker's order
        self.limited = False  # some active queue has a concurrency limit, a rate limit or a weight
        self.locked: list[str] = []  # active queues whose control row a claim must lock
        self.by_name: dict[str, QueueControl] = {}

    def add(self, queue: str) -> None:
        """Claim from one more queue (the webhook deliveries' queue, once webhooks exist)."""
        self.queues.append(queue)
        paused = queue in self.by_name and self.by_name[queue].paused
        self.active = self.active if paused else [*self.active, queue]

    def update(self, controls: Sequence[QueueControl]) -> None:
        by_name = {c.name: c for c in controls}
        if by_name == self.by_name:
            return
        self.by_name = by_name
        self.active = [q for q in self.queues if not (q in by_name and by_name[q].paused)]
        limited = [by_name[q] for q in self.active if q in by_name and by_name[q].limited]
        self.limited = bool(limited)
        self.locked = sorted(c.name for c in limited if c.concurrency is not None or c.rate_limit is not None)
