"""The dispatcher's share of leader-only maintenance: settle what no transaction settled, and clean up what
finished jobs leave behind. Not public API.

Every call reads a bounded page (at most `PAGE` rows, resuming after cursors kept here), so a sweep costs
the same whether ten or ten million jobs are blocked: its cost follows the work to do, not the backlog.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from pageq.store import Store, dispatch

Run = Callable[[Any], Awaitable[Any]]

PAGE = 500  # parents, groups and watched jobs per sweep (each second)
PRUNE_PAGE = 5000  # unique keys and dependencies per cleanup page
PRUNE_PAGES = 20  # cleanup pages per prune (each minute)


class Sweeps:
    """The leader's cursors through the dispatcher's tables, and the steps that advance them."""

    def __init__(self, store: Store, page: int | None = None, prune_page: int | None = None) -> None:
        self.store = store
        self.page = page or PAGE
        self.prune_page = prune_page or PRUNE_PAGE
        self.cursors = dispatch.Cursors()

    async def watch(self, now: datetime, run: Run | None = None) -> int:
        """Before the rescuer: watch the linked jobs it may bury (their dependents wait for the sweep).
        ``run`` executes each statement (the leader's fenced transaction; by default the store's pool)."""
        return int(await (run or self.store.arun)(dispatch.watch_expired(now)))

    async def resolve(self, now: datetime, run: Run | None = None) -> int:
        """Settle watched jobs that finished and one page of parents and groups; returns jobs cancelled."""
        op = dispatch.resolve_sweep(now, self.cursors, self.page)
        self.cursors, cancelled = await (run or self.store.arun)(op)
        return int(cancelled)

    async def prune(self, now: datetime, pages: int = PRUNE_PAGES, run: Run | None = None) -> int:
        """Delete expired unique keys, then up to ``pages`` pages of orphans; returns rows deleted."""
        run = run or self.store.arun
        total = 0
        while (deleted := await run(dispatch.prune_keys(now, self.prune_page))) > 0:
            total += deleted
            if deleted < self.prune_page:
                break
        for _ in range(pages):
            self.cursors, deleted = await run(dispatch.prune_orphans(self.cursors, self.prune_page))
            total += deleted
            if self.cursors.key is None and self.cursors.child is None:
                break
        return total
