"""Leader-only maintenance: one worker at a time rescues expired leases, promotes due jobs, prunes history."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar

from pageq.errors import DatabaseError
from pageq.periodic import fire_due
from pageq.store import Session, hookops, ops, secops, statsops
from pageq.store.engine import AsyncConn
from pageq.types import JobState
from pageq.worker.sweeps import Sweeps

if TYPE_CHECKING:
    from pageq.worker.daemon import Worker

log = logging.getLogger("pageq.maintenance")
T = TypeVar("T")
LEADER = "maintenance"
PRUNE_EVERY = 60.0
_SEAL_WARNED: set[str] = set()

# Rotation of the live-jobs partitions (see sql/migrations/0002_rotation.sql). Between two rotations dead
# tuples can pile up when a long transaction stops VACUUM, and every claim wades through them: ROTATE_JOBS
# bounds that pile. A rotation moves at most ROTATE_MAX_MOVE live jobs (a bigger backlog waits for the next
# try) and waits at most ROTATE_WAIT_MS for the partition's lock, which stalls claims meanwhile.
ROTATE_JOBS = 20_000
ROTATE_AGE = 60.0
ROTATE_MAX_MOVE = 10_000
ROTATE_WAIT_MS = 100

# Statistics rollups (sql/migrations/0009_stats.sql): a minute is rolled up once STATS_SETTLE seconds have
# passed since it ended (a finish that commits later is not counted), at most STATS_CATCH_UP minutes per
# step (after a pause), and STATS_KEEP seconds of minutes are kept.
STATS_SETTLE = 10.0
STATS_KEEP = 25 * 3600.0
STATS_CATCH_UP = 10
_ROLLUP_DUE: dict[str, datetime] = {}


Run = Callable[[ops.Op[T]], Awaitable[T]]
Fence = Callable[[], contextlib.AbstractAsyncContextManager[Run[Any]]]


class LostLead(Exception):
    """We do not hold the maintenance term (any more): the step stops there."""


class Leadership:
    """One worker's side of the maintenance leadership: terms in the `leader` table, fenced steps.

    A step runs its statements in a few transactions (`fenced`), each of which first takes or renews the term
    (`leader_acquire`); the row lock that renewal takes makes a candidate wait until that transaction ended,
    and a renewal that finds another holder stops the step (`LostLead`): the steps of two terms never
    overlap. A term ends when its TTL (3 intervals) passes without renewal, or at once when the leader's
    session is gone: the leader runs its steps on a dedicated connection (to the direct DSN) holding a
    session-level advisory lock, which a killed leader's server session drops, and a candidate that gets that
    lock takes the term over (behind a transaction pooler without a direct DSN: pooled transactions, the TTL
    only)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.store = worker.store
        self.ttl = worker.options.maintenance_interval * 3
        target = worker.app.database.listen_target
        self.session = Session(worker.store, target) if target else None
        self._generation = 0  # the session's connection that holds the advisory lock (0: none)
        self.leading = False
        self.term = 0
        self.first: float | None = None  # the server's clock at this step's first renewal
        self.last = 0.0  # and at its latest

    @property
    def _locked(self) -> bool:
        return self.session is not None and self._generation == self.session.generation

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncConn]:
        if self.session is None:
            async with self.store.atransaction() as conn:
                yield conn
        else:
            async with self.session.transaction() as conn:
                yield conn

    async def _renew(self, conn: AsyncConn) -> None:
        try_lock = self.session is not None and not self._locked
        op = ops.leader_acquire(LEADER, self.worker.id, self.worker.clock.now(), self.ttl,
                                try_lock=try_lock, idle=max(1.0, self.ttl))  # fmt: skip
        lead = await self.store.arun(op, conn)
        if lead.locked and self.session is not None:
            self._generation = self.session.generation
        if not lead.held:
            raise LostLead
        if not self.leading:
            self.leading = True
            self.term += 1
            why = "the leadership lock was free: no live leader session" if lead.locked else "no live term"
            log.info("leading maintenance: term %s/%d (%s)", self.worker.id, self.term, why)
        if self.first is None:
            self.first = lead.at
        self.last = lead.at

    @contextlib.asynccontextmanager
    async def fenced(self) -> AsyncIterator[Run[Any]]:
        """A transaction that first takes or renews our term (`LostLead` if another worker holds it), and
        runs statements in it."""
        async with self._transaction() as conn:
            await self._renew(conn)

            async def run(op: ops.Op[T]) -> T:
                return await self.store.arun(op, conn)

            yield run

    def begin(self) -> None:
        self.first = None

    async def end(self) -> None:
        """Close a step with one more renewal: the step ran, in the server's time, within [first, last]."""
        async with self.fenced():
            pass
        log.debug("maintenance step: term %s/%d from %.6f to %.6f", self.worker.id, self.term, self.first,
                  self.last)  # fmt: skip

    async def lost(self) -> None:
        """Another worker leads: let go of the advisory lock, so that its holder can take it."""
        if not self.leading:
            return
        log.info("no longer leading maintenance (term %s/%d)", self.worker.id, self.term)
        self.leading = False
        if self.session is not None and self._locked:
            self._generation = 0
            with contextlib.suppress(DatabaseError):
                await self.session.run(ops.leader_unlock(LEADER))

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()


@contextlib.asynccontextmanager
async def _unfenced(store: Any) -> AsyncIterator[Run[Any]]:
    yield store.arun


def _each(fence: Fence) -> Run[Any]:
    """Run each statement in a transaction of its own from ``fence`` (cleanups of many pages)."""

    async def run(op: ops.Op[T]) -> T:
        async with fence() as inside:
            result: T = await inside(op)
        return result

    return run


async def run(worker: Worker) -> None:
    """Try to lead every interval; while leading, run each maintenance step. The interval runs from the start
    of one try to the next, so a slow step does not space the rescues further apart."""
    interval = worker.options.maintenance_interval
    last_prune = 0.0
    lead = Leadership(worker)
    sweeps = Sweeps(worker.store)
    try:
        while True:
            began = time.monotonic()
            lead.begin()
            try:
                await step(worker, sweeps, lead.fenced)
                if time.monotonic() - last_prune > PRUNE_EVERY:
                    last_prune = time.monotonic()
                    await prune(worker, sweeps, lead.fenced)
                await lead.end()
                took = time.monotonic() - began
                if took > max(2 * interval, 1.0):
                    log.warning("maintenance step took %.1f s (interval %.1f s)", took, interval)
            except LostLead:
                await lead.lost()
            except DatabaseError as exc:
                log.warning("maintenance failed: %s", exc)
            worker.leading = lead.leading  # the worker's App.on handlers run while it leads
            pause = began + interval * random.uniform(0.8, 1.0) - time.monotonic()
            await asyncio.sleep(max(pause, interval * 0.1))
    finally:
        await lead.close()


async def step(worker: Worker, sweeps: Sweeps | None = None, fence: Fence | None = None) -> tuple[int, int]:
    """Rescue jobs whose lease expired and promote due ones, then the rest of the leader's duties; returns
    (retried, buried). ``fence`` opens each transaction of the step (the leader's term fences them; by
    default, statements run on the worker's pool)."""
    transaction = fence  # a periodic schedule fires in one transaction: the fence's, or its own
    fence = fence or (lambda: _unfenced(worker.store))
    now = worker.clock.now()
    sweeps = sweeps or Sweeps(worker.store)
    async with fence() as run:  # first: the term, and the rescuer
        await sweeps.watch(now, run)  # before the rescuer buries them: linked jobs whose lease expired
        retried, buried = await run(ops.rescue(now, crash_limit=worker.options.crash_limit))
        await run(ops.promote(now))
    if retried or buried:
        log.warning("rescued %d jobs with expired leases (%d dead)", retried, buried)
    await rotate(worker, fence)
    await history(worker, fence)
    async with fence() as run:
        await sweeps.resolve(now, run)
        if await run(ops.stats_stale(worker.app.schema)):
            log.info("refreshing the statistics of the jobs table")
            await run(ops.analyze_jobs())
    await listeners(worker, fence)
    if worker.app.periodics:
        await fire_due(worker.app, worker.store, now, transaction)
    await seal(worker, fence)
    await rollup(worker, fence)
    return retried, buried


async def listeners(worker: Worker, fence: Fence) -> int:
    """Forget event listeners whose process died (the audit trigger stops announcing what only they wanted);
    postponed when the audit table is busy."""
    try:
        async with fence() as run:
            gone: int = await run(hookops.sweep(worker.clock.now()))
        return gone
    except DatabaseError as exc:
        log.debug("sweeping event listeners postponed: %s", exc)
        return 0


async def rotate(worker: Worker, fence: Fence | None = None) -> int | None:
    """Rotate the live-jobs partitions when due; returns the jobs moved (None: not rotated this time)."""
    op = ops.rotate(ROTATE_JOBS, ROTATE_AGE, ROTATE_MAX_MOVE, ROTATE_WAIT_MS)
    try:
        async with (fence or (lambda: _unfenced(worker.store)))() as run:
            moved: int | None = await run(op)
    except DatabaseError as exc:  # the partition is busy (lock timeout): next time
        log.debug("rotation postponed: %s", exc)
        return None
    if moved is not None:
        log.debug("rotated the jobs partitions, %d live jobs moved", moved)
    return moved


async def history(worker: Worker, fence: Fence | None = None) -> int:
    """Create the coming history partitions and drop those past the retention; returns the number dropped."""
    fence = fence or (lambda: _unfenced(worker.store))
    now = worker.clock.now()
    async with fence() as run:
        await run(ops.history_prepare(now))
    before = now - timedelta(seconds=worker.options.retention)
    try:
        async with fence() as run:
            dropped: int = await run(ops.history_drop(before, ROTATE_WAIT_MS))
    except DatabaseError as exc:  # the table is busy (lock timeout): next time
        log.debug("dropping old history postponed: %s", exc)
        return 0
    if dropped:
        log.info("dropped %d history partitions older than %s", dropped, before.isoformat())
    return dropped


async def seal(worker: Worker, fence: Fence | None = None) -> None:
    """Seal the audit rows of ended transactions into the hash chain (a restricted role may not: skipped)."""
    try:
        async with (fence or (lambda: _unfenced(worker.store)))() as run:
            await run(secops.audit_seal(worker.id))
    except DatabaseError as exc:
        if worker.id not in _SEAL_WARNED:
            log.warning("cannot seal the audit trail (%s); run the leader as the owner or an admin role", exc)
            _SEAL_WARNED.add(worker.id)


async def rollup(worker: Worker, fence: Fence | None = None) -> int:
    """Roll up the minutes that have settled (one statement, skipped until the next minute is due); returns
    how many minutes it rolled up."""
    now = worker.clock.now()
    due = _ROLLUP_DUE.get(worker.id)
    if due is not None and now < due:
        return 0
    started = time.monotonic()
    try:
        async with (fence or (lambda: _unfenced(worker.store)))() as run:
            rolled: int = await run(statsops.rollup(now, STATS_SETTLE, STATS_KEEP, STATS_CATCH_UP))
    except DatabaseError as exc:  # try again in a minute, not at every step
        log.warning("rolling up statistics failed: %s", exc)
        _ROLLUP_DUE[worker.id] = now + timedelta(minutes=1)
        return 0
    if rolled:
        log.debug(
            "rolled up %d minutes of statistics in %.1f ms", rolled, 1000 * (time.monotonic() - started)
        )
    if rolled < STATS_CATCH_UP:  # caught up: nothing to do before the next minute has settled
        settled = now - timedelta(seconds=STATS_SETTLE)
        _ROLLUP_DUE[worker.id] = settled.replace(second=0, microsecond=0) + timedelta(
            minutes=1, seconds=STATS_SETTLE
        )
    return rolled


async def prune(worker: Worker, sweeps: Sweeps | None = None, fence: Fence | None = None) -> int:
    """Delete succeeded and cancelled jobs older than the retention; dead ones stay for the operator.

    Whole partitions go in `history`; this deletes what lies outside them (the default partition)."""
    run = _each(fence or (lambda: _unfenced(worker.store)))
    before = worker.clock.now() - timedelta(seconds=worker.options.retention)
    total = 0
    for state in (JobState.SUCCEEDED, JobState.CANCELLED):
        while (deleted := await run(ops.prune(state, before))) > 0:
            total += deleted
    await (sweeps or Sweeps(worker.store)).prune(worker.clock.now(), run=run)
    while await run(hookops.prune(before)) > 0:  # the webhook delivery log
        pass
    return total
