"""The chaos scenarios (R2, R3, R6, R7, R9, ...) as functions of their size: pytest runs them small
(test_chaos.py), ``python -m chaos.full`` at full size. Each returns a dict of measured figures and a list of
violations (empty when the scenario passed)."""

from __future__ import annotations

import contextlib
import random
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

import pageq
from chaos import app as chaos_app
from chaos import ledger as oracle
from chaos.faults import Fleet, wait_until, worker_env
from chaos.server import PgServer
from pageq.types import JobSpec


@dataclass(frozen=True)
class Timings:
    """Worker timings: lease L, heartbeat H, maintenance (rescuer) interval S, poll interval P, grace."""

    lease: float = 2.0
    heartbeat: float = 0.5
    maintenance: float = 0.5
    poll: float = 0.2
    grace: float = 2.0

    @property
    def bound(self) -> float:
        """B = L + S + H + 1 s: how soon a dead worker's job runs again, at the latest."""
        return self.lease + self.maintenance + self.heartbeat + 1.0

    def options(self, concurrency: int) -> list[str]:
        return [
            "--concurrency", str(concurrency), "--lease", str(self.lease),
            "--heartbeat", str(self.heartbeat), "--maintenance-interval", str(self.maintenance),
            "--poll-interval", str(self.poll), "--grace", str(self.grace),
        ]  # fmt: skip


FULL = Timings(lease=10.0, heartbeat=3.0, maintenance=2.0, poll=1.0)
SMALL = Timings()


@dataclass
class Result:
    name: str
    figures: dict[str, Any] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    def expect(self, ok: bool, message: str) -> None:
        if not ok:
            self.violations.append(message)


def setup(dsn: str, schema: str) -> pageq.App:
    app = pageq.App(dsn, schema=schema)
    app.migrate()
    oracle.create_tables(dsn, schema)
    return app


def enqueue_all(app: pageq.App, ledger: oracle.Ledger, specs: list[JobSpec]) -> None:
    for start in range(0, len(specs), 1000):
        chunk = specs[start : start + 1000]
        ids = app.enqueue_many(chunk)
        for spec, job_id in zip(chunk, ids, strict=True):
            ledger.record(str(spec.args["uid"]), "ok", job_id)


def live_jobs(dsn: str, schema: str) -> int:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(f"SELECT count(*) FROM {schema}.jobs").fetchone()
    return int(row[0]) if row else -1


def drain(dsn: str, schema: str, timeout: float) -> float:
    """Wait until no live job is left; returns how long it took."""
    started = time.monotonic()
    wait_until(lambda: live_jobs(dsn, schema) == 0, timeout, "the queue to drain", every=0.25)
    return time.monotonic() - started


def uids(n: int, prefix: str) -> list[str]:
    return [f"{prefix}-{i}-{uuid.uuid4().hex[:6]}" for i in range(n)]


# ----- R2: kill -9 chaos
def r2_kill9(
    dsn: str, schema: str, logs: Path, *, jobs: int = 600, workers: int = 4, concurrency: int = 4,
    kill_every: float = 1.0, chaos_for: float = 6.0, ms: tuple[int, int] = (50, 250),
    timings: Timings = SMALL, drain_timeout: float = 90.0, strict: bool = False,
) -> Result:  # fmt: skip
    """``strict``: also hold the recovery time to B (full size; a loaded CI machine only reports it)."""
    result = Result("R2 kill -9")
    app = setup(dsn, schema)
    ledger = oracle.Ledger()
    specs = [chaos_app.work.job(uid=u, ms=random.randint(*ms)) for u in uids(jobs, "r2")]
    enqueue_all(app, ledger, specs)
    fleet = Fleet(worker_env(dsn, schema), logs, workers, timings.options(concurrency)).start()
    try:
        wait_until(lambda: _registered(dsn, schema) >= workers, 60, "workers to start")
        started = time.monotonic()
        while time.monotonic() - started < chaos_for:
            time.sleep(kill_every)
            busy = _busy_pids(dsn, schema)
            targets = [p for p in fleet.alive() if p.pid in busy] or fleet.alive()
            if targets:
                fleet.signal(signal.SIGKILL, random.choice(targets))
        result.figures["drain_after_chaos_s"] = round(drain(dsn, schema, drain_timeout), 1)
    finally:
        fleet.stop()
        app.close()
    verdict = oracle.check(dsn, schema, ledger)
    result.figures.update(verdict.summary(), kills=len(fleet.kills), unplanned_exits=len(fleet.exits))
    buried = _buried_by_test_kills(dsn, schema, fleet)
    result.figures["buried_worker_crash_by_test_kills"] = len(buried)
    unexplained = set(verdict.lost) - set(buried)
    result.expect(not unexplained and not verdict.unexpected and not verdict.duplicated,
                  f"ledger: {verdict.summary()}")  # fmt: skip
    result.expect(verdict.effects + len(buried) == jobs, f"effects {verdict.effects} != {jobs}")
    expected_states = {"succeeded": jobs - len(buried), **({"dead": len(buried)} if buried else {})}
    result.expect(verdict.states == expected_states, f"final states {verdict.states}")
    result.expect(not fleet.exits, f"workers exited on their own: {fleet.exits}")
    _orphans(result, dsn, schema, fleet, timings, strict)
    return result


def _buried_by_test_kills(dsn: str, schema: str, fleet: Fleet) -> list[str]:
    """Jobs buried as poison pills (worker_crash) whose every run was in a process the test SIGKILLed: the
    detector cannot tell a chaos monkey from a poison pill. Reported apart; any other dead job fails."""
    killed = {pid for pid, _at, sig in fleet.kills if sig == "SIGKILL"}
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT f.args->>'uid', array_agg(e.pid) FROM {schema}.finished_jobs f "
            f"JOIN {schema}.exec_log e ON e.uid = f.args->>'uid' "
            f"WHERE f.state = 'dead' AND f.errors->-1->>'reason' = 'worker_crash' GROUP BY 1"
        ).fetchall()
    return [uid for uid, pids in rows if set(pids) <= killed]


def _orphans(result: Result, dsn: str, schema: str, fleet: Fleet, timings: Timings, strict: bool) -> None:
    """Every execution without an effect belongs to a killed process; each orphan ran again within B."""
    killed = {pid: at for pid, at, sig in fleet.kills if sig == "SIGKILL"}
    runs = oracle.executions(dsn, schema)
    with psycopg.connect(dsn, autocommit=True) as conn:
        effects = {tuple(r) for r in conn.execute(f"SELECT uid, attempt, pid FROM {schema}.effects")}
    by_uid: dict[str, list[tuple[int, int, float]]] = {}
    for uid, attempt, pid, t_start, _t_end in runs:
        by_uid.setdefault(uid, []).append((attempt, pid, t_start))
    extra = [(u, a, p, s) for u, a, p, s, _e in runs if (u, a, p) not in effects]
    strangers = [(u, p) for u, _a, p, _s in extra if p not in killed]
    result.expect(not strangers, f"extra executions by processes never killed: {strangers[:5]}")
    rescued = _rescue_times(dsn, schema)
    by_job: dict[str, list[tuple[int, float]]] = {}
    for (uid, attempt), at in rescued.items():
        by_job.setdefault(uid, []).append((attempt, at))
    kill_times = sorted(killed.values())
    delays = []
    again = 0
    late: list[tuple[float, float, float, int]] = []  # kill -> re-run, -> rescue, rescue -> re-run; attempt
    for uid, attempt, pid, t_start in extra:
        if pid not in killed or killed[pid] < t_start:
            continue
        later = [s for _a, p, s in by_uid[uid] if s > killed[pid]]
        if later:
            rerun, start = min(later), killed[pid]
            # Orphaned again before it ran: claimed after its rescue by a worker killed before the handler
            # started (no execution logged; the rescuer's entry of that later attempt tells). Its wait then
            # runs from that second kill, taken as the first kill after the rescue (never later than the
            # real one, so the delay is never understated).
            previous = rescued.get((uid, attempt))
            for _later_attempt, at in sorted(
                a for a in by_job.get(uid, []) if a[0] > attempt and a[1] < rerun
            ):
                following = [t for t in kill_times if previous is not None and t >= previous]
                start, previous = (following[0] if following else start), at
                again += 1
            delay = rerun - start
            delays.append(delay)
            at = rescued.get((uid, attempt))
            if delay > timings.bound and at is not None:
                late.append((round(delay, 1), round(at - killed[pid], 1), round(min(later) - at, 1), attempt))
        else:
            result.violations.append(f"orphan {uid} of killed pid {pid} never ran again")
    worst = max(delays, default=0.0)
    ranked = sorted(delays)
    result.figures.update(
        orphans=len(delays), orphan_rerun_max_s=round(worst, 2), bound_s=timings.bound,
        orphan_rerun_p50_s=round(ranked[len(ranked) // 2], 2) if ranked else 0.0,
        orphans_over_bound=sum(d > timings.bound for d in delays), orphaned_again_before_running=again,
        late_orphans_rerun_rescue_claim_s=sorted(late, reverse=True)[:10],
    )  # fmt: skip
    result.expect(
        worst <= timings.bound or not strict, f"an orphan waited {worst:.1f} s > B = {timings.bound} s"
    )


def _rescue_times(dsn: str, schema: str) -> dict[tuple[str, int], float]:
    """When the rescuer took each (uid, attempt) back from its lost worker (the error entry it wrote)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT j.args->>'uid', (e->>'attempt')::int, extract(epoch FROM (e->>'at')::timestamptz) "
            f"FROM (SELECT args, errors FROM {schema}.jobs UNION ALL "
            f"SELECT args, errors FROM {schema}.finished_jobs) j, jsonb_array_elements(j.errors) e "
            f"WHERE e->>'reason' IN ('lease_expired', 'worker_crash')"
        ).fetchall()
    return {(uid, attempt): float(at) for uid, attempt, at in rows}


# ----- R3: server restarts
def r3_restarts(
    logs: Path, *, jobs: int = 600, produce_for: float = 12.0, workers: int = 3, concurrency: int = 4,
    restarts: tuple[tuple[float, str], ...] = ((3.0, "fast"), (7.0, "immediate")), down: float = 2.0,
    ms: tuple[int, int] = (10, 100), timings: Timings = SMALL, drain_timeout: float = 90.0,
    strict: bool = False,
) -> Result:  # fmt: skip
    """Producers and workers against a server stopped (fast, then immediate) and started again."""
    result = Result("R3 server restarts")
    server = PgServer().init()
    schema = "chaos_r3"
    try:
        app = setup(server.dsn, schema)
        ledger = oracle.Ledger()
        unknown: set[str] = set()
        fleet = Fleet(worker_env(server.dsn, schema), logs, workers, timings.options(concurrency)).start()
        wait_until(lambda: _registered(server.dsn, schema) >= workers, 60, "workers to start")
        stop = threading.Event()
        producer = threading.Thread(
            target=_produce, args=(app, ledger, unknown, uids(jobs, "r3"), produce_for, ms, stop), daemon=True
        )
        began = time.monotonic()
        producer.start()
        reconnects: list[float] = []
        for at, mode in restarts:
            time.sleep(max(0.0, at - (time.monotonic() - began)))
            server.restart(mode, down)
            reconnects.append(_all_back(server.dsn, schema, workers))
        producer.join(produce_for + 120)
        result.figures["drain_s"] = round(drain(server.dsn, schema, drain_timeout), 1)
        alive = len(fleet.alive())
        fleet.stop()
        app.close()
        verdict = oracle.check(server.dsn, schema, ledger)
        resume = _resume_delays(server, schema, fleet)
    finally:
        server.destroy()
    result.figures.update(verdict.summary(), unknown_then_retried=len(unknown), worker_exits=len(fleet.exits),
                          workers_back_after_up_s=[round(r, 2) for r in reconnects],
                          first_job_after_up_max_s=round(max(resume, default=0.0), 2))  # fmt: skip
    result.expect(verdict.valid, f"ledger: {verdict.summary()}")
    result.expect(verdict.jobs_per_uid_max == 1, "an idempotency key made more than one job")
    result.expect(not fleet.exits and alive == workers, f"workers exited: {fleet.exits}")
    result.expect(verdict.states == {"succeeded": verdict.ok}, f"final states {verdict.states}")
    worst = max(reconnects, default=0.0)
    result.expect(worst <= 10.0 or not strict, f"workers were back {worst:.1f} s after the server")
    return result


def _busy_pids(dsn: str, schema: str) -> set[int]:
    """Pids of the workers holding running jobs (worker ids are host:pid:suffix)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(f"SELECT DISTINCT worker FROM {schema}.jobs WHERE state = 'running'").fetchall()
    return {int(r[0].split(":")[1]) for r in rows if r[0] and r[0].count(":") >= 2}


def _all_back(dsn: str, schema: str, workers: int) -> float:
    """Seconds from now (the server just came back) until every worker wrote its heartbeat again."""
    up = time.time()

    def back() -> bool:
        try:
            with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as conn:
                row = conn.execute(
                    f"SELECT count(*) FROM {schema}.workers WHERE last_seen_at > to_timestamp(%s)", (up,)
                ).fetchone()
                return bool(row and row[0] >= workers)
        except psycopg.Error:
            return False

    with contextlib.suppress(TimeoutError):
        wait_until(back, 60, "workers to reconnect", every=0.1)
    return time.time() - up


def _registered(dsn: str, schema: str) -> int:
    try:
        with psycopg.connect(dsn, autocommit=True, connect_timeout=3) as conn:
            row = conn.execute(f"SELECT count(*) FROM {schema}.workers").fetchone()
            return int(row[0]) if row else 0
    except psycopg.Error:
        return 0


def _produce(
    app: pageq.App, ledger: oracle.Ledger, unknown: set[str], keys: list[str], seconds: float,
    ms: tuple[int, int], stop: threading.Event,
) -> None:  # fmt: skip
    """Enqueue ``keys`` evenly over ``seconds``, each with its idempotency key; retry unknown outcomes."""
    pause = seconds / max(1, len(keys))
    pending = list(keys)
    deadline = time.monotonic() + seconds + 110
    while pending and time.monotonic() < deadline:
        uid = pending.pop(0)
        try:
            job_id = app.enqueue_many(
                [chaos_app.work.job(uid=uid, ms=random.randint(*ms), idempotency_key=uid)]
            )
        except pageq.PageqError:
            ledger.record(uid, "info")
            unknown.add(uid)
            pending.append(uid)
            time.sleep(0.05)
            continue
        ledger.record(uid, "ok", job_id[0])
        time.sleep(pause)


def _resume_delays(server: PgServer, schema: str, fleet: Fleet) -> list[float]:
    """For each restart and worker: seconds from the server being up to that worker's next execution."""
    runs = oracle.executions(server.dsn, schema)
    delays = []
    pids = {p.pid for p in fleet.all}
    for _mode, _stopped, up in server.stops:
        for pid in pids:
            after = [t for _u, _a, p, t, _e in runs if p == pid and t >= up]
            if after:
                delays.append(min(after) - up)
    return delays


# ----- R6: fencing races (deterministic, on one database with a frozen clock)
def r6_fencing(dsn: str, schema: str, *, iterations: int = 100, lease: float = 10.0) -> Result:
    """(a) a paused worker acks after its job was rescued and completed by another: 0 rows; (b) the rescuer
    and a completion contend for the row's lock, in both orders: the holder wins, the other changes nothing;
    (c) both at the same instant: exactly one of them finalizes."""
    from pageq.store import ops

    result = Result("R6 fencing races")
    clock = pageq.FrozenClock()
    app = pageq.App(dsn, schema=schema, clock=clock)
    app.migrate()
    store = app.store
    spec = chaos_app.work.job(uid="r6")
    counts = {"a": 0, "b_completion_first": 0, "b_rescue_first": 0, "c_completed": 0, "c_rescued": 0}

    def claim(worker: str) -> ops.Lease:
        (job,) = store.run(ops.claim(["chaos"], 1, clock.now(), lease, worker))
        return job_lease(job)

    def state(job_id: int) -> tuple[str, int, int]:
        job = app.get_job(job_id)
        return job.state.value, job.attempts, len(job.errors)

    try:
        for i in range(iterations):
            # (a) A paused past its lease; the rescuer retries the job; B claims and completes it; A acks.
            (job_id,) = app.enqueue_many([spec])
            mine = claim("A")
            clock.advance(lease + 1)
            rescued = store.run(ops.rescue(clock.now()))
            theirs = claim("B")
            done_b = store.run(ops.complete([theirs], ["1"], clock.now()))
            done_a = store.run(ops.complete([mine], ["1"], clock.now()))
            ok = (
                rescued == (1, 0)
                and done_b == [job_id]
                and done_a == []
                and state(job_id) == ("succeeded", 2, 1)
            )
            result.expect(ok, f"(a) #{i}: rescued={rescued} B={done_b} A={done_a} {state(job_id)}")
            counts["a"] += ok
            # (b) the lock holder wins, in either order
            (job_id,) = app.enqueue_many([spec])
            mine = claim("A")
            clock.advance(lease + 1)
            if i % 2 == 0:
                _completion_holds_the_row(result, app, mine, clock, i, counts)
            else:
                _rescuer_holds_the_row(result, app, mine, clock, i, counts)
            # (c) the same instant
            (job_id,) = app.enqueue_many([spec])
            mine = claim("A")
            clock.advance(lease + 1)
            _race(result, app, mine, clock, i, counts)
    finally:
        app.close()
    result.figures.update(iterations=iterations, runs=3 * iterations, violations=len(result.violations),
                          **counts)  # fmt: skip
    return result


def job_lease(job: pageq.Job) -> Any:
    from pageq.store import ops

    assert job.lease_token is not None
    return ops.Lease(job.id, job.lease_token)


def _completion_holds_the_row(
    result: Result, app: pageq.App, mine: Any, clock: pageq.FrozenClock, i: int, counts: dict[str, int]
) -> None:
    from pageq.store import ops

    with app.store.transaction() as conn:
        done = app.store.run(ops.complete([mine], ["1"], clock.now()), conn)
        rescued = app.store.run(ops.rescue(clock.now()))  # another session: the locked row is skipped
    job = app.get_job(mine.id)
    ok = done == [mine.id] and rescued == (0, 0) and (job.state.value, job.attempts, len(job.errors)) == (
        "succeeded", 1, 0)  # fmt: skip
    result.expect(ok, f"(b1) #{i}: complete={done} rescue={rescued} {job.state} {job.attempts}")
    counts["b_completion_first"] += ok


def _rescuer_holds_the_row(
    result: Result, app: pageq.App, mine: Any, clock: pageq.FrozenClock, i: int, counts: dict[str, int]
) -> None:
    from pageq.store import ops

    outcome: list[Any] = []
    with app.store.transaction() as conn:
        rescued = app.store.run(ops.rescue(clock.now()), conn)
        late = threading.Thread(
            target=lambda: outcome.append(app.store.run(ops.complete([mine], ["1"], clock.now())))
        )
        late.start()
        wait_until(
            lambda: _waiting_on_a_lock(app), 10, "the completion to wait for the rescuer's lock", 0.005
        )
    late.join(10)
    job = app.get_job(mine.id)
    ok = rescued == (1, 0) and outcome == [[]] and (job.state.value, job.attempts, len(job.errors)) == (
        "retrying", 1, 1)  # fmt: skip
    result.expect(ok, f"(b2) #{i}: rescue={rescued} complete={outcome} {job.state} {job.attempts}")
    counts["b_rescue_first"] += ok
    app.cancel(mine.id)  # out of the way of the next claims


def _waiting_on_a_lock(app: pageq.App) -> bool:
    with psycopg.connect(app.store.dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE wait_event_type = 'Lock' AND datname = current_database()"
        ).fetchone()
    return bool(row and row[0])


def _race(
    result: Result, app: pageq.App, mine: Any, clock: pageq.FrozenClock, i: int, counts: dict[str, int]
) -> None:
    from pageq.store import ops

    barrier = threading.Barrier(2)
    out: dict[str, Any] = {}

    def complete() -> None:
        barrier.wait()
        out["complete"] = app.store.run(ops.complete([mine], ["1"], clock.now()))

    def rescue() -> None:
        barrier.wait()
        out["rescue"] = app.store.run(ops.rescue(clock.now()))

    threads = [threading.Thread(target=complete), threading.Thread(target=rescue)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    job = app.get_job(mine.id)
    seen = (out.get("complete"), out.get("rescue"), job.state.value, job.attempts)
    completed = seen == ([mine.id], (0, 0), "succeeded", 1)
    rescued = seen == ([], (1, 0), "retrying", 1)
    result.expect(completed or rescued, f"(c) #{i}: {seen}")
    counts["c_completed"] += completed
    counts["c_rescued"] += rescued
    if rescued:
        app.cancel(mine.id)


# ----- R7: crash-point matrix
CRASHES = (
    "(SELECT count(*) FROM jsonb_array_elements({x}errors) AS e "
    "WHERE e->>'reason' IN ('lease_expired', 'worker_crash'))"
)
"""A finished job's crashes: its errors that the rescuer wrote (finished_jobs has no crashes column)."""
CRASH_TIMINGS = Timings(lease=1.0, heartbeat=0.3, maintenance=0.3, poll=0.2)
# point: (job arguments, expected per job: (executions, claims = attempts, crashes, final state, duplicate
# effects), claims the job needs without a crash). mid_retry_schedule costs no extra claim: the crash undoes
# the retry's write and the rescuer retries the job instead (one LeaseExpired error instead of the handler's).
CRASH_POINTS: dict[str, tuple[dict[str, Any], tuple[int, int, int, str, int], int]] = {
    "after_claim_commit": ({}, (1, 2, 1, "succeeded", 0), 1),
    "mid_handler": ({}, (2, 2, 1, "succeeded", 0), 1),
    "after_handler_before_ack": ({}, (2, 2, 1, "succeeded", 1), 1),
    "after_ack_commit": ({}, (1, 1, 0, "succeeded", 0), 1),
    "mid_retry_schedule": ({"fail": 1}, (2, 2, 1, "succeeded", 0), 2),
    "mid_dlq_move": ({"permanent": True}, (2, 2, 1, "dead", 0), 1),
}


def r7_crash_points(
    dsn: str, schema: str, logs: Path, *, jobs: int = 3, workers: int = 3,
    points: tuple[str, ...] = tuple(CRASH_POINTS), timeout: float = 120.0,
) -> Result:  # fmt: skip
    """For each failpoint, ``jobs`` jobs whose first attempt's worker ``os._exit(137)``s at that point. Each
    worker has its own queue (a lane) that holds one job at a time, so a crash hits exactly one job."""
    result = Result("R7 crash-point matrix")
    app = setup(dsn, schema)
    try:
        for point in points:
            args, expected, baseline = CRASH_POINTS[point]
            keys = uids(jobs, point)
            env = worker_env(dsn, schema, PAGEQ_FAILPOINT=f"{point}:exit@1")
            fleet = Fleet(env, logs / point, workers, CRASH_TIMINGS.options(1), lanes=True).start()
            started = time.monotonic()
            try:
                _one_at_a_time(app, keys, args, workers, timeout)
                with contextlib.suppress(TimeoutError):  # after_ack_commit: the job is done before the exit
                    wait_until(lambda f=fleet: len(f.exits) >= jobs, 10, "the last crash")
            finally:
                fleet.stop()
            seen = _per_job(dsn, schema, keys)
            wrong = {k: v for k, v in seen.items() if v != expected}
            lost = [k for k in keys if k not in seen]
            result.figures[point] = {
                "jobs": jobs, "crashes": len(fleet.exits), "extra_claims_per_job": expected[1] - baseline,
                "wrong": len(wrong), "lost": len(lost), "seconds": round(time.monotonic() - started, 1),
            }  # fmt: skip
            result.expect(not wrong, f"{point}: expected {expected}, got {list(wrong.items())[:3]}")
            result.expect(not lost, f"{point}: lost {lost[:3]}")
            result.expect(len(fleet.exits) == jobs, f"{point}: {len(fleet.exits)} crashes for {jobs} jobs")
    finally:
        app.close()
    return result


def _one_at_a_time(app: pageq.App, keys: list[str], args: dict[str, Any], lanes: int, timeout: float) -> None:
    """Feed each lane's queue the next job once its previous one finished."""
    todo = {lane: keys[lane::lanes] for lane in range(lanes)}
    current: dict[int, int] = {}
    deadline = time.monotonic() + timeout * max(1, len(keys) // lanes)
    while todo or current:
        for lane, job_id in list(current.items()):
            if app.get_job(job_id).state.value in ("succeeded", "dead", "cancelled"):
                del current[lane]
        for lane in [lane for lane in todo if lane not in current]:
            spec = chaos_app.work_plain.job(uid=todo[lane].pop(), queue=f"chaos-{lane}", **args)
            current[lane] = app.enqueue_many([spec])[0]
            if not todo[lane]:
                del todo[lane]
        if time.monotonic() > deadline:
            raise TimeoutError(f"crash-point jobs did not finish: {current}")
        time.sleep(0.05)


def _per_job(dsn: str, schema: str, keys: list[str]) -> dict[str, tuple[int, int, int, str, int]]:
    """Per uid: (executions, attempts, crashes, state, duplicate effects); each job in exactly one table."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            f"""SELECT j.args->>'uid',
                       (SELECT count(*) FROM {schema}.exec_log e WHERE e.uid = j.args->>'uid'),
                       j.attempts, {CRASHES.format(x="j.")}, j.state,
                       (SELECT count(*) FROM {schema}.effect_dups d WHERE d.uid = j.args->>'uid'),
                       (SELECT count(*) FROM {schema}.jobs l WHERE l.id = j.id)
                FROM {schema}.finished_jobs j WHERE j.args->>'uid' = ANY(%s)""",
            (keys,),
        ).fetchall()
    return {
        r[0]: (int(r[1]), r[2], r[3], r[4], int(r[5])) if r[6] == 0 else (-1, -1, -1, "both", -1)
        for r in rows
    }


# ----- R9: poison pills
def r9_poison(
    dsn: str, schema: str, logs: Path, *, poison: int = 2, normal: int = 100, workers: int = 2,
    concurrency: int = 2, timings: Timings = CRASH_TIMINGS, drain_timeout: float = 120.0,
) -> Result:  # fmt: skip
    """Jobs that kill their worker (``os._exit(1)``) among normal ones: each is buried with reason
    worker_crash after exactly 3 crashes; no normal job is lost."""
    result = Result("R9 poison pill")
    app = setup(dsn, schema)
    ledger = oracle.Ledger()
    bad = uids(poison, "poison")
    specs = [chaos_app.work.job(uid=u, ms=random.randint(10, 80)) for u in uids(normal, "r9")]
    for i, uid in enumerate(bad):
        specs.insert((i + 1) * len(specs) // (poison + 1), chaos_app.poison.job(uid=uid))
    enqueue_all(app, oracle.Ledger(), specs)
    for spec in specs:
        if spec.task == "work":
            ledger.record(str(spec.args["uid"]), "ok")
    fleet = Fleet(worker_env(dsn, schema), logs, workers, timings.options(concurrency)).start()
    try:
        result.figures["drain_s"] = round(drain(dsn, schema, drain_timeout), 1)
    finally:
        fleet.stop()
        app.close()
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT args->>'uid', state, {CRASHES.format(x='f.')}, errors->-1->>'reason', "
            f"(SELECT count(*) FROM {schema}.exec_log e WHERE e.uid = f.args->>'uid') "
            f"FROM {schema}.finished_jobs f WHERE task = 'poison'"
        ).fetchall()
    verdict = oracle.check(dsn, schema, ledger)
    quarantined = [r for r in rows if r[1:] == ("dead", 3, "worker_crash", 3)]
    result.figures.update(poison=poison, quarantined_after_3=len(quarantined), crashes=len(fleet.exits),
                          normal_lost=len(verdict.lost), normal_effects=verdict.effects)  # fmt: skip
    result.expect(len(quarantined) == poison, f"poison jobs: {rows}")
    result.expect(not verdict.lost and verdict.effects == normal, f"normal jobs: {verdict.summary()}")
    result.expect(len(fleet.exits) == 3 * poison, f"{len(fleet.exits)} crashes, {3 * poison} expected")
    return result


# ----- R4: backend-kill storm
def r4_backend_storm(
    dsn: str, schema: str, logs: Path, *, jobs: int = 400, workers: int = 3, concurrency: int = 4,
    every: float = 0.5, storm_for: float = 6.0, ms: tuple[int, int] = (20, 150), timings: Timings = SMALL,
    drain_timeout: float = 90.0,
) -> Result:  # fmt: skip
    """``pg_terminate_backend`` of a random worker session (every other time the LISTEN one) every
    ``every`` seconds: nothing lost, no effect twice, no worker exits, the listeners come back."""
    from chaos.faults import terminate_backends

    result = Result("R4 backend-kill storm")
    app = setup(dsn, schema)
    ledger = oracle.Ledger()
    enqueue_all(app, ledger, [chaos_app.work.job(uid=u, ms=random.randint(*ms)) for u in uids(jobs, "r4")])
    fleet = Fleet(worker_env(dsn, schema), logs, workers, timings.options(concurrency)).start()
    killed = listeners = 0
    try:
        wait_until(lambda: _registered(dsn, schema) >= workers, 60, "workers to start")
        started = time.monotonic()
        turn = 0
        while time.monotonic() - started < storm_for:
            time.sleep(every)
            turn += 1
            hit = terminate_backends(dsn, listen=True if turn % 2 else None)
            killed += len(hit)
            listeners += len(hit) if turn % 2 else 0
        result.figures["drain_s"] = round(drain(dsn, schema, drain_timeout), 1)
        relisten = fleet.logged("listening again")
    finally:
        fleet.stop()
        app.close()
    verdict = oracle.check(dsn, schema, ledger)
    result.figures.update(verdict.summary(), backends_killed=killed, listen_killed=listeners,
                          relistened=relisten, worker_exits=len(fleet.exits))  # fmt: skip
    result.expect(verdict.valid and verdict.effects == jobs, f"ledger: {verdict.summary()}")
    result.expect(not fleet.exits, f"workers exited: {fleet.exits}")
    result.expect(relisten >= 1 or listeners == 0, "no worker listened again after losing its LISTEN session")
    return result


# ----- R5: half-open connection, self-fencing
def r5_half_open(
    logs: Path, *, timings: Timings = CRASH_TIMINGS, hole_for: float | None = None, sync: bool = False,
    strict: bool = False,
) -> Result:  # fmt: skip
    """Worker A reaches the server through a proxy that black-holes its connections (2 x L) while it runs a
    long job; A must give the job up within L (self-fence), B runs it, and A's late writes change nothing."""
    from chaos.faults import Proxy

    result = Result("R5 half-open connection" + (" (sync handler)" if sync else ""))
    server = PgServer().init()
    schema = "chaos_r5"
    proxy = Proxy("127.0.0.1", server.port).start()
    hole_for = hole_for or max(2 * timings.lease, 6.0)
    a = Fleet(worker_env(proxy.dsn(server.dsn), schema), logs / "a", 1, timings.options(1), respawn=False)
    b = Fleet(worker_env(server.dsn, schema), logs / "b", 1, timings.options(1), respawn=False)
    try:
        app = setup(server.dsn, schema)
        uid = "long"
        long_ms = int((hole_for + 2 * timings.lease + 2) * 1000)  # outlasts the black hole
        spec = (chaos_app.long_sync.job(uid=uid, seconds=long_ms / 1000) if sync
                else chaos_app.work.job(uid=uid, ms=long_ms))  # fmt: skip
        (job_id,) = app.enqueue_many([spec])
        a.start()
        wait_until(lambda: app.get_job(job_id).state.value == "running", 60, "A to claim the job")
        b.start()
        wait_until(lambda: _registered(server.dsn, schema) >= 2, 60, "B to start")
        holed = time.time()
        proxy.blackhole()
        fenced = wait_until(lambda: a.logged("self-fence"), hole_for, "A to fence itself")
        fenced_after = time.time() - holed
        wait_until(lambda: app.get_job(job_id).attempts >= 2, hole_for + timings.bound, "B to claim the job")
        reclaimed_after = time.time() - holed
        time.sleep(max(0.0, hole_for - (time.time() - holed)))
        proxy.restore()
        wait_until(lambda: app.get_job(job_id).state.value == "succeeded", 60, "the job to succeed")
        time.sleep(timings.lease)  # A's late writes, if any, arrive meanwhile
        job = app.get_job(job_id)
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            effects = conn.execute(f"SELECT pid FROM {schema}.effects").fetchall()
            dups = conn.execute(f"SELECT count(*) FROM {schema}.effect_dups").fetchone()
        a_alive = bool(a.alive())
        app.close()
    finally:
        for fleet in (a, b):
            fleet.stop()
        proxy.close()
        server.destroy()
    b_pid = b.all[0].pid
    result.figures.update(fenced_after_s=round(fenced_after, 2), reclaimed_after_s=round(reclaimed_after, 2),
                          lease_s=timings.lease, bound_s=timings.bound, attempts=job.attempts,
                          effects=len(effects), a_survived=a_alive)  # fmt: skip
    result.expect(bool(fenced), "A did not fence itself")
    result.expect(fenced_after <= timings.lease or not strict, f"A fenced after {fenced_after:.1f} s")
    result.expect(reclaimed_after <= timings.bound or not strict, f"B claimed after {reclaimed_after:.1f} s")
    result.expect(job.state.value == "succeeded" and job.attempts == 2, f"job: {job.state} {job.attempts}")
    result.expect([r[0] for r in effects] == [b_pid] and dups == (0,), f"effects {effects} dups {dups}")
    result.expect(a_alive, "worker A exited")
    return result


# ----- R14: transactional and idempotent enqueue
def r14_enqueue(dsn: str, schema: str, *, rounds: int = 20, callers: int = 16, batch: int = 2000) -> Result:
    """(a) rolled back enqueues never run; (b) committed ones are invisible before the commit; (c) concurrent
    enqueues with one idempotency key make one job; (d) a batch with one bad row inserts nothing."""
    from pageq.store import ops

    result = Result("R14 transactional and idempotent enqueue")
    app = setup(dsn, schema)
    try:
        seen_before = invisible = visible = expected = 0
        for n in (min(rounds, 50), ops.COPY_THRESHOLD + 10):  # one INSERT, then the COPY path
            with psycopg.connect(dsn) as conn:
                app.enqueue_many([chaos_app.work.job(uid=f"rb-{n}-{i}") for i in range(n)], conn=conn)
                conn.rollback()
                seen_before += len(app.store.run(ops.claim(["chaos"], 1000, app.clock.now(), 30, "x")))
                app.enqueue_many([chaos_app.work.job(uid=f"c-{n}-{i}") for i in range(n)], conn=conn)
                invisible += len(app.store.run(ops.claim(["chaos"], 1000, app.clock.now(), 30, "x")))
                conn.commit()
            visible += len(app.store.run(ops.claim(["chaos"], 1000, app.clock.now(), 30, "x")))
            expected += n
        result.expect(
            seen_before == 0 and invisible == 0 and visible == expected,
            f"rolled back {seen_before}, before commit {invisible}, after {visible}/{expected}",
        )
        wrong = 0
        for r in range(rounds):
            wrong += _same_key(app, f"key-{r}", callers)
        result.expect(wrong == 0, f"{wrong} rounds made more than one job for a key")
        specs = [chaos_app.work.job(uid=f"b-{i}") for i in range(batch)]
        bad = JobSpec(
            task="work", args={"uid": "bad"}, queue="chaos", priority=40_000, max_attempts=1, timeout=None
        )
        specs[batch // 2] = bad
        before = live_jobs(dsn, schema)
        error = ""
        try:
            app.enqueue_many(specs)
        except pageq.PageqError as exc:
            error = str(exc)
        inserted = live_jobs(dsn, schema) - before
        result.expect(inserted == 0 and bool(error), f"bad batch: inserted {inserted}, error {error!r}")
        result.figures.update(rolled_back_claimed=seen_before, visible_before_commit=invisible,
                              visible_after=visible, key_rounds=rounds, callers=callers, rounds_wrong=wrong,
                              bad_batch_inserted=inserted, bad_batch_error=error)  # fmt: skip
    finally:
        app.close()
    return result


def _same_key(app: pageq.App, key: str, callers: int) -> int:
    barrier = threading.Barrier(callers)
    ids: list[int] = []
    lock = threading.Lock()

    def enqueue() -> None:
        barrier.wait()
        (job_id,) = app.enqueue_many([chaos_app.work.job(uid=key, idempotency_key=key)])
        with lock:
            ids.append(job_id)

    threads = [threading.Thread(target=enqueue) for _ in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    with psycopg.connect(app.store.dsn, autocommit=True) as conn:
        row = conn.execute(
            f"SELECT count(*) FROM (SELECT id FROM {app.schema}.jobs WHERE args->>'uid' = %s UNION ALL "
            f"SELECT id FROM {app.schema}.finished_jobs WHERE args->>'uid' = %s) j",
            (key, key),
        ).fetchone()
    return int(not (len(ids) == callers and len(set(ids)) == 1 and row == (1,)))
