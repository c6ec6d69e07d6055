"""Rotation of the live-jobs partitions: leftovers move, nothing is lost or doubled, a busy one waits."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from datetime import timedelta
from typing import Any

import psycopg
import pytest

import pageq
import pageq.testing
from pageq.errors import DatabaseError
from pageq.store import ops
from pageq.worker import maintenance


def rotate(app: pageq.App, *, min_jobs: int = 0, max_age: float = 0.0, max_move: int = 10_000) -> int | None:
    return app.store.run(ops.rotate(min_jobs, max_age, max_move, 100))


def placement(app: pageq.App) -> dict[str, Any]:
    """The current slot and how many rows each partition holds (dead ones not counted)."""
    with psycopg.connect(app.database.dsn, autocommit=True) as conn:
        slot = conn.execute(f"SELECT slot FROM {app.schema}.rotation").fetchone()
        p0 = conn.execute(f"SELECT count(*) FROM {app.schema}.jobs_p0").fetchone()
        p1 = conn.execute(f"SELECT count(*) FROM {app.schema}.jobs_p1").fetchone()
    assert slot and p0 and p1
    return {"slot": slot[0], "p0": p0[0], "p1": p1[0]}


def test_new_jobs_go_to_the_current_slot_by_every_path(app: pageq.App) -> None:
    task = app.task(name="noop")(lambda: None)
    task.enqueue()  # one INSERT
    app.enqueue_many([task.job() for _ in range(ops.COPY_THRESHOLD)])  # COPY
    assert placement(app) == {"slot": 0, "p0": 1 + ops.COPY_THRESHOLD, "p1": 0}
    assert rotate(app) == 0  # p1 was empty: nothing to move
    task.enqueue()
    app.enqueue_many([task.job() for _ in range(ops.COPY_THRESHOLD)])
    assert placement(app) == {"slot": 1, "p0": 1 + ops.COPY_THRESHOLD, "p1": 1 + ops.COPY_THRESHOLD}


def test_leftovers_keep_their_state_and_leases(app: pageq.App) -> None:
    task = app.task(name="noop")(lambda: None)
    scheduled = task.enqueue(delay=3600)
    queued = [task.enqueue() for _ in range(3)]
    now = app.clock.now()
    claimed = app.store.run(ops.claim(["default"], 2, now, 30.0, "w1"))
    assert len(claimed) == 2
    done = ops.Lease(claimed[0].id, str(claimed[0].lease_token))
    running = ops.Lease(claimed[1].id, str(claimed[1].lease_token))
    assert app.store.run(ops.complete([done], [None], now)) == [done.id]

    assert rotate(app) == 0  # switches new jobs to p1; p0 keeps its jobs
    assert rotate(app) == 3  # moves p0's live jobs (scheduled, running, one queued) to p1, truncates p0
    assert placement(app) == {"slot": 0, "p0": 0, "p1": 3}

    # the running job's lease still works: heartbeat, then complete
    assert app.store.run(ops.heartbeat([running], now, 30.0)) == [running.id]
    assert app.store.run(ops.complete([running], ['"ok"'], now)) == [running.id]
    jobs = {job_id: app.get_job(job_id) for job_id in [scheduled, *queued]}
    states = {job_id: job.state for job_id, job in jobs.items() if job}
    assert states == {
        scheduled: pageq.JobState.SCHEDULED,
        queued[0]: pageq.JobState.SUCCEEDED,
        queued[1]: pageq.JobState.SUCCEEDED,
        queued[2]: pageq.JobState.QUEUED,
    }
    assert jobs[scheduled].run_at > now + timedelta(minutes=59)  # type: ignore[union-attr]


def test_rotation_waits_until_due(app: pageq.App) -> None:
    task = app.task(name="noop")(lambda: None)
    assert rotate(app, min_jobs=5, max_age=3600) is None  # nothing enqueued since the last rotation
    for _ in range(4):
        task.enqueue()
    assert rotate(app, min_jobs=5, max_age=3600) is None  # 4 < 5 and not old enough
    task.enqueue()
    assert rotate(app, min_jobs=5, max_age=3600) == 0
    task.enqueue()
    assert rotate(app, min_jobs=5, max_age=0) is not None  # old enough with one new job


def test_a_big_backlog_is_not_moved(app: pageq.App) -> None:
    task = app.task(name="noop")(lambda: None)
    app.enqueue_many([task.job() for _ in range(50)])
    assert rotate(app) == 0
    assert rotate(app, max_move=49) is None  # 50 live jobs in p0: stays, no switch
    assert placement(app) == {"slot": 1, "p0": 50, "p1": 0}
    assert rotate(app, max_move=50) == 50
    assert placement(app) == {"slot": 0, "p0": 0, "p1": 50}


def test_a_transaction_on_the_partition_postpones_rotation(app: pageq.App) -> None:
    task = app.task(name="noop")(lambda: None)
    task.enqueue()
    assert rotate(app) == 0
    with psycopg.connect(app.database.dsn) as holder:
        holder.execute(f"SELECT count(*) FROM {app.schema}.jobs")  # ACCESS SHARE on both partitions
        with pytest.raises(DatabaseError, match="lock timeout"):
            rotate(app)
        holder.rollback()
    assert placement(app) == {"slot": 1, "p0": 1, "p1": 0}
    assert rotate(app) == 1


def test_a_held_snapshot_does_not_stop_rotation(app: pageq.App) -> None:
    """The xmin-horizon trap: dead tuples survive VACUUM under an old snapshot, not TRUNCATE."""
    task = app.task(name="noop")(lambda: None)
    with psycopg.connect(app.database.dsn) as holder:
        holder.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT txid_current()")
        app.enqueue_many([task.job() for _ in range(300)])
        now = app.clock.now()
        claimed = app.store.run(ops.claim(["default"], 300, now, 30.0, "w1"))
        leases = [ops.Lease(job.id, str(job.lease_token)) for job in claimed]
        app.store.run(ops.complete(leases, [None] * len(leases), now))
        assert rotate(app) == 0
        assert rotate(app) == 0  # p0: 300 dead tuples, 0 live: truncated under the held snapshot
        with psycopg.connect(app.database.dsn, autocommit=True) as conn:
            size = conn.execute(f"SELECT pg_relation_size('{app.schema}.jobs_p0')").fetchone()
        assert size == (0,)
        holder.rollback()


async def test_rotating_all_the_time_loses_and_doubles_nothing(app: pageq.App) -> None:
    """Producers, a worker and a rotation loop at once: every job runs once and only once."""
    seen: Counter[int] = Counter()

    @app.task(name="count", queue="rot")
    async def count(ctx: pageq.Context) -> None:
        seen[ctx.job.id] += 1

    stop = threading.Event()
    rotations = Counter[str]()

    def rotator() -> None:
        while not stop.is_set():
            try:
                moved = rotate(app)
                rotations["done" if moved is not None else "skipped"] += 1
            except DatabaseError:
                rotations["busy"] += 1

    ids: list[int] = []

    def producer() -> None:
        for k in range(40):
            if k % 2:
                ids.extend(app.enqueue_many([count.job() for _ in range(250)]))
            else:
                ids.extend(count.enqueue() for _ in range(5))

    thread = threading.Thread(target=rotator)
    thread.start()
    try:
        worker = asyncio.create_task(asyncio.to_thread(producer))
        await pageq.testing.drain(app, ["rot"], concurrency=50, poll_interval=0.01, timeout=120)
        await worker
        await pageq.testing.drain(app, ["rot"], concurrency=50, poll_interval=0.01, timeout=120)
    finally:
        stop.set()
        thread.join()
    assert len(ids) == len(set(ids)) == 20 * 250 + 20 * 5
    assert set(seen) == set(ids)
    assert max(seen.values()) == 1
    assert rotations["done"] >= 2
    stats = {s.queue: s for s in app.queue_stats()}
    assert stats["rot"].counts[pageq.JobState.SUCCEEDED] == len(ids)


async def test_the_leader_rotates(app: pageq.App, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(maintenance, "ROTATE_JOBS", 10)
    task = app.task(name="noop", queue="lead")(lambda: None)
    app.enqueue_many([task.job() for _ in range(25)])
    await pageq.testing.drain(app, ["lead"], maintenance_interval=0.05)
    assert placement(app)["slot"] == 1
