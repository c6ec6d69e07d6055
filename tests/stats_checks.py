"""Checks of the monitoring queries (sql/queries/stats.sql); they register with @covers.

Times are pinned: jobs are enqueued at T0 (a minute boundary), claimed and finished at chosen offsets, and the
rollup runs at T0 + 75 s, when (with 10 s to settle) the minute [T0, T0 + 60 s) is complete.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pageq
from pageq import JobState
from pageq.store import dispatch, ops, statsops
from pageq.store.statsops import ALL
from test_queries import T0, Q, covers, lease

SETTLE, KEEP = 10.0, 3600.0
MINUTE = timedelta(minutes=1)


def error_at(at: datetime, attempt: int = 1) -> str:
    return json.dumps({"attempt": attempt, "error": "Boom: x", "worker": "w1", "at": at.isoformat()})


def at(q: Q, seconds: float) -> None:
    q.clock.set(T0 + timedelta(seconds=seconds))


def flow_of(q: Q) -> None:
    """In minute T0: 't' jobs a..e and one 'u' job. a, b, c succeed (waits 1, 2, 3 s; runs 2, 4, 6 s), d fails
    once (retried, still live) and e twice (dead); one 'u' job is cancelled; one more 't' job stays queued."""
    at(q, 0)
    ids = q.add(6)
    (cancelled,) = q.add(task="u")
    q.app.cancel(cancelled)
    for k in range(3):  # one job at a time, so that each has its own times
        at(q, 1 + k)
        (job,) = q.claim(limit=1)
        at(q, 3 + 3 * k)
        assert q.run(ops.complete([lease(job)], ["1"], q.now())) == [job.id]
    at(q, 20)
    d, e = q.claim(limit=2)
    at(q, 21)
    assert q.run(ops.retry([lease(d)], [q.now()], [error_at(q.now())])) == [d.id]
    assert q.run(ops.bury([lease(e)], [error_at(q.now())], q.now())) == [e.id]
    assert {j.id for j in (d, e)} < set(ids)


def roll(q: Q, seconds: float, max_minutes: int = 10) -> int:
    at(q, seconds)
    return int(q.run(statsops.rollup(q.now(), SETTLE, KEEP, max_minutes)))


@covers("stats_rollup")
def check_stats_rollup(q: Q) -> None:
    flow_of(q)
    assert roll(q, 65) == 1  # the first call starts one minute back: [T0 - 60 s, T0); T0's is not settled
    assert roll(q, 75) == 1  # [T0, T0 + 60 s)
    rows = q.sql(
        "SELECT queue, task, enqueued, succeeded, dead, cancelled, failed, timed, wait_sum, run_sum,"
        " wait_p50, run_p50, run_p99, queued, retrying, oldest_age FROM {s}.stats_minute"
        " WHERE minute = %s ORDER BY queue, task",
        [T0],
    )
    everything = (7, 3, 1, 1, 2, 4, 6.0 + 20, 12.0 + 1, 2.5, 3.0)
    t = (6, 3, 1, 0, 2, 4, 26.0, 13.0, 2.5, 3.0)
    u = (1, 0, 0, 1, 0, 0, 0.0, 0.0, None, None)
    assert [r[:12] for r in rows] == [
        (ALL, ALL, *everything), (ALL, "t", *t), (ALL, "u", *u),  # all queues
        ("default", ALL, *everything), ("default", "t", *t), ("default", "u", *u),
    ]  # fmt: skip
    # sampled at T0 + 75 s: d is retrying (due since T0 + 21 s) and one 't' job queued since T0
    sampled, none = (1, 1, 75.0), (0, 0, None)
    assert [r[13:] for r in rows] == [sampled, sampled, none, sampled, sampled, none]
    assert abs(rows[4][12] - 5.94) < 1e-9  # p99 of runs 1 (e), 2, 4, 6 s, interpolated
    totals = q.sql("SELECT queue, task, enqueued, succeeded, dead, cancelled, failed FROM {s}.stats_totals")
    assert sorted(totals) == [("default", "t", 6, 3, 1, 0, 2), ("default", "u", 1, 0, 0, 1, 0)]
    before = q.sql("SELECT minute FROM {s}.stats_minute WHERE queue = '*' AND task = '*' ORDER BY minute")
    assert [r[0] for r in before] == [T0 - MINUTE, T0]
    # after a pause: ten minutes per call, only the newest sampled, minutes older than KEEP deleted
    assert roll(q, 75 + 3600, max_minutes=10) == 10
    assert q.sql("SELECT since, rolled_until FROM {s}.stats_state") == [(T0 - MINUTE, T0 + 11 * MINUTE)]
    sampled = q.sql("SELECT count(*) FROM {s}.stats_minute WHERE minute > %s AND queued IS NOT NULL", [T0])
    assert sampled == [(0,)]
    assert roll(q, 75 + 3600 + 1) == 10
    assert roll(q, 2 * 3600) == 10  # from T0 + 59 min: older minutes are past KEEP, and deleted
    assert q.sql("SELECT count(*) FROM {s}.stats_minute WHERE minute < %s", [T0 + 9 * MINUTE]) == [(0,)]
    assert q.sql("SELECT sum(succeeded) FROM {s}.stats_totals") == [(3,)]  # nothing counted twice


@covers("stats_live")
def check_stats_live(q: Q) -> None:
    flow_of(q)
    at(q, 30)
    rows = q.run(statsops.live(q.now()))
    found = {(r.queue, r.task, r.state): (r.count, r.oldest_due_age) for r in rows}
    assert found == {
        ("default", "t", JobState.QUEUED): (1, 30.0),
        ("default", "t", JobState.RETRYING): (1, 9.0),
        ("default", "t", JobState.DEAD): (1, None),
    }


@covers("stats_flow")
def check_stats_flow(q: Q) -> None:
    assert q.run(statsops.flow(5)) == []
    flow_of(q)
    roll(q, 75)
    rows = {(r.queue, r.task): r for r in q.run(statsops.flow(5))}
    assert set(rows) == {(q, t) for q in (ALL, "default") for t in (ALL, "t", "u")}
    t = rows["default", "t"]
    assert t.window == pageq.Counts(enqueued=6, succeeded=3, failed=2, dead=1, cancelled=0)
    assert t.totals == pageq.Totals(t.window, 4, 26.0, 13.0)
    assert t.latency is not None and t.latency.jobs == 4 and t.latency.wait.p50 == 2.5
    assert (t.since, t.rolled_until) == (T0, T0 + MINUTE)
    assert rows["default", "u"].latency is None
    roll(q, 75 + 600)  # ten quiet minutes later: out of a 5-minute window, still in the totals
    rows = {(r.queue, r.task): r for r in q.run(statsops.flow(5))}
    assert rows["default", "t"].window == pageq.Counts() and rows["default", "t"].totals == t.totals
    assert rows["default", "t"].latency is None


@covers("stats_series")
def check_stats_series(q: Q) -> None:
    assert q.run(statsops.series(60, ALL, ALL)) == []  # nothing rolled up yet
    flow_of(q)
    roll(q, 75)
    roll(q, 135)
    points = q.run(statsops.series(60, ALL, ALL))
    assert [p.minute for p in points] == [T0, T0 + MINUTE]  # none before statistics began
    assert points[0].counts == pageq.Counts(7, 3, 2, 1, 1) and points[1].counts == pageq.Counts()
    assert points[0].jobs is not None and points[0].jobs[JobState.QUEUED] == 1  # sampled at its rollup
    assert points[1].jobs is not None and points[1].jobs[JobState.RETRYING] == 1
    u = q.run(statsops.series(2, "default", "u"))
    assert [p.minute for p in u] == [T0, T0 + MINUTE]
    assert u[0].counts.cancelled == 1 and u[0].jobs is not None and set(u[0].jobs.values()) == {0}
    assert u[0].latency is None


@covers("stats_workers")
def check_stats_workers(q: Q) -> None:
    q.run(ops.worker_register("w1", "h", 11, ["a", "b"], 4, q.now()))
    q.clock.advance(5)
    q.run(dispatch.worker_refresh("w1", 3, ["a"], q.now(), dispatch.WorkerLoad(10, 2, 50_000_000)))
    q.clock.advance(40)
    (worker,) = q.run(statsops.workers(q.now(), 30.0))
    assert worker == pageq.WorkerStats(
        id="w1", host="h", pid=11, queues=("a", "b"), capacity=4, running=3, processed=10, failed=2,
        rss_bytes=50_000_000, started_at=T0, last_heartbeat=T0 + timedelta(seconds=5), heartbeat_age=40.0,
        stale=True,
    )  # fmt: skip
    q.run(dispatch.worker_refresh("w1", 0, ["a"], q.now()))  # without a load: the published one stays
    (worker,) = q.run(statsops.workers(q.now(), 30.0))
    assert (worker.running, worker.processed, worker.rss_bytes, worker.stale) == (0, 10, 50_000_000, False)


@covers("stats_system")
def check_stats_system(q: Q) -> None:
    row = q.run(statsops.system("maintenance", q.now()))
    assert (row.leader, row.rolled_until, row.workers) == (None, None, 0)
    assert row.server_version.split(".")[0].isdigit()
    q.run(ops.leader_acquire("maintenance", "w1", q.now(), 3.0))
    q.run(ops.worker_register("w1", "h", 11, ["a"], 4, q.now()))
    roll(q, 75)
    row = q.run(statsops.system("maintenance", T0))
    assert (row.leader, row.leader_expires_at) == ("w1", T0 + timedelta(seconds=3))
    assert (row.since, row.rolled_until, row.workers) == (T0, T0 + MINUTE, 1)
    assert q.run(statsops.system("maintenance", T0 + MINUTE)).workers == 0
