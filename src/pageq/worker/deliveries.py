"""Whether a worker serves the webhook deliveries' queue: when its queues name it, or - acting as the owner,
unless ``webhooks=False`` - from the moment a webhook exists (checked at start, on a ``!webhooks``
notification and every `CHECK_EVERY` seconds). A worker of an app without webhooks claims from its own queues
only: nothing changes for it."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from pageq.store import hookops
from pageq.webhooks.deliver import install
from pageq.webhooks.settings import QUEUE

if TYPE_CHECKING:
    from pageq.worker.daemon import Worker

log = logging.getLogger("pageq.worker")
CHECK_EVERY = 10.0


class Deliveries:
    """A worker's side of webhook deliveries (see the module's docstring)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.auto = worker.options.webhooks and worker.app.principal is None and QUEUE not in worker.queues
        self._next = 0.0
        if QUEUE in worker.queues:
            install(worker.app)

    def due(self) -> None:
        """Check at the next refresh (a webhook was created or enabled)."""
        self._next = 0.0

    async def check(self) -> None:
        """Start serving the deliveries' queue if a webhook (or a delivery) exists."""
        if not self.auto or QUEUE in self.worker.queues or time.monotonic() < self._next:
            return
        self._next = time.monotonic() + CHECK_EVERY
        if await self.worker._try(hookops.active()):
            install(self.worker.app)
            self.worker.queues.append(QUEUE)
            self.worker.controls.add(QUEUE)
            log.info("webhooks exist: worker %s delivers them too (queue %s)", self.worker.id, QUEUE)
