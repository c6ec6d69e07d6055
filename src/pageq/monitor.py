"""`App.stats`: statistics of queues, workers and the system, for dashboards, `/metrics` and `pageq top`."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pageq.errors import DatabaseError, InvalidOptionError
from pageq.security.acl import Action
from pageq.stats import (
    SHOWN_STATES,
    Counts,
    MinuteStats,
    QueueSummary,
    Rates,
    SystemStats,
    Totals,
    WorkerStats,
)
from pageq.store import statsops
from pageq.store.engine import Op
from pageq.store.statsops import ALL, FlowRow, LiveRow
from pageq.types import check_int, check_name

if TYPE_CHECKING:
    from pageq.app import App

T = TypeVar("T")
LEADER = "maintenance"  # the leadership that maintenance takes (worker/maintenance.py)


@dataclass(frozen=True)
class _Plan(Generic[T]):
    """The statements of one read and how to assemble their results: run sync or async (no twin)."""

    key: tuple[object, ...] | None  # None: never cached
    ops: tuple[Op[Any], ...]
    build: Callable[[list[Any]], T]


class ReadCache:
    """The database rows behind `Stats` reads, kept ``ttl`` seconds and shared by an app and the apps acting
    for its principals (`App.acting_as`): a server with many viewers and scrapers reads each statement at
    most once a second, whoever asks; each viewer's grants filter the shared rows. A miss is fetched by one
    caller while the others wait for its result (single flight)."""

    def __init__(self, ttl: float = 1.0) -> None:
        self.ttl = ttl
        self._rows: dict[tuple[object, ...], tuple[float, list[Any]]] = {}
        self._lock = threading.Lock()
        self._fetching: dict[tuple[object, ...], threading.Lock] = {}

    def get(self, key: tuple[object, ...]) -> list[Any] | None:
        with self._lock:
            entry = self._rows.get(key)
        if entry is None or time.monotonic() - entry[0] > self.ttl:
            return None
        return entry[1]

    def put(self, key: tuple[object, ...], rows: list[Any], at: float) -> None:
        if self.ttl > 0:
            with self._lock:
                self._rows[key] = (at, rows)

    def fetch(self, key: tuple[object, ...], read: Callable[[], list[Any]]) -> list[Any]:
        """The rows of ``key``: cached, or read once by one of the threads that ask at the same time."""
        hit = self.get(key)
        if hit is not None:
            return hit
        with self._lock:
            flight = self._fetching.setdefault(key, threading.Lock())
        with flight:
            hit = self.get(key)  # fetched by the thread we waited for
            if hit is not None:
                return hit
            at = time.monotonic()
            rows = read()
            self.put(key, rows, at)
            return rows

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()


class Stats:
    """Statistics read from the live tables and the per-minute rollups the maintenance leader keeps.

    Results are cached for ``ttl`` seconds (1 by default), so that a dashboard, ``/metrics`` and ``pageq
    top`` served by one app share their reads. An app acting as a principal sees only what it may read.

    Example::

        for queue in app.stats.queues():
            print(queue.queue, queue.jobs[pageq.JobState.QUEUED], queue.rates.succeeded, queue.dead)
        chart = app.stats.series(minutes=60, queue="emails")
    """

    def __init__(self, app: App, ttl: float = 1.0, *, cache: ReadCache | None = None) -> None:
        self._app = app
        self._rows = cache if cache is not None else ReadCache(ttl)

    @property
    def cache(self) -> ReadCache:
        """The rows this app's reads share with the apps acting for its principals."""
        return self._rows

    @property
    def ttl(self) -> float:
        """Seconds a read is kept (shared with the apps acting for principals); 0 reads every time."""
        return self._rows.ttl

    @ttl.setter
    def ttl(self, seconds: float) -> None:
        self._rows.ttl = seconds

    # ----- the reads
    def queues(self, *, window: int = 5) -> list[QueueSummary]:
        """Every queue with jobs or statistics, by name, each with its tasks: jobs by state and the oldest
        due job's age now, rates over the last ``window`` rolled-up minutes, timings of the newest one, and
        totals."""
        return self._run(self._queues(window))

    async def queues_async(self, *, window: int = 5) -> list[QueueSummary]:
        """Async twin of `queues`."""
        return await self._arun(self._queues(window))

    def series(
        self, minutes: int = 60, *, queue: str | None = None, task: str | None = None
    ) -> list[MinuteStats]:
        """The last ``minutes`` rolled-up minutes, oldest first, of everything, one ``queue``, or one ``task``
        (of ``queue``, or of all queues); minutes without events are there with zero counts."""
        return self._run(self._series(minutes, queue, task))

    async def series_async(
        self, minutes: int = 60, *, queue: str | None = None, task: str | None = None
    ) -> list[MinuteStats]:
        """Async twin of `series`."""
        return await self._arun(self._series(minutes, queue, task))

    def workers(self, *, stale_after: float = 30.0) -> list[WorkerStats]:
        """Registered workers, oldest first; those silent for more than ``stale_after`` seconds are stale."""
        return self._run(self._workers(stale_after))

    async def workers_async(self, *, stale_after: float = 30.0) -> list[WorkerStats]:
        """Async twin of `workers`."""
        return await self._arun(self._workers(stale_after))

    def system(self, *, stale_after: float = 30.0) -> SystemStats:
        """Whether the database answers, who leads maintenance, how fresh the rollups are. Never raises for
        an unreachable database: ``database`` is then False and ``error`` says why."""
        started = time.monotonic()
        try:
            return self._system(self._run(self._system_plan(stale_after)), time.monotonic() - started)
        except DatabaseError as exc:
            return SystemStats(database=False, error=str(exc))

    async def system_async(self, *, stale_after: float = 30.0) -> SystemStats:
        """Async twin of `system`."""
        started = time.monotonic()
        try:
            row = await self._arun(self._system_plan(stale_after))
        except DatabaseError as exc:
            return SystemStats(database=False, error=str(exc))
        return self._system(row, time.monotonic() - started)

    # ----- running plans (cached)
    def _run(self, plan: _Plan[T]) -> T:
        store = self._app.store
        if plan.key is None:
            return plan.build([store.run(op) for op in plan.ops])
        return plan.build(self._rows.fetch(plan.key, lambda: [store.run(op) for op in plan.ops]))

    async def _arun(self, plan: _Plan[T]) -> T:
        rows = None if plan.key is None else self._rows.get(plan.key)
        if rows is None:
            at = time.monotonic()
            store = self._app.store
            rows = [await store.arun(op) for op in plan.ops]
            if plan.key is not None:
                self._rows.put(plan.key, rows, at)
        return plan.build(rows)

    def invalidate(self) -> None:
        """Forget cached results: the next reads go to the database."""
        self._rows.clear()

    # ----- plans
    def _queues(self, window: int) -> _Plan[list[QueueSummary]]:
        check_int("window", window, (1, 24 * 60))
        ops = (statsops.live(self._app.clock.now()), statsops.flow(window))
        return _Plan(("queues", window), ops, lambda results: self._summaries(results[0], results[1], window))

    def _series(self, minutes: int, queue: str | None, task: str | None) -> _Plan[list[MinuteStats]]:
        check_int("minutes", minutes, (1, 7 * 24 * 60))
        q = ALL if queue is None else check_name("queue", queue)
        t = ALL if task is None else check_name("task", task)
        self._check(q, t)
        return _Plan(("series", minutes, q, t), (statsops.series(minutes, q, t),), lambda r: r[0])

    def _workers(self, stale_after: float) -> _Plan[list[WorkerStats]]:
        if stale_after <= 0:
            raise InvalidOptionError(f"stale_after must be positive, got {stale_after!r}")
        op = statsops.workers(self._app.clock.now(), stale_after)
        return _Plan(("workers", stale_after), (op,), lambda r: r[0])

    def _system_plan(self, stale_after: float) -> _Plan[statsops.SystemRow]:
        seen_since = self._app.clock.now() - timedelta(seconds=stale_after)
        # never cached: it is the health check
        return _Plan(None, (statsops.system(LEADER, seen_since),), lambda r: r[0])

    # ----- assembling
    def _system(self, row: statsops.SystemRow, round_trip: float) -> SystemStats:
        now = self._app.clock.now()
        lag = None if row.rolled_until is None else max((now - row.rolled_until).total_seconds(), 0.0)
        current = row.leader_expires_at is not None and row.leader_expires_at > now
        return SystemStats(
            database=True, round_trip=round_trip, server_version=row.server_version, leader=row.leader,
            leader_expires_at=row.leader_expires_at, maintenance=current, stats_since=row.since,
            rolled_until=row.rolled_until, rollup_lag=lag, workers=row.workers,
        )  # fmt: skip

    def _summaries(self, live: list[LiveRow], flow: list[FlowRow], window: int) -> list[QueueSummary]:
        span = _covered(flow, window)
        by_key: dict[tuple[str, str], list[LiveRow]] = {}
        for row in live:
            by_key.setdefault((row.queue, row.task), []).append(row)
        flows = {(r.queue, r.task): r for r in flow}
        keys = set(by_key) | {key for key in flows if ALL not in key}
        tasks: dict[str, list[QueueSummary]] = {}
        for queue, task in sorted(keys):
            if self._allowed(queue, task):
                member = _summary(queue, task, by_key.get((queue, task), []), flows.get((queue, task)), span)
                tasks.setdefault(queue, []).append(member)
        return [self._queue(queue, members, flows.get((queue, ALL))) for queue, members in tasks.items()]

    def _queue(self, queue: str, members: list[QueueSummary], own: FlowRow | None) -> QueueSummary:
        """A queue's summary: the sums of its tasks' (those the principal may read); the queue's own
        timings only when it may read the whole queue (percentiles do not add up)."""
        jobs = {state: sum(m.jobs[state] for m in members) for state in SHOWN_STATES}
        ages = [m.oldest_due_age for m in members if m.oldest_due_age is not None]
        rates = Rates(*(sum(getattr(m.rates, f.name) for m in members) for f in fields(Rates)))
        totals = Totals(
            sum((m.totals.counts for m in members), Counts()), sum(m.totals.timed for m in members),
            sum(m.totals.wait_seconds for m in members), sum(m.totals.run_seconds for m in members),
        )  # fmt: skip
        latency = own.latency if own is not None and self._allowed(queue, ALL) else None
        return QueueSummary(
            queue, None, jobs, max(ages, default=None), rates, latency, totals, tuple(members)
        )

    def _allowed(self, queue: str, task: str) -> bool:
        guard = self._app.guard
        return guard is None or guard.decide(Action.READ, queue, task).allowed

    def _check(self, queue: str, task: str) -> None:
        guard = self._app.guard
        if guard is not None:
            guard.check(Action.READ, queue, task)


def _covered(flow: Sequence[FlowRow], window: int) -> float:
    """Seconds of rolled-up minutes the window's counts cover (less than the window just after the start)."""
    if not flow or flow[0].rolled_until is None:
        return 0.0
    until: datetime = flow[0].rolled_until
    start = until - timedelta(minutes=window)
    since = flow[0].since
    if since is not None and since > start:
        start = since
    return max((until - start).total_seconds(), 0.0)


def _summary(queue: str, task: str, live: list[LiveRow], flow: FlowRow | None, span: float) -> QueueSummary:
    jobs = dict.fromkeys(SHOWN_STATES, 0)
    for row in live:
        jobs[row.state] = jobs.get(row.state, 0) + row.count
    ages = [r.oldest_due_age for r in live if r.oldest_due_age is not None]
    if flow is None:
        return QueueSummary(queue, task, jobs, max(ages, default=None), Rates(), None, Totals())
    rates = flow.window.per_second(span)
    return QueueSummary(queue, task, jobs, max(ages, default=None), rates, flow.latency, flow.totals)
