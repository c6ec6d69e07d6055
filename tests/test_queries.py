"""Every named query in src/pageq/sql/queries/*.sql, run against real PostgreSQL through its typed wrapper.

`test_named_query` is parametrised over `query_names()`: a query without a check here fails, and each check
must actually execute the query it covers (the store's query table records what was read).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

import pageq
from pageq import JobState
from pageq.store import Listener, Store, engine, ops, schema_dump, secops, sqlapi
from pageq.store import migrate as migrations
from pageq.store import queries as named
from pageq.store.migrate import MigrationStatus

T0 = datetime(2030, 1, 1, tzinfo=UTC)
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


class Recording(dict[str, str]):
    """The store's table of rendered queries, noting each name that is looked up."""

    def __init__(self, data: dict[str, str], seen: set[str]) -> None:
        super().__init__(data)
        self.seen = seen

    def __getitem__(self, key: str) -> str:
        self.seen.add(key)
        return super().__getitem__(key)


@dataclass
class Q:
    """What each check gets: an app on a fresh schema with a frozen clock, and helpers."""

    app: pageq.App
    clock: pageq.FrozenClock
    dsn: str
    seen: set[str] = field(default_factory=set)

    @property
    def store(self) -> Store:
        return self.app.store

    @property
    def schema(self) -> str:
        return self.app.schema

    def now(self) -> datetime:
        return self.clock.now()

    def run(self, op: ops.Op[Any]) -> Any:
        return self.store.run(op)

    def sql(self, text: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Raw SQL for setting up and inspecting (``{s}`` is the schema); never what is under test."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            cur = conn.execute(text.replace("{s}", self.schema), params)
            return [tuple(row) for row in cur.fetchall()] if cur.description else []

    def add(self, n: int = 1, *, task: str = "t", **options: Any) -> list[int]:
        return self.app.enqueue_many([self.app.get_task(task).job(**options) for _ in range(n)])

    def claim(self, queues: tuple[str, ...] = ("default",), limit: int = 100, lease: float = 30.0,
              worker: str = "w1") -> list[pageq.Job]:  # fmt: skip
        return self.run(ops.claim(queues, limit, self.now(), lease, worker))

    def job(self, job_id: int) -> pageq.Job:
        return self.app.get_job(job_id)

    def finished(self, state: JobState, n: int = 1, **options: Any) -> list[int]:
        """``n`` jobs moved to a final state now."""
        ids = self.add(n, **{"priority": 32767, **options})  # claimed before anything else waiting
        if state is JobState.CANCELLED:
            return [self.app.cancel(i).id for i in ids]
        claimed = self.claim((options.get("queue", "default"),), limit=n)
        assert sorted(j.id for j in claimed) == ids
        mine = [lease(j) for j in sorted(claimed, key=lambda j: j.id)]
        if state is JobState.SUCCEEDED:
            assert self.run(ops.complete(mine, ["1"] * len(mine), self.now())) == ids
        else:
            assert self.run(ops.bury(mine, [ERROR] * len(mine), self.now())) == ids
        return ids


ERROR = '{"attempt": 1, "error": "Boom: x", "traceback": null, "worker": "w1", "at": "now"}'
CHECKS: dict[str, Callable[[Q], None]] = {}


def covers(*names: str) -> Callable[[Callable[[Q], None]], Callable[[Q], None]]:
    def register(check: Callable[[Q], None]) -> Callable[[Q], None]:
        for name in names:
            assert name not in CHECKS, name
            CHECKS[name] = check
        return check

    return register


def lease(job: pageq.Job) -> ops.Lease:
    assert job.lease_token is not None
    return ops.Lease(job.id, uuid.UUID(job.lease_token))


@pytest.fixture
def q(dsn: str, schema: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Q]:
    seen: set[str] = set()
    monkeypatch.setattr(engine, "queries_for", lambda s: Recording(named.queries_for(s), seen))
    clock = pageq.FrozenClock(T0)
    app = pageq.App(dsn, schema=schema, clock=clock)
    app.migrate()

    @app.task
    def t() -> None: ...

    @app.task
    def u() -> None: ...

    seen.clear()
    yield Q(app, clock, dsn, seen)
    app.close()
    app.drop_schema()


@pytest.mark.parametrize("name", named.query_names())
def test_named_query(q: Q, name: str) -> None:
    check = CHECKS.get(name)
    if check is None:
        pytest.fail(f"named query {name!r} has no check in tests/test_queries.py: add one")
    check(q)
    assert name in q.seen, f"the check of {name!r} did not execute it"


def test_every_check_covers_a_query() -> None:
    assert set(CHECKS) <= set(named.query_names())


# ----- hot path
@covers("enqueue")
def check_enqueue(q: Q) -> None:
    ids = q.app.enqueue_many(
        [q.app.get_task("t").job(priority=p, queue=f"q{p}") for p in range(5)]
        + [q.app.get_task("u").job(delay=60)]
    )
    assert ids == sorted(ids) and len(set(ids)) == 6
    rows = q.sql("SELECT id, task, queue, priority, state, run_at, created_at FROM {s}.jobs ORDER BY id")
    assert [r[0] for r in rows] == ids
    assert [(r[1], r[2], r[3], r[4]) for r in rows[:5]] == [("t", f"q{p}", p, "queued") for p in range(5)]
    assert rows[5][1:5] == ("u", "default", 0, "scheduled")
    assert rows[5][5] == T0 + timedelta(seconds=60) and {r[6] for r in rows} == {T0}


@covers("idempotency_take", "idempotency_relink")
def check_enqueue_with_idempotency_keys(q: Q) -> None:
    t = q.app.get_task("t")
    first = q.app.enqueue_many([t.job(idempotency_key="a"), t.job(), t.job(idempotency_key="b")])
    again = q.app.enqueue_many(
        [t.job(idempotency_key="b"), t.job(idempotency_key="c"), t.job(idempotency_key="c")]
    )
    assert again[0] == first[2] and again[1] == again[2] and again[1] not in first
    assert q.sql("SELECT count(*) FROM {s}.jobs") == [(4,)]
    assert q.sql("SELECT key, job_id FROM {s}.idempotency_keys ORDER BY key") == [
        ("a", first[0]),
        ("b", first[2]),
        ("c", again[1]),
    ]
    assert q.run(ops.idempotency_take(["a", None], q.now()))[0] == (first[0], False)
    # a keyed job whose unique key is held gets the holder; its idempotency key then names the holder
    holder = q.app.enqueue("t", unique="u")
    assert q.app.enqueue_many([t.job(idempotency_key="d", unique="u")] * 2) == [holder, holder]
    assert t.enqueue(idempotency_key="d") == holder
    q.run(ops.idempotency_relink(["a"], [holder]))  # a key whose job exists never moves
    assert q.sql("SELECT job_id FROM {s}.idempotency_keys WHERE key = 'a'") == [(first[0],)]
    # follow-ups go in with the keyed job only: a retried enqueue adds none
    before = q.sql("SELECT count(*) FROM {s}.jobs")[0][0]
    followed = t.enqueue(idempotency_key="f", on_success=t)
    assert t.enqueue(idempotency_key="f", on_success=t) == followed
    assert q.sql("SELECT count(*) FROM {s}.jobs")[0][0] == before + 2
    # with conn=, keys and jobs go with the caller's transaction
    with psycopg.connect(q.dsn) as conn:
        kept = t.enqueue(idempotency_key="e", conn=conn)
        conn.rollback()
    made = t.enqueue(idempotency_key="e")
    assert made != kept and asyncio.run(t.enqueue_async(idempotency_key="e")) == made


@covers("durability_settings")
def check_durability_settings(q: Q) -> None:
    fsync, synchronous_commit = q.run(ops.durability_settings())
    assert fsync in ("on", "off") and synchronous_commit in (
        "on",
        "off",
        "local",
        "remote_write",
        "remote_apply",
    )


@covers("reserve_ids", "copy_jobs", "notify")
def check_enqueue_by_copy(q: Q) -> None:
    n = ops.COPY_THRESHOLD + 5
    t, u = q.app.get_task("t"), q.app.get_task("u")
    specs = [t.job(priority=i % 3, queue="big") for i in range(n - 1)] + [u.job(delay=60, queue="big")]

    async def main() -> list[int]:
        listener = Listener(q.dsn, q.schema)
        await listener.connect()
        try:
            ids = await q.app.enqueue_many_async(specs)
            notes = listener.notifications()
            async with asyncio.timeout(10):
                assert await anext(notes) == "big"
            return ids
        finally:
            await listener.close()
            await q.app.aclose()

    ids = asyncio.run(main())
    assert ids == sorted(ids) and len(set(ids)) == n
    rows = q.sql("SELECT id, task, priority, state, run_at, created_at FROM {s}.jobs ORDER BY id")
    assert [r[0] for r in rows] == ids
    assert [(r[1], r[2], r[3]) for r in rows[:-1]] == [("t", i % 3, "queued") for i in range(n - 1)]
    assert rows[-1][1:4] == ("u", 0, "scheduled") and rows[-1][4] == T0 + timedelta(seconds=60)
    assert {r[5] for r in rows} == {T0}


@covers("stats_stale", "analyze_jobs")
def check_statistics(q: Q) -> None:
    def stale() -> bool:
        return bool(q.run(ops.stats_stale(q.schema, floor=1000)))

    def until(condition: Callable[[], bool]) -> None:  # table statistics reach pg_stat within ~1 s
        deadline = time.monotonic() + 15
        while not condition():
            assert time.monotonic() < deadline, "statistics did not change in time"
            time.sleep(0.05)

    assert not stale()
    q.add(1500)
    until(stale)
    q.run(ops.analyze_jobs())
    until(lambda: not stale())


@covers("claim")
def check_claim(q: Q) -> None:
    low = q.add(2, priority=0)
    high = q.add(1, priority=5)
    other = q.add(1, queue="other", priority=9)
    q.add(1, delay=10)  # not yet due
    early = q.add(1, run_at=T0 - timedelta(seconds=5))
    first = q.claim(limit=2, worker="w1")
    assert {j.id for j in first} == {high[0], early[0]}  # priority, then run_at, then id
    assert all(j.state is JobState.RUNNING and j.attempts == 1 and j.lease_token for j in first)
    assert len({j.lease_token for j in first}) == 2
    row = q.sql("SELECT worker, started_at, lease_expires_at FROM {s}.jobs WHERE id = %s", [high[0]])[0]
    assert row == ("w1", T0, T0 + timedelta(seconds=30))
    for expected in (other, low[:1], low[1:]):  # across queues, in claim order
        assert [j.id for j in q.claim(("default", "other"), limit=1, worker="w2")] == expected
    assert q.claim(("default", "other")) == []
    assert q.job(low[1]).worker == "w2"


@covers("complete")
def check_complete(q: Q) -> None:
    ids = q.add(3)
    jobs = q.claim()
    q.clock.advance(2)
    done = q.run(ops.complete([lease(j) for j in jobs[:2]], ['{"a": [1, 2]}', None], q.now()))
    assert sorted(done) == ids[:2]
    first, second = q.job(ids[0]), q.job(ids[1])
    assert (first.state, first.result, first.finished_at, first.attempts) == (
        "succeeded",
        {"a": [1, 2]},
        q.now(),
        1,
    )
    assert (second.state, second.result) == ("succeeded", None)
    wrong = ops.Lease(ids[2], uuid.uuid4())
    assert q.run(ops.complete([wrong], ["1"], q.now())) == []
    assert q.job(ids[2]).state is JobState.RUNNING
    assert q.sql("SELECT count(*) FROM {s}.jobs") == [(1,)]


@covers("retry")
def check_retry(q: Q) -> None:
    (job_id,) = q.add()
    (job,) = q.claim()
    later = T0 + timedelta(seconds=8)
    assert q.run(ops.retry([lease(job)], [later], [ERROR])) == [job_id]
    back = q.job(job_id)
    assert (back.state, back.run_at, back.attempts, back.lease_token) == ("retrying", later, 1, None)
    assert [(e.attempt, e.error, e.worker) for e in back.errors] == [(1, "Boom: x", "w1")]
    assert q.claim() == []  # waits for its run_at
    q.clock.set(later)
    (again,) = q.claim()
    assert again.attempts == 2 and q.run(ops.retry([lease(again)], [later], [ERROR])) == [job_id]
    assert len(q.job(job_id).errors) == 2


@covers("bury")
def check_bury(q: Q) -> None:
    ids = q.add(2)
    jobs = q.claim()
    assert q.run(ops.bury([lease(jobs[0])], [ERROR], q.now())) == [ids[0]]
    dead = q.job(ids[0])
    assert (dead.state, dead.attempts, dead.finished_at, dead.result) == ("dead", 1, T0, None)
    assert [e.error for e in dead.errors] == ["Boom: x"]
    assert q.run(ops.bury([lease(jobs[0])], [ERROR], q.now())) == []
    assert q.job(ids[1]).state is JobState.RUNNING


@covers("set_result")
def check_set_result(q: Q) -> None:
    (job_id,) = q.add()
    (job,) = q.claim()
    assert q.run(ops.set_result(lease(job), '"early"')) == 0  # not completed yet
    q.run(ops.complete([lease(job)], [None], q.now()))
    assert q.run(ops.set_result(ops.Lease(job_id, uuid.uuid4()), '"x"')) == 0
    assert q.run(ops.set_result(lease(job), '{"total": 3}')) == 1
    assert q.job(job_id).result == {"total": 3}


@covers("heartbeat")
def check_heartbeat(q: Q) -> None:
    ids = q.add(2)
    jobs = q.claim(lease=30.0)
    q.clock.advance(20)
    stranger = ops.Lease(ids[1], uuid.uuid4())
    assert q.run(ops.heartbeat([lease(jobs[0]), stranger], q.now(), 30.0)) == [ids[0]]
    rows = q.sql("SELECT id, lease_expires_at FROM {s}.jobs ORDER BY id")
    assert rows == [(ids[0], T0 + timedelta(seconds=50)), (ids[1], T0 + timedelta(seconds=30))]


@covers("release")
def check_release(q: Q) -> None:
    ids = q.add(2)
    jobs = q.claim()
    q.clock.advance(5)
    assert q.run(ops.release([lease(jobs[0])], q.now())) == [ids[0]]
    back = q.job(ids[0])
    assert (back.state, back.attempts, back.worker, back.lease_token, back.run_at) == (
        "queued",
        0,
        None,
        None,
        q.now(),
    )
    assert q.run(ops.release([lease(jobs[0])], q.now())) == []
    assert q.job(ids[1]).state is JobState.RUNNING


# ----- maintenance
@covers("leader_acquire", "leader_release", "leader_unlock")
def check_leader(q: Q) -> None:
    def acquire(holder: str, conn: Any = None, try_lock: bool = False) -> ops.Lead:
        op = ops.leader_acquire("maintenance", holder, q.now(), 10.0, try_lock=try_lock, idle=2.0)
        return q.store.run(op, conn) if conn is not None else q.run(op)

    assert acquire("a").held is True
    assert acquire("b").held is False  # held by a
    q.clock.advance(8)
    assert acquire("a").held is True  # renewed until T0 + 18
    q.clock.advance(8)
    assert acquire("b").held is False
    q.clock.advance(3)  # a's lease expired
    assert acquire("b").held is True
    assert acquire("a").held is False
    assert q.run(ops.leader_acquire("other", "a", q.now(), 10.0)).held is True  # names are independent
    assert q.run(ops.leader_release("maintenance", "a")) == 0  # not the holder
    assert q.run(ops.leader_release("maintenance", "b")) == 1
    assert acquire("a").held is True  # free at once
    assert q.sql("SELECT name, holder FROM {s}.leader ORDER BY name") == [
        ("maintenance", "a"),
        ("other", "a"),
    ]
    # the holder's session holds the advisory lock: while it lives, a candidate waits for the TTL; once it is
    # gone (its process died), the candidate gets the lock and takes the term over at once
    with psycopg.connect(q.dsn, autocommit=True) as a_session, psycopg.connect(q.dsn, autocommit=True) as b:
        lead = acquire("a", a_session, try_lock=True)
        assert (lead.held, lead.locked) == (True, True) and lead.at > 0
        assert acquire("a", a_session).locked is False  # already held: not tried again
        assert acquire("b", b, try_lock=True) == ops.Lead(False)
        with psycopg.connect(q.dsn, autocommit=True) as c:
            assert q.store.run(ops.leader_unlock("maintenance"), c) is False  # not c's to let go
        a_session.close()
        wait = time.monotonic() + 10
        while not (lead := acquire("b", b, try_lock=True)).held and time.monotonic() < wait:
            time.sleep(0.05)  # the server ends a's session
        assert (lead.held, lead.locked) == (True, True)
        assert q.store.run(ops.leader_unlock("maintenance"), b) is True
        assert acquire("a", try_lock=False).held is False  # b's term runs until its TTL
    # the renewal opens the transaction's row lock: a candidate waits for the leader's transaction to end
    with psycopg.connect(q.dsn) as leader, psycopg.connect(q.dsn, autocommit=True) as candidate:
        q.clock.advance(11)  # b's term expired: a leader's renewal takes it, then holds the row
        assert acquire("c", leader).held is True
        q.clock.advance(11)  # the term expires while c is still inside its transaction
        took: list[ops.Lead] = []
        waiter = threading.Thread(target=lambda: took.append(acquire("d", candidate)))
        waiter.start()
        time.sleep(0.3)
        assert took == []  # blocked by c's transaction
        leader.commit()
        waiter.join(10)
        assert took and took[0].held is True


@covers("rescue")
def check_rescue(q: Q) -> None:
    retried = q.add(2, max_attempts=3)
    buried = q.add(1, max_attempts=1)
    q.claim(lease=5.0, worker="gone")
    (fresh,) = q.add(1)
    q.clock.advance(3)
    q.claim(lease=30.0)
    assert q.run(ops.rescue(q.now())) == (0, 0)
    q.clock.advance(3)
    assert q.run(ops.rescue(q.now(), limit=1)) in ((1, 0), (0, 1))
    assert sum(q.run(ops.rescue(q.now()))) == 2
    for job_id in retried:
        job = q.job(job_id)
        assert (job.state, job.attempts, job.run_at, job.lease_token) == ("retrying", 1, T0, None)
        assert [(e.error, e.worker) for e in job.errors] == [
            ("LeaseExpired: the worker stopped heartbeating", "gone")
        ]
    dead = q.job(buried[0])
    assert (dead.state, dead.finished_at, len(dead.errors)) == ("dead", q.now(), 1)
    assert q.job(fresh).state is JobState.RUNNING


def test_rescue_buries_a_job_whose_worker_vanished_crash_limit_times(q: Q) -> None:
    (job_id,) = q.add(1, max_attempts=10)
    for crash in range(1, 4):
        q.claim(lease=5.0, worker=f"w{crash}")
        q.clock.advance(6)
        assert q.run(ops.rescue(q.now(), crash_limit=3)) == ((1, 0) if crash < 3 else (0, 1))
    job = q.job(job_id)
    assert (job.state, job.attempts) == ("dead", 3)
    assert [e.error.split(":")[0] for e in job.errors] == ["LeaseExpired", "LeaseExpired", "WorkerCrash"]
    assert q.sql("SELECT errors->-1->>'reason' FROM {s}.finished_jobs") == [("worker_crash",)]


@covers("claim_suspect", "suspects_waiting")
def check_suspects_run_alone(q: Q) -> None:
    suspect, other = q.add(2, max_attempts=10)
    for _ in range(2):  # the suspect's worker vanishes twice
        (job,) = q.claim(limit=1, lease=5.0)
        assert job.id == suspect
        q.clock.advance(6)
        assert q.run(ops.rescue(q.now())) == (1, 0)
    assert q.run(ops.suspects_waiting(["default"], q.now(), 2)) is True
    assert q.run(ops.suspects_waiting(["other"], q.now(), 2)) is False
    assert [j.id for j in q.run(ops.claim(["default"], 10, q.now(), 30.0, "w", suspect=2))] == [other]
    q.app.limit_queue("default", 5)  # limits come first: the controlled claim takes suspects there
    assert q.run(ops.suspects_waiting(["default"], q.now(), 2)) is False
    assert q.run(ops.claim_suspect(["default"], q.now(), 30.0, "w2", 2)) == []
    q.app.limit_queue("default", None)
    assert q.run(ops.suspects_waiting(["default"], q.now(), 2, tasks=["other.task"])) is False
    (alone,) = q.run(ops.claim_suspect(["default"], q.now(), 30.0, "w2", 2))
    assert (alone.id, alone.attempts) == (suspect, 3)
    assert q.run(ops.suspects_waiting(["default"], q.now(), 2)) is False
    assert q.run(ops.claim_suspect(["default"], q.now(), 30.0, "w2", 2)) == []


@covers("promote")
def check_promote(q: Q) -> None:
    soon = q.add(2, delay=10)
    late = q.add(1, delay=100)
    (retrying,) = q.add(1)
    (job,) = q.claim()
    q.run(ops.retry([lease(job)], [T0 + timedelta(seconds=5)], [ERROR]))
    assert q.run(ops.promote(q.now())) == 0
    q.clock.advance(10)
    assert q.run(ops.promote(q.now(), limit=1)) == 1
    assert q.run(ops.promote(q.now())) == 2
    states = {i: q.job(i).state for i in [*soon, *late, retrying]}
    assert states == {soon[0]: "queued", soon[1]: "queued", late[0]: "scheduled", retrying: "queued"}


@covers("rotate")
def check_rotate(q: Q) -> None:
    """Switches partitions when due, moving the other one's live jobs (claimed ones keep their lease)."""
    assert q.run(ops.rotate(1, 3600.0, 100, 100)) is None  # nothing enqueued yet
    first = q.add(3)
    assert q.run(ops.rotate(10, 3600.0, 100, 100)) is None  # 3 < 10 and young
    assert q.run(ops.rotate(3, 3600.0, 100, 100)) == 0  # new jobs go to slot 1 now; slot 1 was empty
    (job,) = q.claim(limit=1)
    second = q.add(2)
    assert q.run(ops.rotate(0, 0.0, 2, 100)) is None  # 3 live jobs in slot 0 > max_move 2: no switch
    assert q.run(ops.rotate(0, 0.0, 3, 100)) == 3
    assert q.run(ops.complete([lease(job)], ["1"], q.now())) == [job.id]
    states = {i: q.job(i).state for i in [*first, *second]}
    assert list(states.values()) == ["succeeded", "queued", "queued", "queued", "queued"]


@covers("history_prepare", "history_drop", "history_set_period")
def check_history(q: Q) -> None:
    """Partitions per period of finished_at: made ahead, dropped whole, their dead jobs kept."""
    q.run(ops.history_drop(datetime.now(UTC) + timedelta(days=3), 100))  # the migration's, for today
    assert q.run(ops.history_prepare(q.now(), 1)) == 2
    assert q.run(ops.history_prepare(q.now(), 1)) == 0
    done = q.finished(JobState.SUCCEEDED, 2)
    dead = q.finished(JobState.DEAD, 1)
    assert q.run(ops.history_drop(q.now(), 100)) == 0  # T0's day has not ended
    assert q.run(ops.history_drop(q.now() + timedelta(days=1), 100)) == 1
    assert q.job(dead[0]).state == "dead"
    with pytest.raises(pageq.JobNotFoundError):
        q.job(done[0])
    assert q.run(ops.history_set_period(3600.0)) == 1
    assert q.run(ops.history_prepare(q.now() + timedelta(days=2), 0)) == 1  # a day later: hours now


@covers("prune")
def check_prune(q: Q) -> None:
    old_done = q.finished(JobState.SUCCEEDED, 3)
    old_cancelled = q.finished(JobState.CANCELLED, 1)
    old_dead = q.finished(JobState.DEAD, 1)
    q.clock.advance(100)
    new_done = q.finished(JobState.SUCCEEDED, 1)
    cut = T0 + timedelta(seconds=50)
    assert q.run(ops.prune(JobState.SUCCEEDED, cut, limit=2)) == 2
    assert q.run(ops.prune(JobState.SUCCEEDED, cut)) == 1
    assert q.run(ops.prune(JobState.SUCCEEDED, cut)) == 0
    assert q.run(ops.prune(JobState.CANCELLED, cut)) == 1
    left = {r[0] for r in q.sql("SELECT id FROM {s}.finished_jobs")}
    assert left == {*old_dead, *new_done}
    assert not left & {*old_done, *old_cancelled}


@covers("worker_register", "worker_deregister", "workers_list")
def check_workers(q: Q) -> None:
    def register(worker_id: str) -> int:
        return q.run(ops.worker_register(worker_id, "host", 123, ["a", "b"], 8, q.now()))

    assert register("w1") == 1
    q.clock.advance(100)
    assert register("w2") == 1
    q.clock.advance(10)
    assert register("w1") == 1  # a heartbeat
    rows = q.run(ops.workers_list())
    assert [r[0] for r in rows] == ["w1", "w2"]  # most recently seen first
    assert rows[0] == ("w1", "host", 123, ["a", "b"], 8, T0, T0 + timedelta(seconds=110), 0)
    assert q.app.workers()[1]["id"] == "w2"
    register("stale")
    q.sql("UPDATE {s}.workers SET last_seen_at = %s WHERE id = 'stale'", [EPOCH])
    assert q.run(ops.worker_deregister("w1", T0)) == 2  # itself and the long-gone one
    assert [r[0] for r in q.run(ops.workers_list())] == ["w2"]


# ----- admin
@covers("job_get")
def check_job_get(q: Q) -> None:
    (live,) = q.add(queue="qq", priority=3, max_attempts=7, timeout=1.5)
    (done,) = q.finished(JobState.SUCCEEDED)
    job = q.run(ops.job_get(live))
    assert (job.id, job.task, job.queue, job.args, job.state) == (live, "t", "qq", {}, "queued")
    assert (job.priority, job.max_attempts, job.timeout, job.run_at, job.created_at) == (3, 7, 1.5, T0, T0)
    assert (job.finished_at, job.result, job.lease_token) == (None, None, None)
    finished = q.run(ops.job_get(done))
    assert (finished.state, finished.result, finished.finished_at) == ("succeeded", 1, T0)
    assert finished.lease_token is not None
    assert q.run(ops.job_get(10**12)) is None


@covers("jobs_list")
def check_jobs_list(q: Q) -> None:
    queued = q.add(2)
    other = q.add(1, queue="other", task="u")
    done = q.finished(JobState.SUCCEEDED, 2)
    dead = q.finished(JobState.DEAD, 1)

    def ids(states: list[JobState] | None = None, queue: str | None = None, task: str | None = None,
            limit: int = 50) -> list[int]:  # fmt: skip
        return [j.id for j in q.run(ops.jobs_list(states, queue, task, limit))]

    everything = sorted([*queued, *other, *done, *dead], reverse=True)
    assert ids() == everything  # newest first, live and finished together
    assert ids(limit=3) == everything[:3]
    assert ids([JobState.SUCCEEDED]) == sorted(done, reverse=True)
    assert ids([JobState.QUEUED, JobState.DEAD]) == sorted([*queued, *other, *dead], reverse=True)
    assert ids(queue="other") == other and ids(task="u") == other
    assert ids([JobState.QUEUED], queue="default", task="t") == sorted(queued, reverse=True)
    assert ids([JobState.RUNNING]) == [] and ids(queue="nowhere") == []
    assert [j.id for j in q.app.list_jobs(JobState.DEAD)] == dead
    q.sql("DELETE FROM {s}.jobs")
    q.sql("DELETE FROM {s}.finished_jobs")
    http_checks.check_jobs_list_pages(q)


@covers("job_cancel")
def check_job_cancel(q: Q) -> None:
    (queued,) = q.add()
    (scheduled,) = q.add(delay=60)
    (running,) = q.add(queue="r")
    q.claim(("r",))
    (done,) = q.finished(JobState.SUCCEEDED)
    q.clock.advance(1)
    for job_id in (queued, scheduled, running):
        assert q.run(ops.job_cancel(job_id, q.now())) == [job_id]
        job = q.job(job_id)
        assert (job.state, job.finished_at) == ("cancelled", q.now())
    assert q.job(running).attempts == 1  # a running job keeps its attempt and lease token (for fencing)
    assert q.run(ops.job_cancel(done, q.now())) == []
    assert q.run(ops.job_cancel(queued, q.now())) == []
    assert q.run(ops.job_cancel(10**12, q.now())) == []


@covers("job_requeue")
def check_job_requeue(q: Q) -> None:
    dead = q.finished(JobState.DEAD, 2)
    (cancelled,) = q.finished(JobState.CANCELLED)
    (done,) = q.finished(JobState.SUCCEEDED)
    (live,) = q.add()
    q.clock.advance(30)
    assert sorted(q.run(ops.job_requeue([*dead, cancelled, done, live, 10**12], q.now()))) == [
        *dead,
        cancelled,
    ]
    for job_id in dead:
        job = q.job(job_id)
        assert (job.state, job.attempts, job.run_at, job.created_at) == ("queued", 0, q.now(), T0)
        assert [e.error for e in job.errors] == ["Boom: x"]  # history kept
    assert q.job(done).state is JobState.SUCCEEDED
    assert q.run(ops.job_requeue([], q.now())) == []


@covers("job_run_now")
def check_job_run_now(q: Q) -> None:
    (scheduled,) = q.add(delay=3600)
    (running,) = q.add(queue="r")
    q.claim(("r",))
    (done,) = q.finished(JobState.SUCCEEDED)
    q.clock.advance(1)
    assert q.run(ops.job_run_now(scheduled, q.now())) == [scheduled]
    assert (q.job(scheduled).state, q.job(scheduled).run_at) == ("queued", q.now())
    assert q.run(ops.job_run_now(running, q.now())) == []
    assert q.run(ops.job_run_now(done, q.now())) == []


@covers("dlq_ids")
def check_dlq_ids(q: Q) -> None:
    first = q.finished(JobState.DEAD, 2)
    q.clock.advance(1)
    other_queue = q.finished(JobState.DEAD, 1, queue="other")
    other_task = q.finished(JobState.DEAD, 1, task="u")
    q.finished(JobState.SUCCEEDED)
    q.finished(JobState.CANCELLED)
    assert q.run(ops.dlq_ids(None, None, 100)) == [*first, *other_queue, *other_task]  # oldest first
    assert q.run(ops.dlq_ids(None, None, 1)) == first[:1]
    assert q.run(ops.dlq_ids("other", None, 100)) == other_queue
    assert q.run(ops.dlq_ids(None, "u", 100)) == other_task
    assert q.run(ops.dlq_ids("other", "u", 100)) == []


@covers("dlq_purge")
def check_dlq_purge(q: Q) -> None:
    old = q.finished(JobState.DEAD, 2)
    q.clock.advance(100)
    (other_queue,) = q.finished(JobState.DEAD, 1, queue="other")
    (other_task,) = q.finished(JobState.DEAD, 1, task="u")
    (done,) = q.finished(JobState.SUCCEEDED)
    assert q.run(ops.dlq_purge(None, None, T0 + timedelta(seconds=50))) == 2
    assert q.run(ops.dlq_purge("nowhere", None, None)) == 0
    assert q.run(ops.dlq_purge("other", None, None)) == 1
    assert q.run(ops.dlq_purge(None, "u", None)) == 1
    left = {r[0] for r in q.sql("SELECT id FROM {s}.finished_jobs")}
    assert left == {done}
    assert not left & {*old, other_queue, other_task}
    q.sql("DELETE FROM {s}.finished_jobs")
    dashboard_checks.check_purge_ids(q)


@covers("queue_counts")
def check_queue_counts(q: Q) -> None:
    q.add(2)
    q.add(1, delay=60)
    q.add(1, queue="other")
    q.claim(("other",))
    q.finished(JobState.SUCCEEDED, 2, queue="other")
    q.finished(JobState.DEAD, 1)
    counts = sorted(q.run(ops.queue_counts()))
    assert counts == [
        ("default", "dead", 1),
        ("default", "queued", 2),
        ("default", "scheduled", 1),
        ("other", "running", 1),
        ("other", "succeeded", 2),
    ]
    stats = {s.queue: s for s in q.app.queue_stats()}
    assert stats["default"].counts[JobState.QUEUED] == 2 and stats["other"].counts[JobState.RUNNING] == 1


@covers("queue_activity")
def check_queue_activity(q: Q) -> None:
    q.add(1)
    q.clock.advance(10)
    q.add(1)
    q.add(1, delay=60)  # not due: not waiting
    q.add(1, queue="busy")
    q.claim(("busy",))  # running: not waiting
    q.finished(JobState.SUCCEEDED, 2, queue="done")
    q.clock.advance(5)
    q.finished(JobState.DEAD, 1, queue="done")
    activity = sorted(q.run(ops.queue_activity(q.now(), T0 + timedelta(seconds=12))))
    assert activity == [("default", 15.0, 0), ("done", None, 1)]
    everything = sorted(q.run(ops.queue_activity(q.now(), EPOCH)))
    assert everything == [("default", 15.0, 0), ("done", None, 3)]


@covers("timings")
def check_timings(q: Q) -> None:
    for wait, run in ((1, 2), (3, 4)):
        q.clock.set(T0)
        q.add()
        q.clock.advance(wait)
        (job,) = q.claim()
        q.clock.advance(run)
        q.run(ops.complete([lease(job)], [None], q.now()))
    q.clock.set(T0)
    q.finished(JobState.DEAD)  # only succeeded jobs count
    count, wait50, wait95, run50, run95, first, last = q.run(ops.timings(EPOCH))
    assert (count, first, last) == (2, T0, T0 + timedelta(seconds=7))
    assert (wait50, wait95, run50, run95) == pytest.approx((2.0, 2.9, 3.0, 3.9))
    assert q.run(ops.timings(T0 + timedelta(seconds=4)))[0] == 1
    empty = q.run(ops.timings(T0 + timedelta(days=1)))
    assert empty[0] == 0 and empty[1:] == (None,) * 6
    assert q.app.timings(EPOCH).count == 2


@covers("history_summary")
def check_history_summary(q: Q) -> None:
    q.finished(JobState.SUCCEEDED, 3)
    (dead,) = q.finished(JobState.DEAD)
    q.clock.advance(10)
    q.finished(JobState.CANCELLED, 2)
    assert q.run(ops.history_summary(EPOCH)) == {"succeeded": (3, 3), "dead": (1, 1), "cancelled": (2, 0)}
    assert q.run(ops.history_summary(T0 + timedelta(seconds=5))) == {"cancelled": (2, 0)}
    assert dead


# ----- LISTEN
@covers("listen")
def check_listen(q: Q) -> None:
    async def main() -> list[str]:
        listener = Listener(q.dsn, q.schema)
        await listener.connect()
        try:
            await asyncio.to_thread(q.add, 1, queue="wake-me")
            await asyncio.to_thread(q.add, 1, queue="later", delay=60)  # not due: no announcement
            notes = listener.notifications()
            async with asyncio.timeout(10):
                return [await anext(notes)]
        finally:
            await listener.close()

    assert asyncio.run(main()) == ["wake-me"]


# ----- migrations
@covers(
    "migrate_lock", "migrate_bootstrap", "migrations_table_exists", "migrations_applied", "migration_record",
    "schema_drop",
)  # fmt: skip
def check_migrations(q: Q) -> None:
    everything = [f"{v:04d}_{n}" for v, n, _ in named.migrations()]
    fresh = Store(q.dsn, f"{q.schema}_m")
    try:
        assert migrations.status(fresh) == MigrationStatus(applied=[], pending=everything)
        results: list[list[str]] = []
        racers = [
            threading.Thread(target=lambda: results.append(migrations.migrate(fresh))) for _ in range(3)
        ]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join(30)
        assert sorted(results, key=len) == [[], [], everything]  # the lock lets one apply them
        status = migrations.status(fresh)
        assert status.up_to_date and status.applied == [v for v, _, _ in named.migrations()]
        assert migrations.migrate(fresh) == []
        migrations.drop(fresh)
        assert q.sql("SELECT count(*) FROM pg_namespace WHERE nspname = %s", [fresh.schema]) == [(0,)]
        assert migrations.status(fresh).pending == everything
    finally:
        migrations.drop(fresh)
        fresh.close()


# ----- the catalog reads behind schema.sql
@covers(
    "introspect_tables", "introspect_columns", "introspect_constraints", "introspect_indexes",
    "introspect_sequences", "introspect_views", "introspect_functions", "introspect_triggers",
    "introspect_migrations",
)  # fmt: skip
def check_introspection(q: Q) -> None:
    q.sql(
        """
        CREATE VIEW {s}.zz_view AS SELECT id FROM {s}.jobs;
        CREATE FUNCTION {s}.zz_touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
        CREATE TRIGGER zz_trigger BEFORE INSERT ON {s}.leader FOR EACH ROW EXECUTE FUNCTION {s}.zz_touch();
        """
    )
    store = q.store
    tables = schema_dump.tables(store)
    assert {"jobs", "finished_jobs", "leader", "workers", "migrations"} <= set(tables)
    assert "fillfactor=80" in tables["jobs_p0"] and "fillfactor=80" in tables["jobs_p1"]
    partitioning = schema_dump.partitioning(store)
    assert partitioning["jobs"] == ("PARTITION BY LIST (slot)", None)
    assert partitioning["jobs_p1"] == (None, "PARTITION OF jobs FOR VALUES IN ('1')")
    assert partitioning["finished_jobs"] == ("PARTITION BY RANGE (finished_at)", None)
    assert partitioning["finished_jobs_default"] == (None, "PARTITION OF finished_jobs DEFAULT")
    assert partitioning["leader"] == (None, None)
    columns = {(c.table, c.name): c for c in schema_dump.columns(store)}
    assert columns["jobs", "id"].type == "bigint" and columns["jobs", "id"].not_null
    assert columns["jobs", "errors"].default == "'[]'::jsonb"
    assert ("zz_view", "id") in columns
    constraints = {(d.table, d.name): d.definition for d in schema_dump.constraints(store)}
    assert "scheduled" in constraints["jobs", "jobs_state_check"]
    assert constraints["jobs", "jobs_pkey"] == "PRIMARY KEY (id, slot)"
    indexes = {(d.table, d.name): d.definition for d in schema_dump.indexes(store)}
    assert "WHERE" in indexes["jobs", "jobs_claim_idx"]
    assert ("jobs", "jobs_pkey") not in indexes  # constraint indexes are left to the constraint
    assert any("job_id_seq AS bigint" in line for line in schema_dump._sequences(store))
    assert schema_dump.views(store)["zz_view"] == "VIEW"
    assert any(
        "zz_touch()" in f and f.startswith("CREATE OR REPLACE FUNCTION") for f in schema_dump.functions(store)
    )
    triggers = {(d.table, d.name): d.definition for d in schema_dump.triggers(store)}
    assert "zz_touch()" in triggers["leader", "zz_trigger"]
    assert schema_dump.applied_migrations(store) == [f"{v:04d}_{n}" for v, n, _ in named.migrations()]


def test_query_errors_are_pageq_errors(q: Q) -> None:
    with pytest.raises(pageq.DatabaseError):
        bad = ops.Insert(["t"], ["default"], ["{}"], [40_000], [q.now()], [1], [None])  # smallint overflow
        q.run(ops.enqueue(bad, q.now(), "pageq_jobs_x", []))
    broken = Store(q.dsn, "no_such_schema")
    try:
        with pytest.raises(pageq.MigrationError):
            broken.run(ops.job_get(1))
    finally:
        broken.close()


# ----- security (security.sql)
@covers(
    "principal_create",
    "principal_set_disabled",
    "principal_delete",
    "principals_list",
    "principal_active",
    "token_create",
    "token_revoke",
    "tokens_list",
    "authenticate",
)
def check_principals_and_tokens(q: Q) -> None:
    from pageq.security.tokens import token_hash

    sec = q.app.security
    sec.create_principal("alice", note="ops")
    assert q.run(secops.principal_active("alice")) and not q.run(secops.principal_active("bob"))
    token_id, token = sec.create_token("alice")
    assert q.run(secops.authenticate(token_hash(token))) == "alice"
    assert [r[0] for r in sec.principals()] == ["alice"] and sec.principals()[0][4] == 1
    assert sec.tokens("alice")[0][0] == token_id and token not in str(sec.tokens())
    sec.set_disabled("alice")
    assert q.run(secops.authenticate(token_hash(token))) is None
    sec.set_disabled("alice", False)
    sec.revoke_token(token_id)
    assert q.run(secops.authenticate(token_hash(token))) is None
    sec.delete_principal("alice")
    assert sec.principals() == []
    actions = [r[0] for r in q.sql("SELECT action FROM {s}.audit ORDER BY id")]
    assert actions == ["principal.create", "token.create", "principal.disable", "principal.enable",
                       "token.revoke", "principal.delete"]  # fmt: skip


@covers("grant_add", "grant_remove", "grants_list")
def check_grants(q: Q) -> None:
    sec = q.app.security
    sec.create_principal("p")
    gid = sec.grant("p", "enqueue", task="email.*")
    sec.grant("p", "*", queue="q_1", allow=False)
    assert [g.describe() for g in sec.grants("p")] == [
        "allow enqueue on queue '*' task 'email.*'", "deny * on queue 'q_1' task '*'",
    ]  # fmt: skip
    likes = q.sql("SELECT queue_like, task_like FROM {s}.grants ORDER BY id")
    assert likes == [("%", "email.%"), ("q\\_1", "%")]
    sec.revoke_grant(gid)
    assert len(sec.grants()) == 1


@covers(
    "audit_record", "audit_level_get", "audit_level_set", "audit_list", "set_principal", "set_principal_local"
)
def check_audit_rows(q: Q) -> None:
    sec = q.app.security
    assert sec.audit_level() == "full"
    q.run(secops.audit_record("read", principal="x", decision="deny", reason="no rule", job_id=7, queue="a",
                              task="t", detail={"k": 1}))  # fmt: skip
    assert sec.audit_level("actions") == "actions"
    rows = sec.audit(principal="x")
    assert [(r.action, r.decision, r.reason, r.job_id, r.detail) for r in rows] == [
        ("read", "deny", "no rule", 7, {"k": 1})
    ]
    assert [r.action for r in sec.audit(action="audit")] == ["audit.level"]
    assert sec.audit(decision="deny", since=T0 - timedelta(days=36500), until=T0 + timedelta(days=36500))
    store = Store(q.dsn, q.schema, principal="named")
    try:
        store.run(secops.audit_record("probe", principal=None))
        with store.transaction() as conn:  # a pooled session: the principal is set on it
            store.run(secops.audit_record("probe2", principal=None), conn)
    finally:
        store.close()
    assert q.sql("SELECT principal FROM {s}.audit WHERE action = 'probe2'") == [("named",)]
    pooled = Store(q.dsn, q.schema, principal="per-tx", prepare=False)  # no session settings: per transaction
    try:
        pooled.run(secops.audit_record("probe3", principal=None))
    finally:
        pooled.close()
    assert q.sql("SELECT principal FROM {s}.audit WHERE action = 'probe3'") == [("per-tx",)]
    dashboard_checks.check_control_audited(q)


@covers("audit_seal", "audit_seals", "audit_hashes", "audit_unsealed")
def check_audit_seals(q: Q) -> None:
    sec = q.app.security
    q.add(3)
    assert q.run(secops.audit_unsealed()) == 3
    sealed = None
    while sealed is None:  # another session's open transaction in this database holds the range back
        sealed = sec.seal_audit("test")
    assert sealed == (1, 3) and sec.seal_audit("test") is None
    seals = q.run(secops.audit_seals(1, 10))
    assert [s.ids for s in seals] == [[r[0] for r in q.sql("SELECT id FROM {s}.audit ORDER BY id")]]
    hashes = q.run(secops.audit_hashes(seals[0].from_xid, seals[0].to_xid))
    assert b"".join(h for _, h in hashes) == seals[0].hashes
    assert sec.verify_audit().ok and q.run(secops.audit_unsealed()) == 0


@covers("encrypted_batch", "reencrypt")
def check_reencrypt(q: Q) -> None:
    from pageq.security.crypto import Keyring, new_key

    old = Keyring.parse(f"k1:{new_key()}")
    q.app.keyring = old
    live = q.add(2)
    done = q.finished(JobState.SUCCEEDED, 1)
    ring = Keyring({"k2": bytes(32), "k1": old.keys["k1"]}, "k2")
    rows = q.run(secops.encrypted_batch("jobs", 0, "k2", 10))
    assert [r[0] for r in rows] == live
    counts = q.app.security.rotate_keys(batch=1, keyring=ring)
    assert counts == {"rewritten": 3, "changed_meanwhile": 0, "undecryptable": 0}
    assert q.run(secops.encrypted_batch("jobs", 0, "k2", 10)) == []
    assert q.run(secops.encrypted_batch("finished_jobs", 0, "k2", 10)) == []
    q.app.keyring = ring
    assert q.app.get_job(done[0]).args == {} and q.app.get_job(live[0]).args == {}


@covers("db_login_create", "db_roles_list", "db_roles_drop", "row_security_active")
def check_db_roles(q: Q) -> None:
    sec = q.app.security
    assert q.run(secops.row_security_active()) is False  # the owner (superuser here) is exempt
    sec.create_principal("w-1")
    role = sec.create_db_login("w-1", "worker", "secret-pw")
    assert role == f"{q.schema}_u_w_1" and sec.db_logins() == [(role, "w-1", "worker")]
    roles = {r[0] for r in q.sql("SELECT rolname FROM pg_roles WHERE rolname LIKE %s", [q.schema + "%"])}
    assert roles == {role, *(f"{q.schema}_{k}" for k in ("producer", "worker", "admin"))}
    q.app.drop_schema()
    assert q.sql("SELECT rolname FROM pg_roles WHERE rolname LIKE %s", [q.schema + "%"]) == []
    q.app.migrate()


import dashboard_checks  # noqa: E402  (the dashboard's checks register themselves with @covers too)
import dispatch_checks  # noqa: E402, F401  (the dispatcher's checks register themselves with @covers)
import http_checks  # noqa: E402  (so do the HTTP API's)
import stats_checks  # noqa: E402, F401  (the monitoring checks register themselves with @covers)
import webhook_checks  # noqa: E402, F401  (and the webhooks')


# ----- the SQL API (migration 0011, store/sqlapi.py)
@covers(
    "sqlapi_digest", "sqlapi_digest_set", "sqlapi_drop", "sqlapi_types", "sqlapi_function", "sqlapi_grant"
)
def check_sql_api_functions(q: Q) -> None:
    q.sql("UPDATE {s}.sql_api SET digest = 'made from other queries'")
    assert not q.app.migration_status().sql_api_current
    assert q.app.migrate() == []  # no migration, but the functions are made again
    assert q.app.migration_status().sql_api_current
    made = q.sql(
        "SELECT proname FROM pg_proc WHERE pronamespace = '{s}'::regnamespace AND proname LIKE 'q\\_%'"
    )
    assert sorted(r[0] for r in made) == sorted(f"q_{name}" for name in sqlapi.PUBLISHED)


@covers("tasks_publish", "routes_lock", "routes_clear", "routes_publish", "routes_published")
def check_publish_tasks_and_routes(q: Q) -> None:
    q.app.route("t", args={"x": [1, {"b": 2, "a": 1}]}, queue="elsewhere", priority=3)
    assert q.app.publish_routes() == (2, 1)
    assert q.app.publish_routes() == (0, 0)  # nothing changed: nothing written
    rows = q.sql("SELECT name, task, queue, required_args, any_args, retry_cap, encrypted FROM {s}.tasks")
    assert sorted(rows) == [
        ("t", "t", "default", [], False, 3600.0, False),
        ("u", "u", "default", [], False, 3600.0, False),
    ]
    assert q.sql("SELECT task_glob, task_re, args, queue, priority FROM {s}.routes") == [
        ("t", "^t$", {"x": [1, {"a": 1, "b": 2}]}, "elsewhere", 3)
    ]
    q.app.router.rules.clear()
    assert q.app.publish_routes() == (0, 0)
    assert q.sql("SELECT count(*) FROM {s}.routes") == [(0,)]
    actions = q.sql("SELECT action FROM {s}.audit WHERE action LIKE '%%.publish' ORDER BY id")
    assert [a[0] for a in actions] == ["tasks.publish", "routes.publish", "routes.publish"]
