"""The workloads W1-W6 of the performance issue, the same for every system.

Each workload runs in a fresh database, and returns a flat dict of metrics plus `check` (lost / doubled /
unexpected ids, from the workers' records) and `rejected` (any of those non-zero).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import recorder
from bench.harness import (
    ROOT,
    BenchError,
    DbSnapshot,
    Workers,
    child_env,
    connect,
    fresh_database,
    percentiles,
    python_module,
    snapshot,
    stop_processes,
    verify,
)
from bench.systems.base import System

SETTLE = 0.3  # after the last expected record: time for a doubled execution to show up (> flush interval)
PRODUCER_ID_SPAN = 1_000_000_000_000


@dataclass
class Options:
    """Sizes (already scaled) and shapes of the workloads."""

    scale: float = 1.0
    jobs: int = 50_000  # W1, W2
    w3_rate: float = 200.0
    w3_seconds: float = 20.0
    w4_seconds: float = 30.0
    w4_producers: int = 1
    w4_workers: int = 1
    producer_batch: int = 100
    backlog_cap: int = 20_000
    w5_jobs: int = 1_000_000
    w5_max_seconds: float = 900.0
    w6_before: float = 30.0
    w6_held: float = 60.0
    w6_after: float = 60.0

    @classmethod
    def scaled(cls, scale: float, **overrides: Any) -> Options:
        base = cls(**overrides)
        return cls(
            scale=scale,
            jobs=max(20, round(base.jobs * scale)),
            w3_rate=base.w3_rate,
            w3_seconds=max(0.5, base.w3_seconds * scale),
            w4_seconds=max(1.0, base.w4_seconds * scale),
            w4_producers=base.w4_producers,
            w4_workers=base.w4_workers,
            producer_batch=base.producer_batch,
            backlog_cap=base.backlog_cap,
            w5_jobs=max(200, round(base.w5_jobs * scale)),
            w5_max_seconds=base.w5_max_seconds,
            w6_before=max(1.0, base.w6_before * scale),
            w6_held=max(1.0, base.w6_held * scale),
            w6_after=max(1.0, base.w6_after * scale),
        )


@dataclass
class Bench:
    """One system in one run: where to make databases and keep records."""

    system: System
    admin_dsn: str
    folder: Path
    run: int
    options: Options
    log: Callable[[str], None] = print
    databases: list[str] = field(default_factory=list)

    def database(self, workload: str) -> str:
        name = f"bench_{self.system.name}_{workload}_r{self.run}".lower().replace("-", "_")
        dsn = fresh_database(self.admin_dsn, name)
        self.databases.append(name)
        self.system.install(dsn)
        return dsn

    def workers(self, dsn: str, n: int, tag: str) -> Workers:
        return Workers(self.system, dsn, n, self.folder, f"{self.system.name}-{tag}-r{self.run}").start()

    def drain_timeout(self, jobs: int) -> float:
        return 120.0 + jobs / 200


# ----- helpers
async def _enqueue(system: System, dsn: str, ids: Sequence[int]) -> tuple[int, int]:
    """Enqueue `ids` in one call; returns (started_ns, returned_ns)."""
    async with system.producer(dsn) as producer:
        started = recorder.now_ns()
        await producer.enqueue_many(ids, started)
        return started, recorder.now_ns()


async def _warm(system: System, dsn: str, workers: Workers, limit: int = 100) -> range:
    """Send single jobs (ids -1, -2, ...) until every worker process has run one; returns their ids."""
    sent = 0
    deadline = time.monotonic() + 120
    async with system.producer(dsn) as producer:
        while True:
            workers.check()
            per = workers.per_process()
            done = sum(per)
            if done >= sent and (all(per) or sent >= limit) and sent:
                return range(-sent, 0)
            if time.monotonic() > deadline:
                raise BenchError(f"{system.name}: workers not ready after 120 s ({per}, sent {sent})")
            if done >= sent:
                sent += 1
                await producer.enqueue_one(-sent, recorder.now_ns())
            await asyncio.sleep(0.01)


def _finish(workers: Workers, expected: Sequence[range]) -> tuple[list[tuple[int, int, int]], dict[str, Any]]:
    """Let doubles show up, stop the workers, and check every expected id ran exactly once."""
    time.sleep(SETTLE)
    workers.stop()
    records = workers.records()
    check = verify(records, expected)
    return records, {"check": check.as_dict(), "rejected": not check.ok}


def _per_job(before: DbSnapshot, after: DbSnapshot, jobs: int) -> dict[str, float]:
    return {
        "commits_per_job": round((after.xact_commit - before.xact_commit) / max(1, jobs), 4),
        "wal_bytes_per_job": round((after.wal_lsn - before.wal_lsn) / max(1, jobs), 1),
    }


def _ms(ns: float) -> float:
    return round(ns / 1e6, 3)


# ----- W1, W2
def w1(b: Bench) -> dict[str, Any]:
    """W1: bulk enqueue of `jobs` with the system's fastest batch API (then drained, to count them)."""
    n = b.options.jobs
    dsn = b.database("w1")
    before = snapshot(dsn)
    started, returned = asyncio.run(_enqueue(b.system, dsn, range(n)))
    after = snapshot(dsn)
    seconds = (returned - started) / 1e9
    workers = b.workers(dsn, 1, "w1")
    workers.wait_count(n, b.drain_timeout(n))
    _, result = _finish(workers, [range(n)])
    return {
        "jobs": n,
        "seconds": round(seconds, 4),
        "enqueue_per_s": round(n / seconds, 1),
        "enqueue_wal_bytes_per_job": round((after.wal_lsn - before.wal_lsn) / n, 1),
        **result,
    }


def w2(b: Bench, processes: int) -> dict[str, Any]:
    """W2: drain of `jobs` enqueued in one transaction while `processes` warm worker processes wait."""
    n = b.options.jobs
    dsn = b.database(f"w2_{processes}")
    workers = b.workers(dsn, processes, f"w2x{processes}")
    try:
        warm = asyncio.run(_warm(b.system, dsn, workers))
        before = snapshot(dsn)
        _, visible = asyncio.run(_enqueue(b.system, dsn, range(n)))
        workers.wait_count(n + len(warm), b.drain_timeout(n))
        records, result = _finish(workers, [warm, range(n)])
    finally:
        workers.stop()
    after = snapshot(dsn)
    starts = [s for i, _, s in records if i >= 0]
    # From the moment the whole batch is visible, or from the first start when a system without a batch
    # insert (Celery publishes one message at a time) lets workers start before its enqueue returns.
    begin = min(visible, min(starts))
    seconds = (max(starts) - begin) / 1e9
    return {
        "jobs": n,
        "processes": processes,
        "started_before_visible": begin < visible,
        "seconds": round(seconds, 4),
        "drain_per_s": round(n / seconds, 1),
        **_per_job(before, after, n),
        **result,
    }


# ----- W3
async def _paced(system: System, dsn: str, rate: float, seconds: float) -> int:
    n = max(1, round(rate * seconds))
    async with system.producer(dsn) as producer:
        start = time.monotonic()
        for i in range(n):
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            await producer.enqueue_one(i, recorder.now_ns())
        return n


def w3(b: Bench) -> dict[str, Any]:
    """W3: one producer enqueues one job at a time at a fixed rate while one worker runs: latency."""
    o = b.options
    dsn = b.database("w3")
    workers = b.workers(dsn, 1, "w3")
    try:
        warm = asyncio.run(_warm(b.system, dsn, workers))
        started = time.monotonic()
        n = asyncio.run(_paced(b.system, dsn, o.w3_rate, o.w3_seconds))
        achieved = n / (time.monotonic() - started)
        workers.wait_count(n + len(warm), b.drain_timeout(n))
        records, result = _finish(workers, [warm, range(n)])
    finally:
        workers.stop()
    latency = [s - e for i, e, s in records if i >= 0]
    stats = {f"latency_{k}_ms": _ms(v) for k, v in percentiles(latency).items()}
    return {"jobs": n, "rate": o.w3_rate, "achieved_rate": round(achieved, 1), **stats, **result}


# ----- W4, W5, W6: producers and workers together
@dataclass
class Steady:
    """The outcome of a producers-plus-workers run."""

    records: list[tuple[int, int, int]]
    start_ns: int
    end_ns: int
    enqueued: int
    before: DbSnapshot
    after: DbSnapshot
    result: dict[str, Any]


def steady(
    b: Bench, tag: str, seconds: float, *, limit: int = 0, tick: Callable[[str, float], None] | None = None
) -> Steady:
    """Run `w4_producers` producer processes and `w4_workers` worker processes for `seconds` (or until
    `limit` jobs were enqueued); `tick(dsn, elapsed)` is called every 50 ms meanwhile."""
    o = b.options
    dsn = b.database(tag)
    workers = b.workers(dsn, o.w4_workers, tag)
    producers: list[subprocess.Popen[bytes]] = []
    try:
        warm = asyncio.run(_warm(b.system, dsn, workers))
        before = snapshot(dsn)
        outs = [b.folder / f"{b.system.name}-{tag}-r{b.run}-producer{k}.json" for k in range(o.w4_producers)]
        per_limit = -(-limit // o.w4_producers) if limit else 0
        start_ns = recorder.now_ns()
        for k, out in enumerate(outs):
            out.unlink(missing_ok=True)
            argv = python_module(
                "bench.producer",
                b.system.name,
                dsn,
                "--first",
                str(k * PRODUCER_ID_SPAN),
                "--limit",
                str(per_limit),
                "--batch",
                str(o.producer_batch),
                "--duration",
                str(seconds),
                "--cap",
                str(o.backlog_cap),
                "--producers",
                str(o.w4_producers),
                "--offset",
                str(len(warm)),
                "--out",
                str(out),
                "--records",
                *map(str, workers.paths),
            )
            producers.append(subprocess.Popen(argv, env=child_env(), cwd=ROOT))
        while any(p.poll() is None for p in producers):
            workers.check()
            if tick is not None:
                tick(dsn, (recorder.now_ns() - start_ns) / 1e9)
            if (recorder.now_ns() - start_ns) / 1e9 > seconds + 120:
                raise BenchError(f"{b.system.name}: producers did not stop")
            time.sleep(0.05)
        end_ns = recorder.now_ns()
        if any(p.returncode for p in producers):
            raise BenchError(f"{b.system.name}: a producer failed ({[p.returncode for p in producers]})")
        sent = [json.loads(out.read_text()) for out in outs]
        expected = [warm] + [range(s["first"], s["first"] + s["count"]) for s in sent]
        total = sum(s["count"] for s in sent)
        workers.wait_count(total + len(warm), b.drain_timeout(o.backlog_cap * 2))
        records, result = _finish(workers, expected)
    finally:
        stop_processes(producers)
        workers.stop()
    after = snapshot(dsn)
    # the producers' commits (one per enqueue_many call) and, where a system reports them, its claims
    batches = sum(-(-s["count"] // o.producer_batch) for s in sent)
    result = {
        **result,
        "producer_commits_per_job": round(batches / max(1, total), 4),
        **_claim_stats(workers),
    }
    worker_commits = (after.xact_commit - before.xact_commit - batches) / max(1, total)
    result["worker_commits_per_job"] = round(worker_commits, 4)
    return Steady([r for r in records if r[0] >= 0], start_ns, end_ns, total, before, after, result)


def _claim_stats(workers: Any) -> dict[str, float]:
    """Average jobs per claim statement, from the `<record>.stats.json` files workers may write at exit."""
    claims = claimed = 0
    for path in workers.paths:
        stats = Path(str(path) + ".stats.json")
        if stats.exists():
            data = json.loads(stats.read_text())
            claims, claimed = claims + data["claims"], claimed + data["claimed"]
    return {"claims": claims, "jobs_per_claim": round(claimed / claims, 1)} if claims else {}


def _window(records: Sequence[tuple[int, int, int]], lo: int, hi: int) -> list[tuple[int, int, int]]:
    return [r for r in records if lo <= r[2] < hi]


def _latency(records: Sequence[tuple[int, int, int]]) -> dict[str, float]:
    got = percentiles([s - e for _, e, s in records], (50, 99))
    return {f"latency_{k}_ms": _ms(v) for k, v in got.items()}


def w4(b: Bench) -> dict[str, Any]:
    """W4: producers and workers together, unthrottled (backlog capped): completed jobs/s."""
    seconds = b.options.w4_seconds
    run = steady(b, "w4", seconds)
    lo = run.start_ns + int(seconds * 0.1e9)  # skip the first 10 %: processes ramping up
    hi = run.start_ns + int(seconds * 1e9)
    done = _window(run.records, lo, hi)
    return {
        "seconds": seconds,
        "enqueued": run.enqueued,
        "enqueue_per_s": round(run.enqueued / seconds, 1),
        "completed_per_s": round(len(done) / ((hi - lo) / 1e9), 1),
        **_latency(done),
        **_per_job(run.before, run.after, run.enqueued),
        "timeline": _timeline(run.records, run.start_ns, run.end_ns),
        **run.result,
    }


def w5(b: Bench) -> dict[str, Any]:
    """W5: `w5_jobs` through one database: the rate of the last 10 % against the first 10 %, table health."""
    o = b.options
    samples: list[dict[str, Any]] = []
    next_at = [0.0]

    def sample(dsn: str, elapsed: float) -> None:
        if elapsed >= next_at[0]:
            next_at[0] = elapsed + max(1.0, o.w5_max_seconds / 200)
            samples.append({"t": round(elapsed, 1), "tables": snapshot(dsn).tables})

    run = steady(b, "w5", o.w5_max_seconds, limit=o.w5_jobs, tick=sample)
    starts = sorted(s for _, _, s in run.records)
    k = max(2, len(starts) // 10)
    first = (k - 1) / max(1e-9, (starts[k - 1] - starts[0]) / 1e9)
    last = (k - 1) / max(1e-9, (starts[-1] - starts[-k]) / 1e9)
    return {
        "jobs": run.enqueued,
        "complete": run.enqueued >= o.w5_jobs,
        "segment": k,
        "seconds": round((starts[-1] - starts[0]) / 1e9, 1),
        "first_per_s": round(first, 1),
        "last_per_s": round(last, 1),
        "last_over_first": round(last / first, 3),
        "tables_end": run.after.tables,
        "samples": samples,
        **_per_job(run.before, run.after, run.enqueued),
        **run.result,
    }


class HeldTransaction:
    """Opens a REPEATABLE READ transaction with an xid at `at` s and commits it `held` s later."""

    def __init__(self, at: float, held: float) -> None:
        self.at, self.held = at, held
        self.conn: Any = None
        self.opened_ns = self.closed_ns = 0
        self.tables_during: dict[str, dict[str, int]] = {}

    def __call__(self, dsn: str, elapsed: float) -> None:
        if self.conn is None and not self.opened_ns and elapsed >= self.at:
            self.conn = connect(dsn)
            self.conn.autocommit = False
            self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            self.conn.execute("SELECT txid_current()")
            self.opened_ns = recorder.now_ns()
        elif self.conn is not None and elapsed >= self.at + self.held:
            self.tables_during = snapshot(dsn).tables
            self.conn.commit()
            self.conn.close()
            self.conn = None
            self.closed_ns = recorder.now_ns()


def w6(b: Bench) -> dict[str, Any]:
    """W6: W4 with a REPEATABLE READ transaction held open in the middle: throughput and latency before,
    during and after; seconds until the rate is back to 90 % of the baseline."""
    o = b.options
    held = HeldTransaction(o.w6_before, o.w6_held)
    run = steady(b, "w6", o.w6_before + o.w6_held + o.w6_after, tick=held)
    if held.conn is not None:
        held.conn.close()
    if not held.closed_ns:
        raise BenchError("the held transaction never closed")
    ramp = run.start_ns + int(min(2.0, o.w6_before / 5) * 1e9)
    phases = {
        "before": (ramp, held.opened_ns),
        "during": (held.opened_ns, held.closed_ns),
        "after": (held.closed_ns, run.end_ns),
    }
    out: dict[str, Any] = {"seconds": [o.w6_before, o.w6_held, o.w6_after], "enqueued": run.enqueued}
    for name, (lo, hi) in phases.items():
        done = _window(run.records, lo, hi)
        out[f"{name}_per_s"] = round(len(done) / max(1e-9, (hi - lo) / 1e9), 1)
        out.update({f"{name}_{k}": v for k, v in _latency(done).items()})
    baseline = out["before_per_s"]
    out["during_over_before"] = round(out["during_per_s"] / max(1e-9, baseline), 3)
    out["recovery_s"] = _recovery(run.records, held.closed_ns, run.end_ns, baseline)
    out["timeline"] = _timeline(run.records, run.start_ns, run.end_ns)
    out["tables_during"] = held.tables_during
    out["marks_s"] = [
        round((held.opened_ns - run.start_ns) / 1e9, 2),
        round((held.closed_ns - run.start_ns) / 1e9, 2),
    ]
    return {**out, **run.result}


def _timeline(records: Sequence[tuple[int, int, int]], start: int, end: int, step: float = 1.0) -> list[int]:
    bins = [0] * (int((end - start) / 1e9 / step) + 1)
    for _, _, s in records:
        k = int((s - start) / 1e9 / step)
        if 0 <= k < len(bins):
            bins[k] += 1
    return bins


def _recovery(
    records: Sequence[tuple[int, int, int]], released: int, end: int, baseline: float
) -> float | None:
    """Seconds after `released` until a 3 s moving rate first reaches 90 % of `baseline` (None: never)."""
    bins = _timeline(records, released, end, 0.5)
    width = 6
    for k in range(len(bins) - width + 1):
        if sum(bins[k : k + width]) / (width * 0.5) >= 0.9 * baseline:
            return round(k * 0.5, 1)
    return None


WORKLOADS: dict[str, Callable[[Bench], dict[str, Any]]] = {
    "W1": w1,
    "W2-1": lambda b: w2(b, 1),
    "W2-2": lambda b: w2(b, 2),
    "W3": w3,
    "W4": w4,
    "W5": w5,
    "W6": w6,
}
