"""The dispatcher's acceptance tests: queue controls, unique jobs, groups, cron, workflows, routing."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pageq
import test_processes
from apps.ledger import nap
from pageq import JobState
from pageq.periodic import fire_due
from test_processes import Workers, wait_for

workers = test_processes.workers  # the fixture that starts `pageq worker` processes

FAST = {"poll_interval": 0.2, "maintenance_interval": 0.2, "lease": 10.0, "grace": 5.0}


def sql(app: pageq.App, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(app.database.dsn, autocommit=True) as conn:
        return conn.execute(query.replace("{s}", app.schema), params).fetchall()


async def run_until(
    app: pageq.App, done: Any, queues: list[str], timeout: float = 60, **options: Any
) -> None:
    """Run ``workers`` in-process workers (default 1) until ``done()`` (called in a thread) is true."""
    count = options.pop("workers", 1)
    concurrency = options.pop("concurrency", 10)
    started = [app.worker(queues, concurrency, **{**FAST, **options}) for _ in range(count)]
    tasks = [asyncio.create_task(w.run()) for w in started]
    try:
        async with asyncio.timeout(timeout):
            while not await asyncio.to_thread(done):
                for task in tasks:
                    if task.done():
                        task.result()
                await asyncio.sleep(0.05)
    finally:
        for worker in started:
            worker.stop()
        await asyncio.gather(*tasks)


def finished(app: pageq.App, n: int) -> Any:
    return lambda: sql(app, "SELECT count(*) FROM {s}.finished_jobs")[0][0] >= n


# ----- queue controls
def test_global_concurrency_limit_holds_across_four_worker_processes(
    app: pageq.App, workers: Workers, tmp_path: Path
) -> None:
    app.limit_queue("limited", 3)
    for _ in range(4):
        workers.start("limited", "--concurrency", "4", "--poll-interval", "0.2")
    # every process up before the jobs arrive (on a loaded machine, the first one started would take them all)
    deadline = time.monotonic() + 60
    while len(app.stats.workers()) < 4 and time.monotonic() < deadline:
        app.stats.invalidate()
        time.sleep(0.1)
    app.enqueue_many([nap.job(seconds=0.2) for _ in range(30)])
    samples: list[int] = []
    with psycopg.connect(app.database.dsn, autocommit=True) as conn:
        query = f"SELECT count(*) FROM {app.schema}.jobs WHERE queue = 'limited' AND state = 'running'"
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            samples.append(conn.execute(query).fetchone()[0])
            left = conn.execute(f"SELECT count(*) FROM {app.schema}.jobs").fetchone()[0]
            if not left:
                break
    done = sql(
        app, "SELECT count(*), count(DISTINCT worker) FROM {s}.finished_jobs WHERE state = 'succeeded'"
    )
    assert done[0][0] == 30 and done[0][1] > 1, done
    print(f"global concurrency 3: max {max(samples)} running over {len(samples)} samples")
    assert max(samples) == 3, f"max running {max(samples)} over {len(samples)} samples"
    assert len(samples) > 100


@pytest.mark.timeout(120)
async def test_rate_limit_of_fifty_per_second_over_ten_seconds(app: pageq.App) -> None:
    @app.task(queue="rated")
    def ping() -> None: ...

    app.rate_limit_queue("rated", 50, per=1.0)
    app.enqueue_many([ping.job() for _ in range(700)])
    with contextlib.suppress(TimeoutError):  # 700 jobs need 14 s at 50/s: the test measures ten seconds
        await run_until(app, finished(app, 700), ["rated"], timeout=12, workers=2, concurrency=40)
    starts = [r[0] for r in sql(app, "SELECT started_at FROM {s}.finished_jobs ORDER BY started_at")]
    first = starts[0] + timedelta(seconds=0.5)  # let the workers start
    in_ten = [s for s in starts if first <= s < first + timedelta(seconds=10)]
    print(f"rate limit 50/s: {len(in_ten)} starts in 10 s")
    assert 450 <= len(in_ten) <= 550, f"{len(in_ten)} starts in 10 s"


async def test_pause_and_resume_take_effect_within_a_second(app: pageq.App) -> None:
    @app.task(queue="p")
    def job() -> None: ...

    app.pause_queue("p")
    job.enqueue()
    worker = app.worker(["p"], 2, **FAST)
    task = asyncio.create_task(worker.run())
    try:
        await worker.started.wait()
        await asyncio.sleep(1.2)
        assert sql(app, "SELECT state FROM {s}.jobs") == [("queued",)]
        await asyncio.to_thread(app.resume_queue, "p")
        resumed = time.monotonic()
        await asyncio.to_thread(wait_for, finished(app, 1), 10, "the job to run once resumed")
        assert time.monotonic() - resumed < 5  # told at once by NOTIFY ('!queues'), else within 1 s
    finally:
        worker.stop()
        await task


# ----- unique jobs
def test_sixteen_concurrent_enqueues_of_one_key_make_one_job(dsn: str, schema: str, app: pageq.App) -> None:
    producers = [pageq.App(dsn, schema=schema, pool_size=2) for _ in range(16)]
    for producer in producers:
        producer.task(name="once")(lambda n: None)
    results: dict[str, list[int]] = defaultdict(list)
    errors: list[BaseException] = []
    for key in ("k1", "k2", "k3"):
        barrier = threading.Barrier(16)

        def produce(producer: pageq.App, key: str = key, barrier: threading.Barrier = barrier) -> None:
            try:
                producer.queue_controls()  # connect before the barrier
                barrier.wait(10)
                results[key].append(producer.enqueue("once", {"n": 1}, unique=key))
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=produce, args=(p,)) for p in producers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    for producer in producers:
        producer.close()
    assert not errors
    assert all(len(set(ids)) == 1 and len(ids) == 16 for ids in results.values())
    assert sql(app, "SELECT count(*) FROM {s}.jobs")[0][0] == 3


def test_unique_scope_window_and_conflict_policies(app: pageq.App) -> None:
    clock = pageq.FrozenClock(datetime(2030, 1, 1, tzinfo=UTC))
    app.clock = clock

    @app.task
    def sync(user: int) -> None: ...

    first = sync.enqueue(user=1, unique="u1")
    assert sync.enqueue(user=1, unique="u1") == first
    with pytest.raises(pageq.DuplicateJobError) as raised:
        sync.enqueue(user=1, unique=pageq.Unique("u1", on_conflict="raise"))
    assert raised.value.job_id == first
    replaced = sync.enqueue(user=2, unique=pageq.Unique("u1", on_conflict="replace"))
    assert replaced != first and app.get_job(first).state is JobState.CANCELLED
    app.cancel(replaced)  # the default scope is the live states: a cancelled holder frees the key
    again = sync.enqueue(user=3, unique="u1")
    assert again not in (first, replaced)
    # scope: every state, with a window of 60 s (at most one job per minute)
    throttled = pageq.Unique("t", states=frozenset(JobState), window=60)
    one = sync.enqueue(user=1, unique=throttled)
    app.cancel(one)
    assert sync.enqueue(user=1, unique=throttled) == one
    clock.advance(61)
    assert sync.enqueue(user=1, unique=throttled) != one
    with pytest.raises(pageq.InvalidOptionError):
        pageq.Unique("x", on_conflict="explode")  # type: ignore[arg-type]


# ----- ordered groups
async def test_thousand_jobs_in_ten_groups_run_in_order_one_at_a_time(app: pageq.App) -> None:
    events: list[tuple[str, int, int]] = []

    @app.task(queue="ordered")
    async def step(group: int, n: int) -> None:
        events.append(("start", group, n))
        await asyncio.sleep(0)
        events.append(("end", group, n))

    specs = [step.job(group=n % 10, n=n // 10, group_key=f"g{n % 10}") for n in range(1000)]
    app.enqueue_many(specs)
    await run_until(app, finished(app, 1000), ["ordered"], timeout=120, concurrency=20)
    by_group: dict[int, list[tuple[str, int]]] = defaultdict(list)
    for kind, group, n in events:
        by_group[group].append((kind, n))
    for group in range(10):
        expected = [(kind, n) for n in range(100) for kind in ("start", "end")]
        assert by_group[group] == expected, f"group {group} ran out of order"
    overlapping = max(sum(1 for _ in g) for g in by_group.values())
    assert overlapping == 200
    assert sql(app, "SELECT count(*) FROM {s}.finished_jobs WHERE state = 'succeeded'")[0][0] == 1000


# ----- cancellation
async def test_cancel_by_filter_and_a_running_sync_handler_sees_ctx_cancelled(app: pageq.App) -> None:
    seen = threading.Event()
    go = threading.Event()

    @app.task(queue="c")
    def long(ctx: pageq.Context) -> str:
        go.set()
        deadline = time.monotonic() + 20
        while not ctx.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        if ctx.cancelled:
            seen.set()
        return "stopped"

    running_id = long.enqueue()
    worker = app.worker(["c"], 1, **FAST)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.to_thread(go.wait, 10)
        waiting = app.enqueue_many([long.job() for _ in range(3)])
        assert sorted(await asyncio.to_thread(app.cancel_jobs, queue="c")) == sorted([running_id, *waiting])
        assert await asyncio.to_thread(seen.wait, 5)
    finally:
        worker.stop()
        await task
    states = {job.state for job in app.list_jobs(queue="c")}
    assert states == {JobState.CANCELLED}


# ----- periodic jobs
def _fire(apps: list[pageq.App], now: datetime) -> None:
    async def one(app: pageq.App) -> int:
        try:
            return await fire_due(app, app.store, now)
        finally:
            await app.aclose()

    threads = [threading.Thread(target=lambda a=a: asyncio.run(one(a))) for a in apps]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)


def test_cron_under_three_competing_schedulers_fires_once_per_tick(
    dsn: str, schema: str, app: pageq.App
) -> None:
    t0 = datetime(2030, 1, 1, 9, 0, 30, tzinfo=UTC)
    schedulers = [pageq.App(dsn, schema=schema) for _ in range(3)]
    for scheduler in schedulers:
        scheduler.periodic("*/5 * * * *", tz="Europe/Paris", name="report")(lambda: None)
    try:
        for minute in range(61):  # one hour, checked every minute by all three at once
            _fire(schedulers, t0 + timedelta(minutes=minute))
    finally:
        for scheduler in schedulers:
            scheduler.close()
    runs = sorted(r[0] for r in sql(app, "SELECT run_at FROM {s}.jobs"))
    assert runs == [datetime(2030, 1, 1, 9, 5, tzinfo=UTC) + timedelta(minutes=5 * i) for i in range(12)]


@pytest.mark.parametrize(("missed", "expected"), [("latest", 1), ("all", 3), ("skip", 0)])
def test_missed_ticks_after_downtime(app: pageq.App, missed: str, expected: int) -> None:
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    app.periodic(every=600, missed=missed, name="m")(lambda: None)  # type: ignore[arg-type]
    _fire([app], t0 + timedelta(seconds=1))  # first sight: nothing fires
    _fire([app], t0 + timedelta(minutes=32))  # ticks at 10, 20 and 30 min were missed (grace 60 s)
    assert sql(app, "SELECT count(*) FROM {s}.jobs")[0][0] == expected
    _fire([app], t0 + timedelta(minutes=40, seconds=5))  # back on time: the next tick fires
    assert sql(app, "SELECT count(*) FROM {s}.jobs")[0][0] == expected + 1


def test_periodic_rejects_bad_schedules(app: pageq.App) -> None:
    for bad in ({"cron": "61 * * * *"}, {"cron": "* * * * *", "every": 5}, {"every": 0}, {"tz": "Mars/Base"}):
        options = {"cron": None, **bad}
        if options["cron"] is None and "every" not in options:
            options["every"] = 60
        with pytest.raises(pageq.InvalidOptionError):
            app.periodic(options.pop("cron"), name="bad", **options)(lambda: None)  # type: ignore[arg-type]


# ----- workflows
async def test_diamond_runs_in_order_and_group_callback_gets_every_result(app: pageq.App) -> None:
    order: list[str] = []
    received: list[Any] = []

    @app.task(queue="w")
    def node(name: str) -> str:
        order.append(name)
        return name

    @app.task(queue="w")
    def square(n: int) -> int:
        return n * n

    @app.task(queue="w")
    async def collect(ctx: pageq.Context) -> None:
        received.extend(r.result for r in await ctx.parent_results_async())

    a = node.enqueue(name="a")
    b = node.enqueue(name="b", after=[a])
    c = node.enqueue(name="c", after=[a])
    d = node.enqueue(name="d", after=[c, b])
    members = app.group([square.job(n=n) for n in range(5)], then=collect.job())
    await run_until(app, finished(app, 4 + 6), ["w"], concurrency=8)
    assert order[0] == "a" and order[-1] == "d" and sorted(order[1:3]) == ["b", "c"]
    assert received == [0, 1, 4, 9, 16]
    jobs = {i: app.get_job(i) for i in (a, b, c, d, *members)}
    assert {job.state for job in jobs.values()} == {JobState.SUCCEEDED}

    def started_after(child: int, *parents: int) -> bool:  # each started once its parents had finished
        start = jobs[child].started_at
        return start is not None and all(start >= (jobs[p].finished_at or start) for p in parents)

    assert started_after(b, a) and started_after(c, a) and started_after(d, b, c)
    assert started_after(members[-1], *members[:-1])


async def test_children_of_parents_finished_by_two_workers_at_once_all_run(app: pageq.App) -> None:
    @app.task(queue="w")
    async def leaf(n: int) -> int:
        await asyncio.sleep(0.01)
        return n

    parents = app.enqueue_many([leaf.job(n=n) for n in range(100)])
    children = app.enqueue_many([leaf.job(n=-1, after=parents[i : i + 2]) for i in range(0, 100, 2)])
    await run_until(app, finished(app, 150), ["w"], workers=2, concurrency=10)  # no child left blocked
    assert {app.get_job(i).state for i in children} == {JobState.SUCCEEDED}


async def test_chain_and_a_dead_parent_cancels_or_runs_its_dependents(app: pageq.App) -> None:
    @app.task(queue="w", max_attempts=1)
    def fail() -> None:
        raise RuntimeError("boom")

    @app.task(queue="w")
    def ok() -> None: ...

    chain = app.chain(fail.job(), ok.job(), ok.job())
    anyway = ok.enqueue(after=[chain[0]], on_parent_failure="run")
    await run_until(app, finished(app, 4), ["w"])
    assert [app.get_job(i).state for i in chain] == [JobState.DEAD, JobState.CANCELLED, JobState.CANCELLED]
    assert app.get_job(anyway).state is JobState.SUCCEEDED
    with pytest.raises(pageq.JobNotFoundError):
        ok.enqueue(after=[10**9])


# ----- routing
def test_routes_pick_queue_and_priority_in_order(app: pageq.App, tmp_path: Path) -> None:
    @app.task(name="reports.daily", queue="reports")
    def daily(tenant: str) -> None: ...

    app.route("reports.*", args={"tenant": "big"}, queue="reports-big", priority=-5)
    app.route("reports.*", when=lambda args: args["tenant"].startswith("vip"), priority=9)
    routes = tmp_path / "routes.toml"
    routes.write_text('[[route]]\ntask = "*"\nqueue = "fallback"\n')
    app.router.load(routes)
    jobs = [app.get_job(daily.enqueue(tenant=t)) for t in ("big", "vip-1", "small")]
    assert [(j.queue, j.priority) for j in jobs] == [("reports-big", -5), ("reports", 9), ("fallback", 0)]
    assert app.get_job(daily.enqueue(tenant="big", queue="mine")).queue == "mine"  # explicit options win
    decision = app.explain_route("reports.daily", {"tenant": "small"})
    assert (decision.queue, decision.rule) == ("fallback", 2)
    assert decision.trace[0][1] == "argument 'tenant' is not 'big'"
    routes.write_text('[[route]]\ntask = "*"\nqueue = "bad name!"\n')
    with pytest.raises(pageq.ConfigError):
        app.router.load(routes)


def test_a_claimer_with_an_older_clock_does_not_reopen_a_past_rate_window(app: pageq.App) -> None:
    """Claimers take `now` before they queue for the queue's lock: one whose `now` predates the window that
    another opened counts in that window instead of moving it back (which reset the count: extra starts)."""
    from pageq.store import dispatch

    @app.task(queue="rated")
    def ping() -> None: ...

    app.rate_limit_queue("rated", 5, per=1.0)
    app.enqueue_many([ping.job() for _ in range(20)])
    later = datetime.now(UTC).replace(microsecond=500_000) + timedelta(seconds=5)
    earlier = later - timedelta(seconds=1)  # the previous one-second window
    taken = []
    for now in (later, earlier, later):
        with app.store.transaction() as conn:
            app.store.run(dispatch.queues_lock(["rated"]), conn)
            op = dispatch.claim_controlled(["rated"], 10, now, 30.0, "w")
            taken.append(len(app.store.run(op, conn)))
    assert taken == [5, 0, 0]
