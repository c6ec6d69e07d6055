"""History in time partitions: created ahead, dropped past the retention, dead jobs kept."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest

import pageq
import pageq.testing
from pageq import JobState
from pageq.store import ops

T0 = datetime(2031, 3, 10, 12, 0, tzinfo=UTC)
ERROR = json.dumps({"attempt": 1, "error": "Boom"})


@pytest.fixture
def clock() -> pageq.FrozenClock:
    return pageq.FrozenClock(T0)


@pytest.fixture
def frozen(dsn: str, schema: str, clock: pageq.FrozenClock) -> Iterator[pageq.App]:
    app = pageq.App(dsn, schema=schema, clock=clock)
    app.migrate()
    clear(app)
    yield app
    app.close()
    app.drop_schema()


def partitions(app: pageq.App) -> dict[str, int]:
    """History partition name -> rows in it."""
    with psycopg.connect(app.database.dsn, autocommit=True) as conn:
        names = [
            row[0]
            for row in conn.execute(
                "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
                " WHERE i.inhparent = %s::regclass ORDER BY 1",
                (f"{app.schema}.finished_jobs",),
            )
        ]
        counts = {}
        for name in names:  # the leader may drop one meanwhile
            with contextlib.suppress(psycopg.errors.UndefinedTable):
                counts[name] = conn.execute(f"SELECT count(*) FROM {app.schema}.{name}").fetchone()[0]  # type: ignore[index]
        return counts


def finish(app: pageq.App, n: int, *, dead: int = 0) -> list[int]:
    """Enqueue n jobs, claim them, complete n - dead and bury `dead` of them, at the app's clock."""
    task = app.get_task("noop")
    ids = app.enqueue_many([task.job() for _ in range(n)])
    now = app.clock.now()
    claimed = app.store.run(ops.claim(["default"], n, now, 30.0, "w"))
    leases = [ops.Lease(job.id, str(job.lease_token)) for job in claimed]
    app.store.run(ops.complete(leases[dead:], [None] * (n - dead), now))
    app.store.run(ops.bury(leases[:dead], [ERROR] * dead, now))
    return ids


def clear(app: pageq.App) -> None:
    """Drop the partitions the migration made for the real today and the next days."""
    app.store.run(ops.history_drop(datetime.now(UTC) + timedelta(days=3), 100))
    assert list(partitions(app)) == ["finished_jobs_default"]


def set_period(app: pageq.App, period: str) -> None:
    app.set_history_period({"1 second": 1, "1 hour": 3600}[period])


def test_jobs_finish_into_the_partition_of_their_day(frozen: pageq.App) -> None:
    frozen.task(name="noop")(lambda: None)
    assert frozen.store.run(ops.history_prepare(T0)) == 3  # the day of T0 and the next two
    finish(frozen, 5, dead=1)
    assert partitions(frozen) == {
        "finished_jobs_20310310t000000": 5,
        "finished_jobs_20310311t000000": 0,
        "finished_jobs_20310312t000000": 0,
        "finished_jobs_default": 0,
    }
    assert frozen.store.run(ops.history_prepare(T0)) == 0  # idempotent


def test_retention_drops_whole_partitions_and_keeps_dead_jobs(
    frozen: pageq.App, clock: pageq.FrozenClock
) -> None:
    frozen.task(name="noop")(lambda: None)
    frozen.store.run(ops.history_prepare(T0))
    old = finish(frozen, 4, dead=1)
    clock.advance(86400)
    new = finish(frozen, 2)
    # nothing has ended before the cut-off yet
    assert frozen.store.run(ops.history_drop(T0, 100)) == 0
    assert frozen.store.run(ops.history_drop(T0 + timedelta(days=1), 100)) == 1
    assert partitions(frozen) == {
        "finished_jobs_20310311t000000": 2,
        "finished_jobs_20310312t000000": 0,
        "finished_jobs_default": 1,  # the dead job of the dropped day
    }
    dead = frozen.get_job(old[0])
    assert dead.state is JobState.DEAD and dead.errors[-1].error == "Boom"
    assert [job.id for job in frozen.dead_jobs()] == [old[0]]
    with pytest.raises(pageq.JobNotFoundError):
        frozen.get_job(old[1])
    assert {frozen.get_job(i).state for i in new} == {JobState.SUCCEEDED}
    # the dead job can still be requeued from the default partition
    assert frozen.requeue_dead([old[0]]) == [old[0]]
    assert frozen.get_job(old[0]).state is JobState.QUEUED


def test_rows_outside_every_range_go_to_the_default_partition(frozen: pageq.App) -> None:
    """Finishing never fails for want of a partition; their period is then not created (it would clash)."""
    frozen.task(name="noop")(lambda: None)
    finish(frozen, 3)  # T0 is years ahead of the partitions the migration made
    assert partitions(frozen)["finished_jobs_default"] == 3
    assert frozen.store.run(ops.history_prepare(T0)) == 2  # the next two days only
    assert "finished_jobs_20310310t000000" not in partitions(frozen)


def test_a_shorter_period_skips_ranges_that_overlap(frozen: pageq.App, clock: pageq.FrozenClock) -> None:
    frozen.task(name="noop")(lambda: None)
    frozen.store.run(ops.history_prepare(T0, 0))  # the day of T0
    set_period(frozen, "1 hour")
    # hours of T0's day overlap the day partition: skipped; the first hours of the next day are made
    assert frozen.store.run(ops.history_prepare(T0, 2)) == 0
    clock.advance(12 * 3600)
    assert frozen.store.run(ops.history_prepare(clock.now(), 2)) == 3
    assert "finished_jobs_20310311t010000" in partitions(frozen)


async def test_the_leader_keeps_partitions_rolling(dsn: str, schema: str) -> None:
    """Periods of 1 s, a retention of 1 s: a running worker creates and drops partitions as time goes."""
    app = pageq.App(dsn, schema=schema)
    app.migrate()
    try:
        clear(app)
        set_period(app, "1 second")
        task = app.task(name="noop", queue="hist")(lambda: None)
        worker = app.worker(["hist"], 10, maintenance_interval=0.05, retention=1.0, poll_interval=0.05)
        running = asyncio.create_task(worker.run())
        seen: set[str] = set()
        try:
            for _ in range(25):
                await asyncio.to_thread(app.enqueue_many, [task.job() for _ in range(5)])
                await asyncio.sleep(0.2)
                seen |= set(await asyncio.to_thread(partitions, app))
        finally:
            worker.stop()
            await running
        now = set(partitions(app))
        assert len(seen - now) >= 2, (seen, now)  # periods came and went
        assert len(now) <= 6, now  # the default, about 1 s of retention, the current period and 2 ahead
        assert worker.claimed == 125
        counts = {s.queue: s.counts for s in app.queue_stats()}.get("hist", {})
        assert not counts.get(JobState.QUEUED) and not counts.get(JobState.RUNNING)
    finally:
        app.close()
        app.drop_schema()


def test_the_period_must_be_a_second_or_more(app: pageq.App) -> None:
    for bad in (0, 0.5, -1, "day", float("nan")):
        with pytest.raises(pageq.InvalidOptionError):
            app.set_history_period(bad)  # type: ignore[arg-type]
    app.set_history_period(90)
    with psycopg.connect(app.database.dsn, autocommit=True) as conn:
        assert conn.execute(f"SELECT extract(epoch FROM period) FROM {app.schema}.history").fetchone() == (
            90,
        )
