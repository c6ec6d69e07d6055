"""R12: a Hypothesis state machine against the real database with a frozen clock.

Rules drive the same named queries a worker, the rescuer and an operator use (enqueue, claim, heartbeat,
complete, fail, crash, pause, advance the clock, rescue, promote, cancel, requeue) and a model predicts every
job's state; after every step the database must agree with the model and the invariants must hold.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

import pageq
from pageq.store import ops

pytestmark = pytest.mark.chaos

LEASE = 10.0
CRASH_LIMIT = 3
FINAL = {"succeeded", "dead", "cancelled"}
RUNNABLE = {"scheduled", "queued", "retrying"}
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class Model:
    """What the queue should hold about one job."""

    state: str
    run_at: datetime
    max_attempts: int
    attempts: int = 0
    crashes: int = 0
    lease: ops.Lease | None = None  # the live lease, if running
    expires: datetime | None = None
    stale: list[ops.Lease] = field(default_factory=list)  # leases it held before
    ever: set[str] = field(default_factory=set)


class Env:
    """One migrated schema shared by all examples (each example starts from empty tables)."""

    app: pageq.App
    clock: pageq.FrozenClock
    dsn: str
    conn: psycopg.Connection[tuple[object, ...]]
    events: dict[str, int] = {}

    @classmethod
    def count(cls, event: str) -> None:
        cls.events[event] = cls.events.get(event, 0) + 1


class QueueMachine(RuleBasedStateMachine):
    jobs = Bundle("jobs")

    def __init__(self) -> None:
        super().__init__()
        self.app, self.clock, self.store = Env.app, Env.clock, Env.app.store
        self.clock.set(T0)
        Env.conn.execute(f"TRUNCATE {self.app.schema}.jobs, {self.app.schema}.finished_jobs, "
                         f"{self.app.schema}.idempotency_keys")  # fmt: skip
        self.model: dict[int, Model] = {}
        self.keys: dict[str, int] = {}
        self.paused: set[int] = set()  # jobs whose worker is paused: it acks late, with its old lease

    def now(self) -> datetime:
        return self.clock.now()

    @initialize(target=jobs)
    def first(self) -> int:
        self.enqueue(max_attempts=3, delay=0, key=None)
        return self.enqueue(max_attempts=2, delay=0, key=None)

    # ----- producers
    @rule(target=jobs, max_attempts=st.integers(1, 3), delay=st.sampled_from([0, 0, 0, 5]),
          key=st.none() | st.sampled_from(["k1", "k2"]))  # fmt: skip
    def enqueue(self, max_attempts: int, delay: int, key: str | None) -> int:
        spec = Env.app.get_task("t").job(max_attempts=max_attempts, delay=delay or None, idempotency_key=key)
        (job_id,) = self.app.enqueue_many([spec])
        if key is not None and key in self.keys:
            assert job_id == self.keys[key], "an idempotency key made a second job"
            return job_id
        assert job_id not in self.model
        if key is not None:
            self.keys[key] = job_id
        state = "scheduled" if delay else "queued"
        self.model[job_id] = Model(state, self.now() + timedelta(seconds=delay), max_attempts, ever={state})
        return job_id

    # ----- a worker
    @rule(limit=st.integers(1, 3))
    def claim(self, limit: int) -> None:
        now = self.now()
        due = {i for i, m in self.model.items() if m.state in RUNNABLE and m.run_at <= now}
        claimed = self.store.run(ops.claim(["default"], limit, now, LEASE, "w"))
        got = {job.id for job in claimed}
        assert got <= due, f"claimed jobs not due: {got - due}"
        assert len(got) == min(limit, len(due)), "a due job was left unclaimed"
        Env.count(f"claimed {len(claimed)}")
        for job in claimed:
            m = self.model[job.id]
            assert job.attempts == m.attempts + 1
            assert job.lease_token is not None
            m.state, m.attempts, m.expires = "running", job.attempts, now + timedelta(seconds=LEASE)
            m.lease = ops.Lease(job.id, job.lease_token)
            m.ever.add("running")
            self.paused.discard(job.id)

    def _pick(self, pick: int, stale: bool) -> tuple[int, ops.Lease] | None:
        """A job and a lease its worker holds: a live one (of a running job whose worker did not crash), or
        with ``stale``, the last one it held (live still, or taken away since)."""
        if stale:
            held = [(i, m.stale[-1]) for i, m in sorted(self.model.items()) if m.stale]
        else:
            held = [(i, m.lease) for i, m in sorted(self.model.items())
                    if m.lease is not None and i not in self.paused]  # fmt: skip
        return held[pick % len(held)] if held else None

    @rule(pick=st.integers(0, 50), stale=st.booleans())
    def heartbeat(self, pick: int, stale: bool) -> None:
        if (found := self._pick(pick, stale)) is None:
            return
        job_id, lease = found
        kept = self.store.run(ops.heartbeat([lease], self.now(), LEASE))
        m = self.model[job_id]
        live = m.lease is not None and lease.token == m.lease.token
        assert kept == ([job_id] if live else []), "a heartbeat with a stale lease was accepted"
        Env.count("heartbeat kept" if live else "stale heartbeat rejected")
        if live:
            m.expires = self.now() + timedelta(seconds=LEASE)

    @rule(pick=st.integers(0, 50), stale=st.booleans())
    def complete(self, pick: int, stale: bool) -> None:
        if (found := self._pick(pick, stale)) is None:
            return
        job_id, lease = found
        done = self.store.run(ops.complete([lease], ["1"], self.now()))
        self._acked(job_id, lease, done, "succeeded")

    @rule(pick=st.integers(0, 50), stale=st.booleans(), bury=st.booleans(), backoff=st.integers(0, 20))
    def fail(self, pick: int, stale: bool, bury: bool, backoff: int) -> None:
        if (found := self._pick(pick, stale)) is None:
            return
        job_id, lease = found
        error = '{"attempt": 1, "error": "Boom", "traceback": null, "worker": "w", "at": "now"}'
        m = self.model[job_id]
        bury = bury or m.attempts >= m.max_attempts
        if bury:
            done = self.store.run(ops.bury([lease], [error], self.now()))
        else:
            run_at = self.now() + timedelta(seconds=backoff)
            done = self.store.run(ops.retry([lease], [run_at], [error]))
        if self._acked(job_id, lease, done, "dead" if bury else "retrying") and not bury:
            m.run_at = self.now() + timedelta(seconds=backoff)

    def _acked(self, job_id: int, lease: ops.Lease, done: list[int], to: str) -> bool:
        m = self.model[job_id]
        live = m.lease is not None and lease.token == m.lease.token
        assert done == ([job_id] if live else []), "a stale acknowledgement changed a job"
        Env.count(f"ack {to}" if live else "stale ack rejected")
        if live:
            m.state, m.lease, m.expires = to, None, None
            m.stale.append(lease)
            m.ever.add(to)
        return live

    @rule(pick=st.integers(0, 50))
    def crash(self, pick: int) -> None:
        """The worker running a job dies: nothing reaches the database; the lease will expire."""
        if (found := self._pick(pick, stale=False)) is not None:
            self.paused.add(found[0])

    @rule(pick=st.integers(0, 50))
    def pause(self, pick: int) -> None:
        """A worker stops (SIGSTOP) with a live lease; it may ack later with it (a `stale` ack), once the
        job was rescued, cancelled or claimed again, or while the lease is still live."""
        if (found := self._pick(pick, stale=False)) is not None:
            self.paused.add(found[0])
            self.model[found[0]].stale.append(found[1])

    # ----- time and maintenance
    @rule(seconds=st.sampled_from([1, 4, 11]))
    def advance_clock(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @rule(pick=st.integers(0, 50))
    def crash_and_rescue(self, pick: int) -> None:
        """A worker dies, its lease runs out, the rescuer runs: the common path, made likely."""
        if (found := self._pick(pick, stale=False)) is None:
            return
        self.paused.add(found[0])
        self.clock.advance(LEASE + 1)
        self.rescue()

    @rule()
    def rescue(self) -> None:
        now = self.now()
        expired = [i for i, m in self.model.items() if m.state == "running" and m.expires and m.expires < now]
        dead = [i for i in expired
                if self.model[i].attempts >= self.model[i].max_attempts
                or self.model[i].crashes + 1 >= CRASH_LIMIT]  # fmt: skip
        got = self.store.run(ops.rescue(now, crash_limit=CRASH_LIMIT))
        assert got == (len(expired) - len(dead), len(dead))
        for i in expired:
            Env.count("rescue buried (worker_crash)" if self.model[i].crashes + 1 >= CRASH_LIMIT
                      else "rescue buried" if i in dead else "rescue retried")  # fmt: skip
        for i in expired:
            m = self.model[i]
            assert m.lease is not None
            m.stale.append(m.lease)
            m.state = "dead" if i in dead else "retrying"
            m.lease, m.expires, m.crashes = None, None, m.crashes + 1
            m.ever.add(m.state)
            self.paused.discard(i)

    @rule()
    def promote(self) -> None:
        now = self.now()
        due = [i for i, m in self.model.items() if m.state in ("scheduled", "retrying") and m.run_at <= now]
        assert self.store.run(ops.promote(now)) == len(due)
        for i in due:
            self.model[i].state = "queued"
            self.model[i].ever.add("queued")

    # ----- an operator
    @rule(job_id=jobs)
    def cancel(self, job_id: int) -> None:
        m = self.model[job_id]
        if m.state in FINAL:
            with pytest.raises(pageq.InvalidStateError):
                self.app.cancel(job_id)
            return
        self.app.cancel(job_id)
        if m.lease is not None:
            m.stale.append(m.lease)
        m.state, m.lease, m.expires = "cancelled", None, None
        m.ever.add("cancelled")

    @rule(job_id=jobs)
    def requeue(self, job_id: int) -> None:
        m = self.model[job_id]
        if m.state in ("succeeded", "running"):
            with pytest.raises(pageq.InvalidStateError):
                self.app.retry(job_id)
            return
        self.app.retry(job_id)
        Env.count(f"requeue {m.state}")
        if m.state in ("dead", "cancelled"):
            m.attempts, m.crashes = 0, 0
        m.state, m.run_at = "queued", self.now()
        m.ever.add("queued")

    # ----- invariants
    @invariant()
    def database_agrees_with_the_model(self) -> None:
        schema = self.app.schema
        rows = Env.conn.execute(
            f"SELECT id, state, attempts, crashes, max_attempts, lease_token::text, 'live' "
            f"FROM {schema}.jobs "
            f"UNION ALL SELECT id, state, attempts, NULL, max_attempts, NULL, 'finished' "
            f"FROM {schema}.finished_jobs"
        ).fetchall()
        keys = Env.conn.execute(f"SELECT key, job_id FROM {schema}.idempotency_keys").fetchall()

        ids = [r[0] for r in rows]
        assert len(ids) == len(set(ids)), "a job is in both tables"
        assert set(ids) == set(self.model), "counts by state do not sum to the jobs enqueued"
        for job_id, state, attempts, crashes, max_attempts, token, where in rows:
            m = self.model[job_id]
            assert state == m.state, f"job {job_id}: {state} in the database, {m.state} expected"
            assert (where == "finished") == (state in FINAL)
            assert attempts == m.attempts and crashes in (m.crashes, None)
            assert 0 <= attempts <= max_attempts, "attempts out of bounds"
            assert (state == "running") == (token is not None)
            if state == "running":
                assert m.lease is not None and token == m.lease.token
            if "succeeded" in m.ever:
                assert state == "succeeded", "a succeeded job changed state"
        assert dict(keys) == self.keys, "an idempotency key names the wrong job"


@pytest.fixture
def machine_env(dsn: str, schema: str) -> Iterator[None]:
    clock = pageq.FrozenClock(T0)
    app = pageq.App(dsn, schema=schema, clock=clock)
    app.migrate()

    @app.task
    def t() -> None: ...

    Env.app, Env.clock, Env.dsn = app, clock, dsn
    with psycopg.connect(dsn, autocommit=True) as Env.conn:
        yield
    app.close()
    app.drop_schema()


def test_r12_the_queue_state_machine_agrees_with_its_model(machine_env: None) -> None:
    run_state_machine_as_test(QueueMachine, settings=settings(
        max_examples=200, stateful_step_count=20, derandomize=True, deadline=None, database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    ))  # fmt: skip
    print("events:", dict(sorted(Env.events.items())))
