"""The chaos scenarios of a job's life without crashes of the database: R1 exactly-once without faults, R8
retries and the dead-letter queue (frozen clock), R10 long jobs and timeouts, R11 graceful shutdown, R13
leader failover. Each returns a `Result` like those of scenarios.py (figures, violations)."""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg

import pageq
from chaos import app as chaos_app
from chaos import ledger as oracle
from chaos.faults import Fleet, wait_until, worker_env
from chaos.scenarios import SMALL, Result, Timings, _orphans, drain, enqueue_all, setup, uids
from pageq.store import Store, ops


def _final(verdict: oracle.Verdict, jobs: int) -> bool:
    return verdict.valid and verdict.effects == jobs and verdict.states == {"succeeded": jobs}


def _pid_registered(app: pageq.App, pid: int) -> bool:
    return any(w["pid"] == pid for w in app.workers())


# ----- R1: exactly-once without faults
def r1_exactly_once(
    dsn: str, schema: str, logs: Path, *, jobs: int = 600, workers: int = 3, concurrency: int = 4,
    batches: tuple[int, ...] = (1, 64, 1000), claimers: tuple[int, ...] = (1, 4, 32), cell_jobs: int = 100,
    timings: Timings = SMALL, drain_timeout: float = 120.0,
) -> Result:  # fmt: skip
    """(a) A matrix of claim batch sizes x concurrent claimers on one queue: each job claimed and completed
    exactly once. (b) Worker processes drain ``jobs`` jobs: each executed once, one effect each, all
    succeeded, nothing left running."""
    result = Result("R1 exactly-once without faults")
    app = setup(dsn, schema)
    try:
        cells = {}
        for n in batches:
            for c in claimers:
                wrong = _claim_cell(app, n, c, cell_jobs)
                cells[f"{n}x{c}"] = wrong or "ok"
                result.expect(not wrong, f"claim batch {n} x {c} claimers: {wrong}")
        result.figures["matrix"] = {"cells": len(cells), "jobs_per_cell": cell_jobs,
                                    "wrong": [k for k, v in cells.items() if v != "ok"]}  # fmt: skip
        ledger = oracle.Ledger()
        enqueue_all(app, ledger, [chaos_app.work.job(uid=u) for u in uids(jobs, "r1")])
        fleet = Fleet(worker_env(dsn, schema), logs, workers, timings.options(concurrency)).start()
        started = time.monotonic()
        try:
            result.figures["drain_s"] = round(drain(dsn, schema, drain_timeout), 1)
        finally:
            fleet.stop()
        result.figures["jobs_per_s"] = round(jobs / (time.monotonic() - started), 1)
    finally:
        app.close()
    verdict = oracle.check(dsn, schema, ledger)
    result.figures.update(verdict.summary(), worker_exits=len(fleet.exits))
    matrix = len(batches) * len(claimers) * cell_jobs  # the matrix's jobs succeeded too
    everything = {"succeeded": jobs + matrix}
    result.expect(verdict.valid and verdict.effects == jobs and verdict.states == everything,
                  f"ledger: {verdict.summary()}")  # fmt: skip
    result.expect(verdict.executions == jobs, f"{verdict.executions} executions for {jobs} jobs")
    result.expect(not fleet.exits, f"workers exited: {fleet.exits}")
    return result


def _claim_cell(app: pageq.App, batch: int, claimers: int, jobs: int) -> str:
    """``claimers`` threads claim ``batch`` jobs at a time from one queue and complete them; '' if every job
    was claimed and completed exactly once."""
    queue = f"r1-{batch}-{claimers}"
    ids = app.enqueue_many([chaos_app.work.job(uid=f"{queue}-{i}", queue=queue) for i in range(jobs)])
    store = Store(app.store.dsn, app.schema, max_size=claimers)
    claimed: list[int] = []
    completed: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(claimers)
    errors: list[BaseException] = []

    def claimer(name: str) -> None:
        try:
            barrier.wait(30)
            while got := store.run(ops.claim([queue], batch, app.clock.now(), 60, name)):
                leases = [ops.Lease(j.id, j.lease_token) for j in got if j.lease_token]
                done = store.run(ops.complete(leases, ["null"] * len(leases), app.clock.now()))
                with lock:
                    claimed.extend(j.id for j in got)
                    completed.extend(done)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=claimer, args=(f"c{i}",)) for i in range(claimers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    store.close()
    with psycopg.connect(app.store.dsn, autocommit=True) as conn:
        left = conn.execute(f"SELECT count(*) FROM {app.schema}.jobs WHERE queue = %s", (queue,)).fetchone()
    if errors:
        return f"claimer failed: {errors[0]!r}"
    if sorted(claimed) != sorted(ids) or sorted(completed) != sorted(ids) or left != (0,):
        dups = len(claimed) - len(set(claimed))
        return f"claimed {len(claimed)} ({dups} twice), completed {len(completed)}, left {left} of {jobs}"
    return ""


# ----- R8: retries, backoff, dead-letter queue (frozen clock)
def r8_retries(
    dsn: str, schema: str, *, jobs: int = 120, redrive: int = 10, max_attempts: int = 5, base: float = 1.0,
    cap: float = 30.0, jitter: float = 0.1, timeout: float = 120.0,
) -> Result:  # fmt: skip
    """Job i fails its first k = i % 8 attempts with a 20,000-character error. k < max_attempts: succeeded
    after k + 1 attempts; otherwise dead after max_attempts, one error entry each (at most 8 KiB, traceback
    cut). Each retry was due ``min(cap, base * 2^(n-1))`` +- jitter after the n-th failure (the app's
    frozen clock). Then ``redrive`` dead jobs go back (attempts reset, errors kept) and succeed."""
    result = Result("R8 retries, backoff and the dead-letter queue")
    clock = pageq.FrozenClock()
    app = pageq.App(dsn, schema=schema, clock=clock)
    app.migrate()
    policy = pageq.Backoff.exponential(base=2.0, cap=cap, jitter=jitter, factor=base / 2)
    runs: dict[str, list[tuple[int, datetime]]] = {}
    fixed = threading.Event()

    @app.task(queue="r8", max_attempts=max_attempts, retry=policy)
    async def flaky(ctx: pageq.Context, uid: str, k: int) -> None:
        runs.setdefault(uid, []).append((ctx.attempt, ctx.job.run_at))
        if ctx.attempt <= k and not fixed.is_set():
            raise RuntimeError(f"planned failure {ctx.attempt}/{k}: " + "x" * 20_000)

    try:
        keys = [f"r8-{i}" for i in range(jobs)]
        ids = dict(zip(keys, app.enqueue_many([flaky.job(uid=u, k=i % 8) for i, u in enumerate(keys)]),
                       strict=True))  # fmt: skip
        took = asyncio.run(_drain_frozen(app, clock, timeout))
        finished = {u: app.get_job(i) for u, i in ids.items()}
        sizes = _error_sizes(dsn, schema)
        wrong, delays = [], []
        for i, uid in enumerate(keys):
            job, k = finished[uid], i % 8
            want = ("succeeded", k + 1, k) if k < max_attempts else ("dead", max_attempts, max_attempts)
            got = (job.state.value, job.attempts, len(job.errors))
            if got != want:
                wrong.append((uid, got, want))
            for n, error in enumerate(job.errors, start=1):
                if n < len(runs[uid]):
                    due = runs[uid][n][1]
                    delay = (due - datetime.fromisoformat(error.at)).total_seconds()
                    nominal = min(cap, base * 2 ** (n - 1))
                    delays.append(delay / nominal)
        result.expect(not wrong, f"{len(wrong)} jobs off (uid, got, want): {wrong[:3]}")
        off = [d for d in delays if not (1 - jitter) - 1e-6 <= d <= (1 + jitter) + 1e-6]
        result.expect(not off, f"{len(off)} retries outside the backoff +- jitter: {off[:5]}")
        big = [s for s in sizes if s[0] > 8192 or s[1] > 2000 or not s[2]]
        result.expect(not big, f"error entries too big or without traceback: {big[:3]}")
        dead = [ids[u] for u in keys if finished[u].state is pageq.JobState.DEAD][:redrive]
        fixed.set()
        back = app.requeue_dead(dead)
        requeued = [app.get_job(i) for i in dead]
        ok = sorted(back) == sorted(dead) and all(
            (j.state.value, j.attempts, len(j.errors)) == ("queued", 0, max_attempts) for j in requeued
        )
        result.expect(
            ok, f"redrive: {len(back)} of {len(dead)} back: {[(j.state, j.attempts) for j in requeued][:3]}"
        )
        asyncio.run(_drain_frozen(app, clock, timeout))
        after = [app.get_job(i) for i in dead]
        redone = [
            j for j in after if (j.state.value, j.attempts, len(j.errors)) == ("succeeded", 1, max_attempts)
        ]
        result.expect(
            len(redone) == len(dead), f"redriven jobs: {[(j.state, j.attempts) for j in after][:3]}"
        )
        result.figures.update(
            jobs=jobs, succeeded=sum(f.state is pageq.JobState.SUCCEEDED for f in finished.values()),
            dead=sum(f.state is pageq.JobState.DEAD for f in finished.values()), wrong=len(wrong),
            retries_checked=len(delays), delay_over_nominal=[round(min(delays, default=0), 3),
                                                             round(max(delays, default=0), 3)],
            error_entry_max_bytes=max((s[0] for s in sizes), default=0), redriven=len(back),
            redriven_succeeded=len(redone), drain_s=round(took, 1),
        )  # fmt: skip
    finally:
        app.close()
        app.drop_schema()
    return result


async def _drain_frozen(app: pageq.App, clock: pageq.FrozenClock, timeout: float) -> float:
    """Run an in-process worker, moving the frozen clock on by 0.25 s every 10 ms, until no job is left."""
    worker = app.worker(["r8"], 16, lease=3600.0, poll_interval=0.01, maintenance_interval=0.05)
    running = asyncio.create_task(worker.run())
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            await worker.started.wait()
            while await asyncio.to_thread(_live, app) or worker.active:
                clock.advance(0.25)
                await asyncio.sleep(0.01)
    finally:
        worker.stop()
        await running
    return time.monotonic() - started


def _live(app: pageq.App) -> int:
    with psycopg.connect(app.store.dsn, autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*) FROM {app.schema}.jobs").fetchone()
    return int(row[0]) if row else 0


def _error_sizes(dsn: str, schema: str) -> list[tuple[int, int, bool]]:
    """Per error entry: (bytes, characters of the error text, whether it has a traceback)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT octet_length(e::text), length(e->>'error'), e->>'traceback' IS NOT NULL "
            f"FROM (SELECT errors FROM {schema}.jobs UNION ALL SELECT errors FROM {schema}.finished_jobs) j, "
            f"jsonb_array_elements(j.errors) e"
        ).fetchall()
    return [(int(a), int(b), bool(c)) for a, b, c in rows]


# ----- R10: long jobs, heartbeats, timeouts
R10_TIMINGS = Timings(lease=2.0, heartbeat=0.5, maintenance=0.5, poll=0.2)


def r10_long_jobs(
    dsn: str, schema: str, logs: Path, *, long: int = 4, spinning: int = 2, overruns: int = 4,
    workers: int = 2, concurrency: int = 6, timeout: float = 1.0, timings: Timings = R10_TIMINGS,
    drain_timeout: float = 120.0,
) -> Result:  # fmt: skip
    """``long`` sync jobs of 3 x L + 0.5 s, ``spinning`` of them CPU-bound (pure Python) for 0.8 x L, which
    starves the event loop that heartbeats: each runs once (no duplicate execution), its lease extended to
    the end. ``overruns`` async jobs outlast their ``timeout`` on the first attempt: each is cancelled within
    timeout + 1 s and succeeds on its retry."""
    result = Result("R10 long jobs and heartbeats")
    app = setup(dsn, schema)
    ledger = oracle.Ledger()
    seconds = 3 * timings.lease + 0.5
    longs = uids(long, "long")
    late = uids(overruns, "overrun")
    specs = [chaos_app.long_cpu.job(uid=u, seconds=seconds, spin=0.8 * timings.lease if i < spinning else 0.0)
             for i, u in enumerate(longs)]  # fmt: skip
    specs += [chaos_app.overrun.job(uid=u, ms=60_000, timeout=timeout) for u in late]
    enqueue_all(app, ledger, specs)
    fleet = Fleet(worker_env(dsn, schema), logs, workers, timings.options(concurrency)).start()
    try:
        result.figures["drain_s"] = round(drain(dsn, schema, drain_timeout), 1)
    finally:
        fleet.stop()
        app.close()
    verdict = oracle.check(dsn, schema, ledger)
    runs = oracle.executions(dsn, schema)
    with psycopg.connect(dsn, autocommit=True) as conn:
        leases = dict(conn.execute(f"SELECT uid, last - first FROM {schema}.leases").fetchall())
        errors = dict(conn.execute(
            f"SELECT args->>'uid', errors FROM {schema}.finished_jobs WHERE task = 'overrun'"
        ).fetchall())  # fmt: skip
    per_uid: dict[str, list[tuple[int, float]]] = {}
    for uid, attempt, _pid, t_start, _t_end in runs:
        per_uid.setdefault(uid, []).append((attempt, t_start))
    twice = [u for u in longs if len(per_uid.get(u, [])) != 1]
    extended = [leases.get(u) or 0.0 for u in longs]
    cancel_after = []
    for uid in late:
        first = [t for a, t in per_uid.get(uid, []) if a == 1]
        errs = errors.get(uid) or []
        if len(errs) != 1 or "JobTimeoutError" not in errs[0]["error"] or len(per_uid.get(uid, [])) != 2:
            result.violations.append(f"overrun {uid}: runs {per_uid.get(uid)} errors {errs}")
            continue
        cancel_after.append(datetime.fromisoformat(errs[0]["at"]).timestamp() - first[0])
    worst = max(cancel_after, default=0.0)
    result.figures.update(verdict.summary(), long_jobs=long, long_seconds=seconds, spinning=spinning,
                          long_run_twice=len(twice), lease_extended_min_s=round(min(extended, default=0), 2),
                          overruns=overruns, timeout_s=timeout, cancelled_after_max_s=round(worst, 2),
                          worker_exits=len(fleet.exits))  # fmt: skip
    result.expect(_final(verdict, long + overruns), f"ledger: {verdict.summary()}")
    result.expect(not twice, f"long jobs executed more than once: {twice}")
    result.expect(min(extended, default=0) > 2 * timings.lease, f"leases extended by {extended} s only")
    result.expect(worst <= timeout + 1.0, f"a timed-out job was cancelled {worst:.2f} s after its start")
    result.expect(not fleet.exits, f"workers exited: {fleet.exits}")
    return result


# ----- R11: graceful shutdown
R11_TIMINGS = Timings(lease=30.0, heartbeat=1.0, maintenance=0.5, poll=0.2)


@dataclass
class _Round:
    exit_after: float  # seconds from the (last) SIGTERM to the exit
    code: int | None
    reclaim_after: float  # seconds from the release (grace expiry or second SIGTERM) to the re-claim


def r11_shutdown(
    dsn: str, schema: str, logs: Path, *, rounds: int = 1, short_ms: int = 500, long_ms: int = 60_000,
    grace: float = 2.0, timings: Timings = R11_TIMINGS, strict: bool = True,
) -> Result:  # fmt: skip
    """A worker holding 4 jobs (2 short, 2 long) gets SIGTERM: the short ones complete, the long ones are
    released when the grace period ends and re-claimed at once by the standby worker (not after the lease),
    and the process exits within grace + 2 s. ``rounds`` such rounds, then one with a second SIGTERM, which
    stops the worker at once. Each round's standby holds the next round's jobs."""
    result = Result("R11 graceful shutdown")
    app = setup(dsn, schema)
    env = worker_env(dsn, schema)
    fleets: list[Fleet] = []
    done: list[_Round] = []
    uids_all: list[str] = []
    ledger = oracle.Ledger()

    def start(i: int, g: float) -> Fleet:
        options = Timings(timings.lease, timings.heartbeat, timings.maintenance, timings.poll, g).options(4)
        fleet = Fleet(env, logs / f"w{i}", 1, options, respawn=False).start()
        fleets.append(fleet)
        wait_until(lambda: _pid_registered(app, fleet.all[0].pid), 60, f"worker {i} to start")
        return fleet

    try:
        holder = start(0, grace)
        for r in range(rounds + 1):
            double = r == rounds
            g = 60.0 if double else grace
            shorts, longs = uids(2, f"short{r}"), uids(2, f"long{r}")
            specs = [chaos_app.long_once.job(uid=u, ms=short_ms) for u in shorts]
            specs += [chaos_app.long_once.job(uid=u, ms=long_ms) for u in longs]
            uids_all += shorts + longs
            enqueue_all(app, ledger, specs)
            proc = holder.all[0]
            wait_until(lambda p=proc: _running_on(dsn, schema, p.pid) == 4, 60, "the holder to claim 4 jobs")
            standby = start(r + 1, grace if r + 1 < rounds else 60.0)  # the last round stops at once
            signalled = time.time()
            holder.signal(signal.SIGTERM, proc)
            if double:
                wait_until(lambda f=holder: "draining" in f.log_text(), 30, "the holder to drain")
                signalled = time.time()
                holder.signal(signal.SIGTERM, proc)
            exited = _exit(holder, proc, g + 30)
            wait_until(
                lambda ls=shorts + longs: _succeeded(dsn, schema, ls), 60, "the round's jobs to finish"
            )
            released = signalled if double else signalled + g
            reclaim = _reruns(dsn, schema, longs, standby.all[0].pid)
            done.append(_Round(round(exited[1] - signalled, 2), exited[0],
                               round(max(reclaim, default=99.0) - released, 2)))  # fmt: skip
            _check_round(result, dsn, schema, r, double, shorts, longs, proc.pid, standby.all[0].pid)
            holder = standby
    finally:
        for fleet in fleets:
            fleet.stop()
        app.close()
    verdict = oracle.check(dsn, schema, ledger)
    normal = done[:-1]
    result.figures.update(verdict.summary(), rounds=rounds, grace_s=grace,
                          exit_after_sigterm_s=[d.exit_after for d in normal],
                          reclaim_after_release_s=[d.reclaim_after for d in normal],
                          exit_after_second_sigterm_s=done[-1].exit_after if done else None,
                          reclaim_after_second_sigterm_s=done[-1].reclaim_after if done else None,
                          )  # fmt: skip
    result.expect(_final(verdict, len(uids_all)), f"ledger: {verdict.summary()}")
    for i, d in enumerate(done):
        bound = 2.0 if i == len(done) - 1 else grace + 2.0
        result.expect(d.code == 0, f"round {i}: exit code {d.code}")
        result.expect(
            d.exit_after <= bound or not strict, f"round {i}: exited {d.exit_after} s after SIGTERM"
        )
        result.expect(0 <= d.reclaim_after <= 2.0 or not strict,
                      f"round {i}: long jobs re-claimed {d.reclaim_after} s after their release")  # fmt: skip
    return result


def _running_on(dsn: str, schema: str, pid: int) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            f"SELECT count(*) FROM {schema}.jobs WHERE state = 'running' AND worker LIKE %s", (f"%:{pid}:%",)
        ).fetchone()
    return int(row[0]) if row else 0


def _exit(fleet: Fleet, proc: subprocess.Popen[bytes], timeout: float) -> tuple[int | None, float]:
    """The exit code of ``proc`` and when (the fleet's supervisor notes it within 0.1 s)."""
    found = wait_until(lambda: [e for e in fleet.exits if e[0] == proc.pid], timeout, "the worker to exit")
    return found[0][1], found[0][2]


def _succeeded(dsn: str, schema: str, keys: list[str]) -> bool:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            f"SELECT count(*) FROM {schema}.finished_jobs "
            f"WHERE state = 'succeeded' AND args->>'uid' = ANY(%s)",
            (keys,),
        ).fetchone()
    return bool(row and row[0] == len(keys))


def _reruns(dsn: str, schema: str, keys: list[str], pid: int) -> list[float]:
    """When ``pid`` started each of ``keys``."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT min(t_start) FROM {schema}.exec_log WHERE uid = ANY(%s) AND pid = %s GROUP BY uid",
            (keys, pid),
        ).fetchall()
    return [float(r[0]) for r in rows] if len(rows) == len(keys) else []


def _check_round(
    result: Result, dsn: str, schema: str, r: int, double: bool, shorts: list[str], longs: list[str],
    holder: int, standby: int,
) -> None:  # fmt: skip
    """Short jobs completed by the holder (unless stopped at once), long ones by the standby, once each."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        effects = dict(conn.execute(
            f"SELECT uid, pid FROM {schema}.effects WHERE uid = ANY(%s)", (shorts + longs,)
        ).fetchall())  # fmt: skip
    if not double:
        result.expect(all(effects.get(u) == holder for u in shorts), f"round {r}: short jobs {effects}")
    result.expect(all(effects.get(u) == standby for u in longs), f"round {r}: long jobs {effects}")


# ----- R13: leader failover
R13_TIMINGS = Timings(lease=2.0, heartbeat=0.5, maintenance=1.0, poll=0.2)
STEP = re.compile(r"maintenance step: term (\S+) from ([\d.]+) to ([\d.]+)")
TERM = re.compile(r"leading maintenance: term (\S+) \((.*)\)")


def r13_failover(
    dsn: str, schema: str, logs: Path, *, jobs: int = 500, workers: int = 3, concurrency: int = 4,
    kill_every: float = 2.5, chaos_for: float = 7.5, ms: tuple[int, int] = (50, 250),
    timings: Timings = R13_TIMINGS, drain_timeout: float = 120.0, strict: bool = False,
) -> Result:  # fmt: skip
    """``workers`` daemons under load; SIGKILL the current maintenance leader every ``kill_every`` seconds.
    Maintenance steps of different terms never overlap (in the server's clock); a new leader starts within
    the election interval + the term's TTL of each kill (by the killed leader's session being gone, not by
    the TTL); the killed leaders' jobs run again; 0 lost, 0 duplicated."""
    result = Result("R13 leader failover")
    app = setup(dsn, schema)
    ledger = oracle.Ledger()
    enqueue_all(app, ledger, [chaos_app.work.job(uid=u, ms=random.randint(*ms)) for u in uids(jobs, "r13")])
    env = worker_env(dsn, schema, CHAOS_LOG_STEPS="1")
    fleet = Fleet(env, logs, workers, timings.options(concurrency)).start()
    kills: list[float] = []
    try:
        wait_until(lambda: len(app.workers()) >= workers, 60, "workers to start")
        started = time.monotonic()
        while time.monotonic() - started < chaos_for:
            time.sleep(kill_every)
            victim = _leader_proc(dsn, schema, fleet)
            if victim is not None:
                fleet.signal(signal.SIGKILL, victim)
                kills.append(time.time())
        # the last kill's successor must have time to take over before the fleet stops (a short drain would
        # otherwise end the run first): wait for a live leader, then for one of its steps (bounded)
        deadline = time.monotonic() + 2 * (timings.maintenance + 3 * timings.maintenance) + 5
        while _leader_proc(dsn, schema, fleet) is None and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(2 * timings.maintenance)
        result.figures["drain_after_chaos_s"] = round(drain(dsn, schema, drain_timeout), 1)
    finally:
        fleet.stop()
        app.close()
    verdict = oracle.check(dsn, schema, ledger)
    text = "\n".join(p.read_text(errors="replace") for p in sorted(logs.glob("*.log")))
    spans: dict[str, list[float]] = {}
    for term, a, b in STEP.findall(text):
        span = spans.setdefault(term, [float(a), float(b)])
        span[0], span[1] = min(span[0], float(a)), max(span[1], float(b))
    why = dict(TERM.findall(text))
    ordered = sorted(spans.items(), key=lambda item: item[1][0])
    overlaps = [(t1, t2) for (t1, s1), (t2, s2) in itertools.pairwise(ordered) if s1[1] >= s2[0]]
    ttl = 3 * timings.maintenance
    takeovers, fast = [], 0
    for at in kills:
        after = [(s[0], t) for t, s in ordered if s[0] > at]
        if after:
            takeovers.append(round(after[0][0] - at, 2))
            fast += "no live leader session" in why.get(after[0][1], "")
    result.figures.update(verdict.summary(), kills=len(kills), terms=len(spans),
                          overlapping_terms=len(overlaps), new_leader_after_kill_s=takeovers,
                          new_leader_bound_s=timings.maintenance + ttl,
                          takeovers_by_gone_session=fast, unplanned_exits=len(fleet.exits))  # fmt: skip
    result.expect(len(kills) >= 1 and len(spans) > len(kills), f"{len(kills)} kills, {len(spans)} terms")
    result.expect(not overlaps, f"terms overlap: {overlaps[:3]}")
    result.expect(len(takeovers) == len(kills), f"no new leader after a kill: {takeovers} for {len(kills)}")
    worst = max(takeovers, default=0.0)
    result.expect(worst <= timings.maintenance + ttl, f"a new leader {worst} s after a kill")
    result.expect(fast == len(kills) or (not strict and fast >= 1),
                  f"{fast} of {len(kills)} takeovers found the killed leader's session gone")  # fmt: skip
    result.expect(_final(verdict, jobs), f"ledger: {verdict.summary()}")
    result.expect(not fleet.exits, f"workers exited on their own: {fleet.exits}")
    _orphans(result, dsn, schema, fleet, timings, strict)
    return result


def _leader_proc(dsn: str, schema: str, fleet: Fleet) -> subprocess.Popen[bytes] | None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            f"SELECT holder FROM {schema}.leader WHERE name = 'maintenance' AND expires_at > now()"
        ).fetchone()
    if not row or row[0].count(":") < 2:
        return None
    pid = int(row[0].split(":")[1])
    return next((p for p in fleet.alive() if p.pid == pid), None)
