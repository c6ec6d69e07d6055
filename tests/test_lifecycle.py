"""A job's life with an in-process worker: results, ctx, transactions, retries, callbacks, fencing, stop."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import psycopg
import pytest

import pageq
import pageq.testing
from pageq import JobState
from pageq.store import ops

T = TypeVar("T")
T0 = datetime(2030, 1, 1, tzinfo=UTC)
WORKER: dict[str, Any] = {"poll_interval": 0.05, "maintenance_interval": 0.1}


# ----- helpers
@pytest.fixture
def clock() -> pageq.FrozenClock:
    return pageq.FrozenClock(T0)


@pytest.fixture
def frozen_app(dsn: str, schema: str, clock: pageq.FrozenClock) -> Iterator[pageq.App]:
    """A migrated App whose time moves only when the test says so."""
    application = pageq.App(dsn, schema=schema, clock=clock)
    application.migrate()
    yield application
    application.close()
    application.drop_schema()


@pytest.fixture
def ledger(app: pageq.App) -> str:
    """A table in the test's schema that handlers write to; returns its qualified name."""
    table = f"{app.schema}.ledger"
    with psycopg.connect(app.database.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (job_id bigint NOT NULL, attempt int NOT NULL, note text)")
    return table


def ledger_rows(app: pageq.App, table: str) -> list[tuple[int, int, str]]:
    with psycopg.connect(app.database.dsn, autocommit=True) as conn:
        return [tuple(r) for r in conn.execute(f"SELECT job_id, attempt, note FROM {table} ORDER BY 1, 2")]


async def until(predicate: Callable[[], T], what: str, timeout: float = 15.0) -> T:
    """Poll ``predicate`` (run in a thread: it may query the database) until it is truthy."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def job_of(app: pageq.App, job_id: int) -> pageq.Job:
    return await asyncio.to_thread(app.get_job, job_id)


async def job_in(app: pageq.App, job_id: int, state: JobState, attempts: int | None = None) -> pageq.Job:
    def check() -> pageq.Job | None:
        job = app.get_job(job_id)
        ok = job.state is state and (attempts is None or job.attempts == attempts)
        return job if ok else None

    return await until(check, f"job {job_id} to be {state.value} (attempts={attempts})")


@contextlib.asynccontextmanager
async def running(app: pageq.App, queues: list[str], **options: Any) -> AsyncIterator[pageq.Worker]:
    """A worker running in this event loop for the duration of the block."""
    concurrency = options.pop("concurrency", 4)
    worker = app.worker(queues, concurrency, **{**WORKER, **options})
    task = asyncio.create_task(worker.run())
    started = asyncio.create_task(worker.started.wait())
    await asyncio.wait([task, started], timeout=15, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        task.result()
    assert worker.started.is_set(), "worker did not start"
    try:
        yield worker
    finally:
        worker.stop()
        async with asyncio.timeout(30):
            await task


async def drain(app: pageq.App, queues: list[str], **options: Any) -> pageq.Worker:
    return await pageq.testing.drain(app, queues, timeout=30, **{**WORKER, **options})


# ----- success
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_success_stores_the_json_result(app: pageq.App, kind: str) -> None:
    if kind == "sync":

        @app.task(name="compute")
        def compute(a: int, items: list[int]) -> dict[str, Any]:
            return {"sum": a + sum(items), "items": items, "nested": {"ok": True, "none": None}}

    else:

        @app.task(name="compute")
        async def compute(a: int, items: list[int]) -> dict[str, Any]:
            await asyncio.sleep(0)
            return {"sum": a + sum(items), "items": items, "nested": {"ok": True, "none": None}}

    @app.task
    def nothing() -> None:
        return None

    @app.task
    def scalar() -> str:
        return "just a string"

    job_id = compute.enqueue(a=1, items=[2, 3])
    none_id, scalar_id = nothing.enqueue(), scalar.enqueue()
    worker = await drain(app, ["default"])
    job = app.get_job(job_id)
    assert job.state is JobState.SUCCEEDED
    assert job.result == {"sum": 6, "items": [2, 3], "nested": {"ok": True, "none": None}}
    assert job.attempts == 1 and job.errors == []
    assert job.worker == worker.id
    assert job.started_at is not None and job.finished_at is not None
    assert job.created_at <= job.started_at <= job.finished_at
    assert app.get_job(none_id).result is None and app.get_job(none_id).state is JobState.SUCCEEDED
    assert app.get_job(scalar_id).result == "just a string"


async def test_a_result_that_is_not_json_buries_the_job(app: pageq.App) -> None:
    @app.task(max_attempts=5)
    def weird() -> object:
        return object()

    job_id = weird.enqueue()
    await drain(app, ["default"])
    job = app.get_job(job_id)
    assert job.state is JobState.DEAD and job.attempts == 1
    assert job.errors[0].error.startswith("SerializationError")


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_handler_context(app: pageq.App, kind: str) -> None:
    seen: list[tuple[int, int, str, str]] = []

    if kind == "sync":

        @app.task(name="probe")
        def probe(ctx: pageq.Context, tag: str) -> None:
            seen.append((ctx.job.id, ctx.attempt, ctx.worker_id, tag))

    else:

        @app.task(name="probe")
        async def probe(ctx: pageq.Context, tag: str) -> None:
            seen.append((ctx.job.id, ctx.attempt, ctx.worker_id, tag))

    ids = [probe.enqueue(tag=t) for t in "ab"]
    worker = await drain(app, ["default"])
    assert sorted(seen) == [(ids[0], 1, worker.id, "a"), (ids[1], 1, worker.id, "b")]


# ----- ctx.transaction
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_transaction_commits_with_completion(app: pageq.App, ledger: str, kind: str) -> None:
    if kind == "sync":

        @app.task(name="pay")
        def pay(ctx: pageq.Context, note: str) -> str:
            with ctx.transaction() as conn:
                conn.execute(f"INSERT INTO {ledger} VALUES (%s, %s, %s)", (ctx.job.id, ctx.attempt, note))
                assert app.get_job(ctx.job.id).state is JobState.RUNNING  # not yet visible outside
            return f"paid {note}"

    else:

        @app.task(name="pay")
        async def pay(ctx: pageq.Context, note: str) -> str:
            async with ctx.transaction() as conn:
                await conn.execute(
                    f"INSERT INTO {ledger} VALUES (%s, %s, %s)", (ctx.job.id, ctx.attempt, note)
                )
            return f"paid {note}"

    ids = [pay.enqueue(note=f"n{i}") for i in range(5)]
    await drain(app, ["default"])
    assert ledger_rows(app, ledger) == [(job_id, 1, f"n{i}") for i, job_id in enumerate(ids)]
    for i, job_id in enumerate(ids):
        job = app.get_job(job_id)
        assert (job.state, job.attempts, job.result) == (JobState.SUCCEEDED, 1, f"paid n{i}")


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_raise_inside_transaction_rolls_back_and_retries(
    app: pageq.App, ledger: str, kind: str
) -> None:
    retry = pageq.Backoff.constant(0)
    if kind == "sync":

        @app.task(name="flaky_pay", retry=retry, max_attempts=3)
        def flaky_pay(ctx: pageq.Context) -> int:
            with ctx.transaction() as conn:
                conn.execute(f"INSERT INTO {ledger} VALUES (%s, %s, 'x')", (ctx.job.id, ctx.attempt))
                if ctx.attempt < 3:
                    raise RuntimeError(f"fail {ctx.attempt}")
            return ctx.attempt

    else:

        @app.task(name="flaky_pay", retry=retry, max_attempts=3)
        async def flaky_pay(ctx: pageq.Context) -> int:
            async with ctx.transaction() as conn:
                await conn.execute(f"INSERT INTO {ledger} VALUES (%s, %s, 'x')", (ctx.job.id, ctx.attempt))
                if ctx.attempt < 3:
                    raise RuntimeError(f"fail {ctx.attempt}")
            return ctx.attempt

    job_id = flaky_pay.enqueue()
    await drain(app, ["default"])
    job = app.get_job(job_id)
    assert (job.state, job.attempts, job.result) == (JobState.SUCCEEDED, 3, 3)
    assert [e.error for e in job.errors] == ["RuntimeError: fail 1", "RuntimeError: fail 2"]
    assert ledger_rows(app, ledger) == [(job_id, 3, "x")]  # the failed attempts' writes were rolled back


async def test_error_after_the_transaction_committed_keeps_the_job_done(app: pageq.App, ledger: str) -> None:
    @app.task(max_attempts=3)
    async def late_failure(ctx: pageq.Context) -> None:
        async with ctx.transaction() as conn:
            await conn.execute(f"INSERT INTO {ledger} VALUES (%s, %s, 'done')", (ctx.job.id, ctx.attempt))
        raise RuntimeError("after the commit")

    job_id = late_failure.enqueue()
    await drain(app, ["default"])
    job = app.get_job(job_id)
    assert (job.state, job.attempts) == (JobState.SUCCEEDED, 1)
    assert ledger_rows(app, ledger) == [(job_id, 1, "done")]


async def test_transaction_of_a_cancelled_job_commits_nothing(app: pageq.App, ledger: str) -> None:
    raised: list[BaseException] = []

    @app.task(max_attempts=3)
    def too_late(ctx: pageq.Context) -> None:  # sync: a cancel only flags it; it runs on and commits too late
        deadline = time.monotonic() + 20
        while not ctx.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            with ctx.transaction() as conn:
                conn.execute(f"INSERT INTO {ledger} VALUES (%s, %s, 'x')", (ctx.job.id, ctx.attempt))
        except pageq.StaleLeaseError as exc:
            raised.append(exc)
            raise

    job_id = too_late.enqueue()
    # told by NOTIFY at once, or (polling behind a pooler) by the heartbeat that finds the lease gone
    async with running(app, ["default"], heartbeat=0.5):
        await job_in(app, job_id, JobState.RUNNING)
        cancelled = await asyncio.to_thread(app.cancel, job_id)
        await until(lambda: raised, "the handler's late transaction to fail")
    assert len(raised) == 1
    assert ledger_rows(app, ledger) == []
    job = app.get_job(job_id)
    assert job == cancelled and job.state is JobState.CANCELLED


# ----- retries and backoff, driven by a frozen clock
@pytest.mark.parametrize(("base", "cap"), [(2, 60), (10, 60)])
async def test_backoff_schedule_is_exact(
    frozen_app: pageq.App, clock: pageq.FrozenClock, base: int, cap: int
) -> None:
    app = frozen_app
    failures: list[int] = []
    dead: list[tuple[int, str]] = []

    @app.task(
        max_attempts=4,
        retry=pageq.Backoff.exponential(base=base, cap=cap, jitter=False),
        on_failure=lambda ctx, exc: failures.append(ctx.attempt),
        on_dead=lambda ctx, exc: dead.append((ctx.attempt, str(exc))),
    )
    def always_fails(ctx: pageq.Context) -> None:
        raise RuntimeError(f"boom {ctx.attempt}")

    job_id = always_fails.enqueue()
    async with running(app, ["default"]) as worker:
        for attempt in (1, 2, 3):
            job = await job_in(app, job_id, JobState.RETRYING, attempt)
            failed_at = datetime.fromisoformat(job.errors[-1].at)
            assert failed_at == clock.now()
            assert job.run_at - failed_at == timedelta(seconds=min(cap, base**attempt))
            clock.advance((job.run_at - clock.now()).total_seconds() + 0.5)  # just past run_at
        job = await job_in(app, job_id, JobState.DEAD)
    assert job.attempts == 4 and job.finished_at == clock.now()
    assert [e.attempt for e in job.errors] == [1, 2, 3, 4]
    for n, error in enumerate(job.errors, start=1):
        assert error.error == f"RuntimeError: boom {n}"
        assert (
            error.traceback is not None and "Traceback" in error.traceback and f"boom {n}" in error.traceback
        )
        assert error.worker == worker.id
    assert failures == [1, 2, 3]
    assert dead == [(4, "boom 4")]


async def test_backoff_with_jitter_stays_within_ten_percent(
    frozen_app: pageq.App, clock: pageq.FrozenClock
) -> None:
    app = frozen_app

    @app.task(max_attempts=5, retry=pageq.Backoff.exponential(base=3, cap=3600, jitter=True))
    def always_fails() -> None:
        raise RuntimeError("boom")

    ids = [always_fails.enqueue() for _ in range(8)]
    delays: list[float] = []
    async with running(app, ["default"], concurrency=8):
        for attempt in (1, 2, 3):
            for job_id in ids:
                job = await job_in(app, job_id, JobState.RETRYING, attempt)
                delay = (job.run_at - datetime.fromisoformat(job.errors[-1].at)).total_seconds()
                assert 0.9 * 3**attempt - 1e-6 <= delay <= 1.1 * 3**attempt + 1e-6
                delays.append(delay / 3**attempt)
            clock.advance(1.1 * 3**attempt + 1)
    assert len(set(delays)) > 1  # the jitter does spread them


async def test_non_retryable_error_goes_straight_to_dead(app: pageq.App) -> None:
    dead: list[int] = []

    @app.task(max_attempts=5, on_dead=lambda ctx, exc: dead.append(ctx.job.id))
    async def invalid(order_id: int) -> None:
        raise pageq.NonRetryableError(f"order {order_id} is invalid")

    job_id = invalid.enqueue(order_id=7)
    await drain(app, ["default"])
    job = app.get_job(job_id)
    assert (job.state, job.attempts, len(job.errors)) == (JobState.DEAD, 1, 1)
    assert job.errors[0].error == "NonRetryableError: order 7 is invalid"
    assert dead == [job_id]


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_timeout_fails_the_attempt(app: pageq.App, kind: str) -> None:
    release = threading.Event()
    if kind == "sync":

        @app.task(name="slow", max_attempts=1)
        def slow() -> None:
            release.wait(5)

    else:

        @app.task(name="slow", max_attempts=1, timeout=0.2)
        async def slow() -> None:
            await asyncio.sleep(5)

    try:
        job_id = slow.enqueue(timeout=0.2) if kind == "sync" else slow.enqueue()  # per call, or the default
        await drain(app, ["default"])
    finally:
        release.set()
    job = app.get_job(job_id)
    assert (job.state, job.attempts) == (JobState.DEAD, 1)
    assert job.timeout == 0.2
    assert job.errors[0].error == "JobTimeoutError: timed out after 0.2 s"


# ----- callbacks
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_callbacks(app: pageq.App, kind: str) -> None:
    calls: list[tuple[str, int, int, str]] = []

    def hook(name: str) -> Callable[[pageq.Context, object], Any]:
        def sync_hook(ctx: pageq.Context, value: object) -> None:
            calls.append((name, ctx.job.id, ctx.attempt, repr(value)))

        async def async_hook(ctx: pageq.Context, value: object) -> None:
            await asyncio.sleep(0)
            calls.append((name, ctx.job.id, ctx.attempt, repr(value)))

        return sync_hook if kind == "sync" else async_hook

    hooks = {"on_success": hook("success"), "on_failure": hook("failure"), "on_dead": hook("dead")}

    @app.task(**hooks)
    def fine(x: int) -> int:
        return x * 2

    @app.task(max_attempts=2, retry=pageq.Backoff.constant(0), **hooks)
    def broken() -> None:
        raise ValueError("nope")

    ok_id, bad_id = fine.enqueue(x=21), broken.enqueue()
    await drain(app, ["default"])
    assert sorted(calls) == sorted(
        [
            ("success", ok_id, 1, "42"),
            ("failure", bad_id, 1, "ValueError('nope')"),
            ("dead", bad_id, 2, "ValueError('nope')"),
        ]
    )


async def test_a_failing_callback_does_not_change_the_outcome(app: pageq.App) -> None:
    def explode(ctx: pageq.Context, value: object) -> None:
        raise RuntimeError("callback bug")

    @app.task(on_success=explode)
    def fine() -> int:
        return 1

    job_id = fine.enqueue()
    await drain(app, ["default"])
    assert app.get_job(job_id).state is JobState.SUCCEEDED


# ----- requeue
async def test_dead_jobs_can_be_requeued_and_then_succeed(app: pageq.App) -> None:
    broken = True

    @app.task(max_attempts=2, retry=pageq.Backoff.constant(0))
    def fragile(n: int) -> int:
        if broken:
            raise RuntimeError(f"broken {n}")
        return n

    ids = [fragile.enqueue(n=n) for n in range(3)]
    await drain(app, ["default"])
    assert {j.id for j in app.dead_jobs()} == set(ids)
    assert app.requeue_dead(queue="elsewhere") == [] and app.requeue_dead(task="other") == []

    job = app.retry(ids[0])
    assert (job.state, job.attempts, len(job.errors)) == (JobState.QUEUED, 0, 2)
    assert job.finished_at is None and job.result is None
    assert sorted(app.requeue_dead()) == ids[1:]
    assert app.dead_jobs() == []
    for job_id in ids[1:]:
        job = app.get_job(job_id)
        assert (job.state, job.attempts, len(job.errors)) == (JobState.QUEUED, 0, 2)

    broken = False
    await drain(app, ["default"])
    for n, job_id in enumerate(ids):
        job = app.get_job(job_id)
        assert (job.state, job.attempts, job.result) == (JobState.SUCCEEDED, 1, n)
        assert [e.error for e in job.errors] == [f"RuntimeError: broken {n}"] * 2  # history kept


async def test_requeue_dead_by_ids_and_filters(app: pageq.App) -> None:
    @app.task(max_attempts=1)
    def dies() -> None:
        raise pageq.NonRetryableError("x")

    a, b = dies.enqueue(queue="qa"), dies.enqueue(queue="qb")
    await drain(app, ["qa", "qb"])
    assert app.requeue_dead([a]) == [a]
    assert app.requeue_dead([a]) == []  # no longer dead
    assert app.requeue_dead(queue="qb") == [b]
    assert {app.get_job(a).state, app.get_job(b).state} == {JobState.QUEUED}


def test_retry_of_waiting_and_final_jobs(app: pageq.App) -> None:
    @app.task
    def later() -> None: ...

    job_id = later.enqueue(delay=3600)
    before = app.get_job(job_id)
    assert before.state is JobState.SCHEDULED
    now = app.retry(job_id)
    assert now.state is JobState.QUEUED and now.run_at < before.run_at

    app.cancel(job_id)
    back = app.retry(job_id)  # a cancelled job is requeued
    assert (back.state, back.attempts) == (JobState.QUEUED, 0)
    with pytest.raises(pageq.JobNotFoundError):
        app.retry(10**12)


async def test_retry_of_a_succeeded_job_is_refused(app: pageq.App) -> None:
    @app.task
    def fine() -> None: ...

    job_id = fine.enqueue()
    await drain(app, ["default"])
    with pytest.raises(pageq.InvalidStateError):
        app.retry(job_id)
    assert app.get_job(job_id).state is JobState.SUCCEEDED


# ----- cancel
async def test_cancelled_jobs_never_run(app: pageq.App) -> None:
    ran: list[int] = []

    @app.task
    def work(n: int) -> None:
        ran.append(n)

    queued, scheduled, kept = work.enqueue(n=1), work.enqueue(n=2, delay=3600), work.enqueue(n=3)
    for job_id in (queued, scheduled):
        job = app.cancel(job_id)
        assert job.state is JobState.CANCELLED and job.finished_at is not None
    await drain(app, ["default"])
    assert ran == [3]
    assert app.get_job(kept).state is JobState.SUCCEEDED
    assert {j.id for j in app.list_jobs(JobState.CANCELLED)} == {queued, scheduled}


async def test_cancel_of_final_and_unknown_jobs(app: pageq.App) -> None:
    @app.task
    def work() -> None: ...

    done, cancelled = work.enqueue(), work.enqueue(delay=3600)
    await drain(app, ["default"])
    app.cancel(cancelled)
    for job_id, state in ((done, JobState.SUCCEEDED), (cancelled, JobState.CANCELLED)):
        with pytest.raises(pageq.InvalidStateError, match=state.value):
            app.cancel(job_id)
        assert app.get_job(job_id).state is state
    with pytest.raises(pageq.JobNotFoundError):
        app.cancel(10**12)
    with pytest.raises(pageq.JobNotFoundError):
        app.get_job(10**12)


@pytest.mark.parametrize("ending", ["return", "raise", "non_retryable"])
async def test_ack_of_a_job_cancelled_while_running_changes_nothing(app: pageq.App, ending: str) -> None:
    gate = threading.Event()  # a sync handler runs on after a cancel (ctx.cancelled is only a flag)
    hooks: list[str] = []

    @app.task(
        max_attempts=3,
        on_success=lambda ctx, v: hooks.append("success"),
        on_failure=lambda ctx, e: hooks.append("failure"),
        on_dead=lambda ctx, e: hooks.append("dead"),
    )
    def held() -> str:
        gate.wait(30)
        if ending == "raise":
            raise RuntimeError("late failure")
        if ending == "non_retryable":
            raise pageq.NonRetryableError("late failure")
        return "late result"

    job_id = held.enqueue()
    async with running(app, ["default"]) as worker:
        await job_in(app, job_id, JobState.RUNNING)
        cancelled = await asyncio.to_thread(app.cancel, job_id)
        gate.set()
        await until(lambda: worker.completer.stale >= 1, "the stale acknowledgement")
    job = app.get_job(job_id)
    assert job == cancelled
    assert (job.state, job.attempts, job.result, job.errors) == (JobState.CANCELLED, 1, None, [])
    assert hooks == []


async def test_cancel_stops_a_running_async_handler(app: pageq.App) -> None:
    started, stopped = asyncio.Event(), asyncio.Event()

    @app.task
    async def endless() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            stopped.set()

    job_id = endless.enqueue()
    async with running(app, ["default"], heartbeat=0.5) as worker:  # polling workers learn by heartbeat
        await asyncio.wait_for(started.wait(), 10)
        await asyncio.to_thread(app.cancel, job_id)
        await asyncio.wait_for(stopped.wait(), 5)  # the notification cancels the handler at once
        await until(lambda: worker.busy == 0 and not worker.active, "the slot to be freed")
    assert app.get_job(job_id).state is JobState.CANCELLED


# ----- stale acknowledgements, through the store's operations
def test_stale_acknowledgements_change_nothing(frozen_app: pageq.App, clock: pageq.FrozenClock) -> None:
    app, store = frozen_app, frozen_app.store

    @app.task
    def work() -> None: ...

    job_id = work.enqueue()
    (first,) = store.run(ops.claim(["default"], 10, clock.now(), 30.0, "worker-1"))
    old = ops.Lease(job_id, uuid.UUID(first.lease_token))
    clock.advance(31)  # worker-1 stopped heartbeating: its lease expired
    assert store.run(ops.rescue(clock.now())) == (1, 0)
    rescued = app.get_job(job_id)
    assert (rescued.state, rescued.attempts, rescued.lease_token) == (JobState.RETRYING, 1, None)
    assert rescued.errors[0].error.startswith("LeaseExpired") and rescued.errors[0].worker == "worker-1"

    (second,) = store.run(ops.claim(["default"], 10, clock.now(), 30.0, "worker-2"))
    assert second.lease_token != first.lease_token and second.attempts == 2
    running_job = app.get_job(job_id)
    assert_stale_ops_change_nothing(store, old, clock.now())
    assert app.get_job(job_id) == running_job

    new = ops.Lease(job_id, uuid.UUID(second.lease_token))
    assert store.run(ops.heartbeat([new], clock.now(), 30.0)) == [job_id]
    assert store.run(ops.complete([new], ['{"by": 2}'], clock.now())) == [job_id]
    done = app.get_job(job_id)
    assert (done.state, done.attempts, done.result, done.worker) == (
        JobState.SUCCEEDED,
        2,
        {"by": 2},
        "worker-2",
    )
    assert_stale_ops_change_nothing(store, old, clock.now())
    assert store.run(ops.complete([new], ['{"by": "again"}'], clock.now())) == []  # completing twice: no-op
    assert app.get_job(job_id) == done


def assert_stale_ops_change_nothing(store: Any, lease: ops.Lease, now: datetime) -> None:
    error = '{"attempt": 1, "error": "stale"}'
    assert store.run(ops.complete([lease], ['"stale"'], now)) == []
    assert store.run(ops.retry([lease], [now], [error])) == []
    assert store.run(ops.bury([lease], [error], now)) == []
    assert store.run(ops.heartbeat([lease], now, 30.0)) == []
    assert store.run(ops.release([lease], now)) == []
    assert store.run(ops.set_result(lease, '"stale"')) == 0


async def test_rescuer_retries_the_job_of_a_dead_worker(
    frozen_app: pageq.App, clock: pageq.FrozenClock
) -> None:
    app = frozen_app

    @app.task
    def work() -> str:
        return "second time lucky"

    job_id = work.enqueue()
    (claimed,) = app.store.run(ops.claim(["default"], 1, clock.now(), 5.0, "crashed-worker"))
    clock.advance(6)
    async with running(app, ["default"]):
        job = await job_in(app, job_id, JobState.SUCCEEDED)
    assert (job.attempts, job.result) == (2, "second time lucky")
    assert [e.error for e in job.errors] == ["LeaseExpired: the worker stopped heartbeating"]
    assert claimed.lease_token != job.lease_token


def test_expired_lease_of_the_last_attempt_buries_the_job(
    frozen_app: pageq.App, clock: pageq.FrozenClock
) -> None:
    app = frozen_app

    @app.task(max_attempts=1)
    def work() -> None: ...

    job_id = work.enqueue()
    app.store.run(ops.claim(["default"], 1, clock.now(), 5.0, "crashed-worker"))
    assert app.store.run(ops.rescue(clock.now())) == (0, 0)  # not expired yet
    clock.advance(6)
    assert app.store.run(ops.rescue(clock.now())) == (0, 1)
    job = app.get_job(job_id)
    assert (job.state, job.attempts, len(job.errors)) == (JobState.DEAD, 1, 1)


# ----- graceful shutdown
@pytest.mark.parametrize("immediate", [False, True])
async def test_stop_releases_unfinished_jobs_without_counting_the_attempt(
    app: pageq.App, immediate: bool
) -> None:
    started = asyncio.Event()
    cancelled: list[bool] = []
    first_run = True

    @app.task
    async def long_job() -> str | None:
        if not first_run:
            return "finished by the next worker"
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise
        return None

    job_id = long_job.enqueue()
    waiting = long_job.enqueue(delay=3600)
    worker = app.worker(["default"], 2, grace=30.0 if immediate else 0.3, **WORKER)
    run = asyncio.create_task(worker.run())
    async with asyncio.timeout(15):
        await started.wait()
    assert (await job_of(app, job_id)).state is JobState.RUNNING
    worker.stop(immediate=immediate)
    async with asyncio.timeout(15):
        await run
    job = app.get_job(job_id)
    assert (job.state, job.attempts, job.lease_token, job.worker, job.errors) == (
        JobState.QUEUED,
        0,
        None,
        None,
        [],
    )
    assert cancelled == [True]
    assert app.get_job(waiting).state is JobState.SCHEDULED
    assert app.workers() == []  # deregistered

    first_run = False
    await drain(app, ["default"])
    job = app.get_job(job_id)
    assert (job.state, job.attempts, job.result) == (JobState.SUCCEEDED, 1, "finished by the next worker")


async def test_stop_waits_for_jobs_that_finish_within_grace(app: pageq.App) -> None:
    started = asyncio.Event()

    @app.task
    async def short_job(n: int) -> str:
        started.set()
        await asyncio.sleep(0.1)
        return f"done {n}"

    for n in range(5):  # the completion in flight at stop races the release of unfinished jobs: repeat
        started.clear()
        job_id = short_job.enqueue(n=n)
        worker = app.worker(["default"], 2, grace=30.0, **WORKER)
        run = asyncio.create_task(worker.run())
        async with asyncio.timeout(15):
            await started.wait()
            worker.stop()
            await run
        job = app.get_job(job_id)  # finished within the grace period: completed, not released to run again
        assert (job.state, job.result, job.attempts) == (JobState.SUCCEEDED, f"done {n}", 1)


async def test_stopping_while_a_claim_is_in_flight_strands_no_job(app: pageq.App) -> None:
    """A worker stopped at any moment leaves no job running: a claim that was in flight when stop came
    is run or released, never dropped with its lease (which would hold the job until the lease expires)."""

    @app.task
    async def quick(n: int) -> int:
        await asyncio.sleep(0.002)
        return n

    for round_ in range(20):
        app.enqueue_many([quick.job(n=i) for i in range(200)])
        worker = app.worker(["default"], 4, grace=5.0, batch_size=2, **WORKER)
        run = asyncio.create_task(worker.run())
        async with asyncio.timeout(15):
            await worker.started.wait()
        await asyncio.sleep(0.01 * (round_ % 7))
        worker.stop()
        async with asyncio.timeout(60):  # generous: CI shares two cores between two test processes
            await run
        stranded = [s.queue for s in app.queue_stats() if s.counts.get(JobState.RUNNING)]
        assert stranded == [], f"round {round_}: jobs left running after stop: {stranded}"
