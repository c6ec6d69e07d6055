"""Typed wrappers of the monitoring queries (`sql/queries/stats.sql`), sans-I/O like `ops`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pageq.stats import Counts, Latency, MinuteStats, Percentiles, Totals, WorkerStats
from pageq.store.engine import Op, Rows
from pageq.types import JobState

ALL = "*"
"""The queue or task of a rollup row that covers all of them (never a valid name)."""


@dataclass(frozen=True)
class LiveRow:
    """Jobs of a queue and task in one state now (dead: the dead-letter queue)."""

    queue: str
    task: str
    state: JobState
    count: int
    oldest_due_age: float | None


@dataclass(frozen=True)
class FlowRow:
    """A rollup key's window counts, newest minute's timings and totals, with the rollups' bounds."""

    queue: str
    task: str
    window: Counts
    latency: Latency | None
    totals: Totals
    since: datetime | None
    rolled_until: datetime | None


@dataclass(frozen=True)
class SystemRow:
    server_version: str
    leader: str | None
    leader_expires_at: datetime | None
    since: datetime | None
    rolled_until: datetime | None
    workers: int


def _latency(timed: int, values: tuple[Any, ...]) -> Latency | None:
    if not timed or any(v is None for v in values):
        return None
    w50, w95, w99, r50, r95, r99 = (float(v) for v in values)
    return Latency(timed, Percentiles(w50, w95, w99), Percentiles(r50, r95, r99))


def rollup(now: datetime, settle: float, keep: float, max_minutes: int) -> Op[int]:
    params = {"now": now, "settle": settle, "keep": keep, "max_minutes": max_minutes}
    return Op("stats_rollup", params, lambda rows, _n: int(rows[0][0]), prepare=False)


def live(now: datetime) -> Op[list[LiveRow]]:
    def decode(rows: Rows, _n: int) -> list[LiveRow]:
        return [LiveRow(r[0], r[1], JobState(r[2]), int(r[3]), r[4]) for r in rows]

    return Op("stats_live", {"now": now}, decode)


def _flow_row(r: tuple[Any, ...]) -> FlowRow:
    window = Counts(*(int(v) for v in r[2:7]))
    totals = Totals(Counts(*(int(v) for v in r[14:19])), int(r[19]), float(r[20]), float(r[21]))
    return FlowRow(r[0], r[1], window, _latency(int(r[7]), r[8:14]), totals, r[22], r[23])


def flow(window_minutes: int) -> Op[list[FlowRow]]:
    return Op("stats_flow", {"window": window_minutes}, lambda rows, _n: [_flow_row(r) for r in rows])


_SAMPLED = (JobState.SCHEDULED, JobState.QUEUED, JobState.RUNNING, JobState.RETRYING, JobState.BLOCKED)


def _minute(r: tuple[Any, ...]) -> MinuteStats:
    jobs = None if r[14] is None else dict(zip(_SAMPLED, (int(v) for v in r[13:18]), strict=True))
    counts = Counts(*(int(v) for v in r[1:6]))
    return MinuteStats(r[0], counts, _latency(int(r[6]), r[7:13]), jobs, r[18])


def series(minutes: int, queue: str, task: str) -> Op[list[MinuteStats]]:
    params = {"minutes": minutes, "queue": queue, "task": task}
    return Op("stats_series", params, lambda rows, _n: [_minute(r) for r in rows])


def _worker(r: tuple[Any, ...], now: datetime, stale_after: float) -> WorkerStats:
    age = max((now - r[10]).total_seconds(), 0.0)
    return WorkerStats(
        id=r[0], host=r[1], pid=r[2], queues=tuple(r[3]), capacity=r[4], running=r[5], processed=int(r[6]),
        failed=int(r[7]), rss_bytes=r[8], started_at=r[9], last_heartbeat=r[10], heartbeat_age=age,
        stale=age > stale_after,
    )  # fmt: skip


def workers(now: datetime, stale_after: float) -> Op[list[WorkerStats]]:
    return Op("stats_workers", {}, lambda rows, _n: [_worker(r, now, stale_after) for r in rows])


def system(leader: str, seen_since: datetime) -> Op[SystemRow]:
    def decode(rows: Rows, _n: int) -> SystemRow:
        r = rows[0]
        return SystemRow(r[0], r[1], r[2], r[3], r[4], int(r[5]))

    return Op("stats_system", {"leader": leader, "seen_since": seen_since}, decode)
