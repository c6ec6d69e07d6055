"""Checks of the dispatcher's named queries (sql/queries/dispatch.sql); they register with @covers."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pageq
from pageq import JobState
from pageq.store import Listener, dispatch, ops
from test_queries import ERROR, T0, Q, covers, lease


def _state(q: Q, job_id: int) -> JobState:
    return q.job(job_id).state


@covers("enqueue_special")
def check_enqueue_special(q: Q) -> None:
    t = q.app.get_task("t")
    first = q.app.enqueue_many(
        [t.job(unique="k"), t.job(unique="k"), t.job(group_key="g"), t.job(group_key="g")]
    )
    assert first[0] == first[1] and first[2] < first[3]
    assert [_state(q, i) for i in first[1:]] == [JobState.QUEUED, JobState.QUEUED, JobState.BLOCKED]
    (child,) = q.app.enqueue_many([t.job(after=[first[0], first[2]], delay=30)])
    assert _state(q, child) is JobState.BLOCKED
    rows = q.sql(
        "SELECT parent_id, ord, satisfied FROM {s}.job_deps WHERE child_id = %s ORDER BY ord", [child]
    )
    assert rows == [(first[0], 1, False), (first[2], 2, False)]
    linked = q.sql("SELECT id FROM {s}.jobs WHERE linked ORDER BY id")
    assert [r[0] for r in linked] == sorted([first[0], *first[2:], child])
    assert q.sql("SELECT key, job_id FROM {s}.unique_keys") == [("k", first[0])]


@covers("queues_lock", "claim_controlled")
def check_claim_controlled(q: Q) -> None:
    q.add(5, queue="a")
    q.add(5, queue="b")
    q.add(3, queue="c")
    q.app.limit_queue("a", 2)
    q.app.rate_limit_queue("b", 3, per=10)
    q.app.pause_queue("c")

    def claim(limit: int) -> list[pageq.Job]:
        with q.store.transaction() as conn:
            assert q.store.run(dispatch.queues_lock(["a", "b"]), conn) == [2]
            return q.store.run(dispatch.claim_controlled(["a", "b", "c"], limit, q.now(), 30.0, "w"), conn)

    jobs = claim(100)
    assert sorted(j.queue for j in jobs) == ["a", "a", "b", "b", "b"]  # concurrency 2, rate 3, c paused
    assert all(j.state is JobState.RUNNING and j.lease_token for j in jobs)
    assert claim(100) == []
    window = q.sql("SELECT window_start, window_count FROM {s}.queues WHERE name = 'b'")
    assert window == [(T0, 3)]  # T0 is on a 10 s boundary
    q.clock.advance(10)  # a new rate window; one running job of 'a' finishes
    done = next(j for j in jobs if j.queue == "a")
    q.run(ops.complete([lease(done)], [None], q.now()))
    assert sorted(j.queue for j in claim(100)) == ["a", "b", "b"]  # 'b' had two jobs left
    q.app.weight_queue("a", 3)  # weights: 'a' gets three turns for each of 'd'
    q.app.limit_queue("a", None)
    q.app.rate_limit_queue("b", None)
    q.add(8, queue="d")
    with q.store.transaction() as conn:
        got = q.store.run(dispatch.claim_controlled(["a", "d"], 4, q.now(), 30.0, "w"), conn)
    assert [j.queue for j in sorted(got, key=lambda j: j.id)] == ["a", "a", "d", "d"]  # 1/3, 2/3, 1, 2
    q.add(6, queue="a")
    with q.store.transaction() as conn:
        got = q.store.run(dispatch.claim_controlled(["a", "d"], 4, q.now(), 30.0, "w"), conn)
    assert sorted(j.queue for j in got) == ["a", "a", "a", "d"]


@covers("worker_refresh")
def check_worker_refresh(q: Q) -> None:
    q.run(ops.worker_register("w1", "h", 1, ["a", "b"], 4, q.now()))
    q.app.pause_queue("a")
    q.app.limit_queue("z", 1)
    q.clock.advance(5)
    controls = q.run(dispatch.worker_refresh("w1", 3, ["a", "b"], q.now()))
    assert controls == [pageq.QueueControl("a", paused=True)]
    assert q.sql("SELECT running, last_seen_at FROM {s}.workers") == [(3, q.now())]


@covers("queue_control_set", "queue_controls")
def check_queue_controls(q: Q) -> None:
    async def notified() -> str:
        listener = Listener(q.dsn, q.schema)
        await listener.connect()
        try:
            await asyncio.to_thread(q.app.pause_queue, "a")
            async with asyncio.timeout(10):
                return await anext(listener.notifications())
        finally:
            await listener.close()

    assert asyncio.run(notified()) == "!queues"
    q.app.limit_queue("a", 4)
    q.app.rate_limit_queue("a", 10, per=2)
    q.app.weight_queue("b", 5)
    assert q.app.resume_queue("a") == pageq.QueueControl("a", False, 4, 10, 2.0, 1)
    q.app.limit_queue("a", None)  # None removes one control and keeps the others
    assert q.app.queue_controls() == [
        pageq.QueueControl("a", False, None, 10, 2.0, 1), pageq.QueueControl("b", weight=5)]  # fmt: skip
    try:
        q.app.weight_queue("b", 0)
    except pageq.InvalidOptionError:
        pass
    else:
        raise AssertionError("weight 0 was accepted")


@covers("resolve")
def check_resolve(q: Q) -> None:
    t = q.app.get_task("t")
    a, b, c = q.app.enqueue_many([t.job(group_key="g"), t.job(group_key="g"), t.job(group_key="g")])
    (child,) = q.app.enqueue_many([t.job(after=[a])])
    (claimed,) = q.claim(limit=10)
    assert claimed.id == a and claimed.linked and claimed.group_key == "g"
    with q.store.transaction() as conn:
        q.store.run(ops.complete([lease(claimed)], ["7"], q.now()), conn)
        assert q.store.run(dispatch.resolve([a], ["g"], q.now()), conn) == 0
    assert [_state(q, i) for i in (b, c, child)] == [JobState.QUEUED, JobState.BLOCKED, JobState.QUEUED]
    (d,) = q.app.enqueue_many([t.job(after=[b])])
    second = next(j for j in q.claim(limit=10) if j.id == b)
    q.run(ops.bury([lease(second)], ['{"error": "x"}'], q.now()))
    assert q.run(dispatch.resolve([b], ["g"], q.now())) == 1  # d cancelled: its parent died
    assert [_state(q, i) for i in (c, d)] == [JobState.QUEUED, JobState.CANCELLED]
    assert q.job(d).errors[-1].error.startswith("ParentFailed")


@covers("resolve_sweep", "watch_expired")
def check_resolve_sweep(q: Q) -> None:
    t = q.app.get_task("t")
    assert q.run(dispatch.resolve_sweep(q.now())) == (dispatch.Cursors(), 0)
    # a parent the rescuer buries: watched first (its lease expired), settled by the sweep
    (parent, unlinked) = q.add(2)
    (child,) = q.app.enqueue_many([t.job(after=[parent], on_parent_failure="run")])
    q.claim(limit=2)
    q.sql("UPDATE {s}.jobs SET lease_expires_at = %s, max_attempts = 1", [T0 - timedelta(seconds=1)])
    assert q.run(dispatch.watch_expired(q.now())) == 1  # only the linked one
    assert q.run(ops.rescue(q.now())) == (0, 2)  # the rescuer buries both without settling the child
    assert _state(q, child) is JobState.BLOCKED
    assert q.run(dispatch.resolve_sweep(q.now())) == (dispatch.Cursors(), 0)
    assert _state(q, child) is JobState.QUEUED  # on_parent_failure="run"
    assert q.sql("SELECT count(*) FROM {s}.job_watch") == [(0,)]
    assert unlinked
    # a dependent added while its parent runs: the parent is watched, its worker does not know
    (late,) = q.add(priority=100)
    (running,) = q.claim(limit=1)
    assert running.id == late and not running.linked
    (waiting,) = q.app.enqueue_many([t.job(after=[late])])
    assert q.sql("SELECT job_id FROM {s}.job_watch") == [(late,)]
    q.run(ops.complete([lease(running)], [None], q.now()))
    q.run(dispatch.resolve_sweep(q.now()))
    assert _state(q, waiting) is JobState.QUEUED
    _check_resolve_sweep_pages(q)


def _check_resolve_sweep_pages(q: Q) -> None:
    """Parents and groups that nothing settled (finished without resolve) are found page by page."""
    t = q.app.get_task("t")
    parents = q.add(5, priority=100)
    children = q.app.enqueue_many([t.job(after=[p]) for p in parents])
    heads = q.app.enqueue_many([t.job(group_key=f"g{i}", priority=100) for i in range(3)])
    nexts = q.app.enqueue_many([t.job(group_key=f"g{i}") for i in range(3)])
    claimed = q.claim(limit=8)
    assert sorted(j.id for j in claimed) == sorted(parents + heads)
    q.run(ops.complete([lease(j) for j in claimed], [None] * 8, q.now()))  # no resolve: left to the sweep
    cursors, seen = dispatch.Cursors(), []
    for _ in range(3):
        cursors, cancelled = q.run(dispatch.resolve_sweep(q.now(), cursors, limit=2))
        seen.append(cursors)
        assert cancelled == 0
    assert [c.parent for c in seen] == [parents[1], parents[3], None]
    assert [c.group for c in seen] == ["g1", None, "g1"]
    assert {_state(q, i) for i in children + nexts} == {JobState.QUEUED}


@covers("jobs_cancel")
def check_jobs_cancel(q: Q) -> None:
    a = q.add(3, queue="a")
    b = q.add(2, queue="b", delay=60)
    (other,) = q.add(task="u", queue="a")
    assert q.app.cancel_jobs(queue="a", task="t", limit=2) == a[:2]
    assert q.app.cancel_jobs(state=JobState.SCHEDULED) == b
    assert q.app.cancel_jobs(ids=[a[2], b[0], 10**9]) == [a[2]]
    assert [_state(q, i) for i in (*a, *b)] == [JobState.CANCELLED] * 5 and _state(
        q, other
    ) is JobState.QUEUED


@covers("parent_results")
def check_parent_results(q: Q) -> None:
    t = q.app.get_task("t")
    p1, p2, p3 = q.add(3)
    (child,) = q.app.enqueue_many([t.job(after=[p2, p1, p3], on_parent_failure="run")])
    first, _second, third = sorted(q.claim(limit=3), key=lambda j: j.id)
    q.run(ops.complete([lease(first)], ['{"n": 1}'], q.now()))
    q.run(ops.bury([lease(third)], [ERROR], q.now()))
    assert q.run(dispatch.parent_results(child)) == [
        (p2, JobState.RUNNING, None, None),
        (p1, JobState.SUCCEEDED, {"n": 1}, None),
        (p3, JobState.DEAD, None, "Boom: x"),
    ]


@covers("periodic_lock", "periodic_set")
def check_periodic_rows(q: Q) -> None:
    with q.store.transaction() as conn:
        assert q.store.run(dispatch.periodic_lock("p", T0), conn) == T0
        assert q.store.run(dispatch.periodic_set("p", T0 + timedelta(minutes=5)), conn) == 1
    with q.store.transaction() as conn:
        assert q.store.run(dispatch.periodic_lock("p", T0 + timedelta(hours=1)), conn) == T0 + timedelta(
            minutes=5
        )
        assert q.store.run(dispatch.periodic_set("p", T0), conn) == 1  # never goes back
    assert q.sql("SELECT last_tick FROM {s}.periodic") == [(T0 + timedelta(minutes=5),)]


@covers("prune_keys")
def check_prune_keys(q: Q) -> None:
    t = q.app.get_task("t")
    q.app.enqueue_many([t.job(unique=pageq.Unique(f"w{i}", window=60)) for i in range(3)])
    q.app.enqueue_many([t.job(unique=pageq.Unique("later", window=120)), t.job(unique="forever")])
    q.clock.advance(61)
    assert q.run(dispatch.prune_keys(q.now(), limit=2)) == 2
    assert q.run(dispatch.prune_keys(q.now(), limit=2)) == 1
    assert q.sql("SELECT key FROM {s}.unique_keys ORDER BY key") == [("forever",), ("later",)]


@covers("prune_orphans")
def check_prune_orphans(q: Q) -> None:
    t = q.app.get_task("t")
    kept = q.app.enqueue_many([t.job(unique=f"kept{i}") for i in range(2)])
    gone = q.app.enqueue_many([t.job(unique=f"gone{i}") for i in range(3)])
    (child,) = q.app.enqueue_many([t.job(after=kept)])
    (other,) = q.app.enqueue_many([t.job(after=[kept[0]])])
    q.sql("DELETE FROM {s}.jobs WHERE id = ANY(%s)", [[*gone, child]])
    cursors, deleted = q.run(dispatch.prune_orphans(dispatch.Cursors(), limit=2))
    assert (cursors.key, cursors.child, deleted) == (kept[1], child, 2)  # the child's two dependencies
    cursors, deleted = q.run(dispatch.prune_orphans(cursors, limit=2))
    assert (cursors.key, cursors.child, deleted) == (gone[1], None, 2)  # keys gone0, gone1; deps: the end
    cursors, deleted = q.run(dispatch.prune_orphans(cursors, limit=2))
    assert (cursors.key, cursors.child, deleted) == (None, None, 1)  # gone2
    keys = q.sql("SELECT key FROM {s}.unique_keys ORDER BY key")
    assert keys == [("kept0",), ("kept1",)]
    assert q.sql("SELECT child_id FROM {s}.job_deps") == [(other,)]
