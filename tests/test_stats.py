"""`app.stats` against real jobs run by a real worker: queues, series, workers, system, access, caching."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

import pageq
from apps.monitored import enqueue_all, register
from monitoring import FAST, QUEUES, roll_up, run_jobs
from pageq import JobState
from test_rls import PASSWORD, connect_as

T = TypeVar("T")


def eventually(read: Callable[[], T], ok: Callable[[T], bool], timeout: float = 30.0) -> T:
    """Read until ``ok`` holds (workers publish every 0.1 s here), failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if ok(value) or time.monotonic() > deadline:
            assert ok(value), value
            return value
        time.sleep(0.05)


async def test_queues_and_series_count_real_jobs(app: pageq.App) -> None:
    register(app)
    await run_jobs(app)
    last = roll_up(app)
    queues = {q.queue: q for q in app.stats.queues(window=60)}
    assert list(queues) == ["bulk", "mon"]
    mon, bulk = queues["mon"], queues["bulk"]
    assert mon.totals.counts == pageq.Counts(enqueued=11, succeeded=9, failed=7, dead=2, cancelled=0)
    assert bulk.totals.counts == pageq.Counts(enqueued=4, succeeded=4)
    assert mon.totals.timed == 11 and mon.totals.run_seconds >= 0 and mon.totals.wait_seconds >= 0
    assert mon.dead == 2 and mon.jobs[JobState.QUEUED] == 0 and mon.oldest_due_age is None
    assert [t.task for t in mon.tasks] == ["doomed", "flaky", "ok"]
    doomed = mon.tasks[0]
    assert (doomed.dead, doomed.totals.counts.failed, doomed.totals.counts.dead) == (2, 4, 2)
    assert mon.rates.succeeded > 0 and mon.rates.enqueued == pytest.approx(
        sum(t.rates.enqueued for t in mon.tasks)
    )
    assert any(q.latency is not None for q in queues.values())  # the minute of the last finish is the newest
    for queue in queues.values():
        if queue.latency is not None:
            wait, run = queue.latency.wait, queue.latency.run
            assert 0 <= wait.p50 <= wait.p95 <= wait.p99 and 0 <= run.p50 <= run.p95 <= run.p99

    series = app.stats.series(minutes=10)
    steps = {b.minute - a.minute for a, b in itertools.pairwise(series)}
    assert series[-1].minute == last and steps <= {timedelta(minutes=1)}
    assert sum((p.counts for p in series), pageq.Counts()) == pageq.Counts(15, 13, 7, 2, 0)
    assert sum(p.latency.jobs for p in series if p.latency) == 15  # every finished job that ran, once
    assert series[-1].jobs is not None and set(series[-1].jobs.values()) == {0}  # sampled: all done
    ok = app.stats.series(minutes=10, queue="mon", task="ok")
    assert sum(p.counts.succeeded for p in ok) == 6 and sum(p.counts.failed for p in ok) == 0
    assert sum(p.counts.enqueued for p in app.stats.series(minutes=10, task="bulk")) == 4


async def test_the_async_twins_read_the_same(app: pageq.App) -> None:
    register(app)
    await run_jobs(app)
    roll_up(app)
    stats = app.stats
    stats.ttl = 0  # no cache: each call reads
    assert await stats.queues_async() == await asyncio.to_thread(stats.queues)
    assert await stats.series_async(minutes=5, queue="mon") == await asyncio.to_thread(
        stats.series, 5, queue="mon"
    )
    assert (await stats.system_async()).database
    assert await stats.workers_async() == []
    await app.aclose()


async def test_workers_publish_their_load(app: pageq.App) -> None:
    register(app)
    app.stats.ttl = 0
    worker = app.worker(QUEUES, 7, **FAST)
    running = asyncio.create_task(worker.run())
    try:
        await worker.started.wait()
        enqueue_all(app)
        (published,) = await asyncio.to_thread(
            eventually, app.stats.workers, lambda ws: len(ws) == 1 and ws[0].processed == 20
        )  # 15 jobs, 5 of them twice (3 flaky, 2 doomed)
        assert (published.id, published.capacity, published.failed, published.stale) == (
            worker.id,
            7,
            7,
            False,
        )
        assert published.queues == tuple(QUEUES) and published.running == 0
        assert published.rss_bytes is not None and published.rss_bytes > 10 * 2**20
        assert published.heartbeat_age < 10 and published.last_heartbeat <= datetime.now(UTC)
        system = await asyncio.to_thread(
            eventually, app.stats.system, lambda s: s.maintenance and s.rolled_until is not None
        )
        assert system.leader == worker.id and system.workers == 1 and system.round_trip is not None
        assert system.rollup_lag is not None and system.rollup_lag < 180
    finally:
        worker.stop()
        await running
    assert (
        app.stats.workers() == [] and not app.stats.system().maintenance
    )  # deregistered, leadership given up


def test_an_unreachable_database_is_reported_not_raised() -> None:
    app = pageq.App("postgresql://postgres@127.0.0.1:1/test", schema="nowhere")
    system = app.stats.system()
    assert not system.database and system.error and "127.0.0.1" in system.error


async def test_a_principal_sees_only_what_it_may_read(app: pageq.App, dsn: str) -> None:
    register(app)
    await run_jobs(app)
    roll_up(app)
    app.security.create_principal("bulk-viewer")
    app.security.grant("bulk-viewer", "read", queue="bulk")
    app.security.create_principal("ok-viewer")
    app.security.grant("ok-viewer", "read", queue="mon", task="ok")
    viewer = pageq.App(dsn, schema=app.schema, principal="bulk-viewer")
    narrow = pageq.App(dsn, schema=app.schema, principal="ok-viewer")
    try:
        assert [q.queue for q in viewer.stats.queues(window=60)] == ["bulk"]
        assert sum(p.counts.succeeded for p in viewer.stats.series(10, queue="bulk")) == 4
        with pytest.raises(pageq.AccessDeniedError):
            viewer.stats.series(10, queue="mon")
        with pytest.raises(pageq.AccessDeniedError):
            viewer.stats.series(10)  # everything: needs read on every queue
        (mon,) = narrow.stats.queues(window=60)
        assert [t.task for t in mon.tasks] == ["ok"] and mon.totals.counts.succeeded == 6
        assert mon.latency is None and mon.dead == 0  # the queue's own percentiles cover other tasks
    finally:
        viewer.close()
        narrow.close()


def test_reads_are_cached_for_a_second_and_checked(app: pageq.App) -> None:
    app.task(name="email.send")(lambda: None)
    app.security.create_principal("viewer")
    app.security.grant("viewer", "read")
    app.stats.ttl = 60.0
    first = app.stats.queues()
    app.enqueue("email.send")  # not seen while the read is kept, by the app or an app acting for a principal
    assert app.stats.queues() == first == app.acting_as("viewer").stats.queues() == []
    app.stats.invalidate()
    shown = app.acting_as("viewer").stats.queues()  # read anew, and shared with the app
    assert [q.jobs[pageq.JobState.QUEUED] for q in shown] == [1] and app.stats.queues() == shown
    assert app.stats.system() is not app.stats.system()  # the health check always asks
    stats = app.stats
    for bad in (lambda: stats.queues(window=0), lambda: stats.series(0), lambda: stats.workers(stale_after=0),
                lambda: stats.series(5, queue="no spaces")):  # fmt: skip
        with pytest.raises(pageq.InvalidOptionError):
            bad()


def test_restricted_roles_roll_up_everything_or_nothing(app: pageq.App, dsn: str) -> None:
    """A leader running as the worker role counts every queue (stats_rollup() runs as the schema's owner);
    a producer role may not roll up, nor read the rollups."""
    for name in ("email.send", "sms.send"):
        app.task(name=name)(lambda: None)
        created = app.get_job(app.enqueue(name)).created_at
    sec = app.security
    for principal, kind in (("mailer", "worker"), ("shop", "producer")):
        sec.create_principal(principal)
        sec.grant(principal, "work" if kind == "worker" else "enqueue", task="email.send")
    roles = {
        kind: sec.create_db_login(p, kind, PASSWORD)
        for p, kind in (("mailer", "worker"), ("shop", "producer"))
    }
    s, later = (
        app.schema,
        created.replace(second=0, microsecond=0) + timedelta(seconds=71),
    )  # that minute settled
    call = f"SELECT {s}.stats_rollup(%s, '10 s', '25 h', 10)"
    with connect_as(
        dsn, make_conninfo(dsn, user=roles["worker"], password=PASSWORD), roles["worker"]
    ) as conn:
        assert conn.execute(f"SELECT count(*) FROM {s}.jobs").fetchone() == (1,)  # it sees its task only
        assert conn.execute(call, [later]).fetchone() == (1,)  # the first rollup: the minute of the jobs
        total = f"SELECT sum(enqueued) FROM {s}.stats_minute WHERE queue = '*' AND task = '*'"
        assert conn.execute(total).fetchone() == (2,)
    with connect_as(
        dsn, make_conninfo(dsn, user=roles["producer"], password=PASSWORD), roles["producer"]
    ) as conn:
        for statement in (call, f"SELECT * FROM {s}.stats_totals"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement, [later] if "%s" in statement else None)
