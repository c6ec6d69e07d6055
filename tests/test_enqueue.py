"""The producer API: enqueue (sync and async), per-call options, `conn=` transactions, batches, validation."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

import pageq
import pageq.testing
from pageq.errors import InvalidOptionError, SerializationError, UnknownTaskError
from pageq.store import ops

WORKER = {"poll_interval": 0.05, "maintenance_interval": 0.1}


@dataclasses.dataclass
class Tasks:
    """An app with a few tasks that record what ran."""

    app: pageq.App
    add: pageq.Task
    greet: pageq.Task
    ran: list[tuple[str, Any]]


@pytest.fixture
def tasks(app: pageq.App) -> Tasks:
    ran: list[tuple[str, Any]] = []

    @app.task(queue="math", priority=1, max_attempts=3, timeout=10)
    def add(a: int, b: int = 0) -> int:
        ran.append(("add", (a, b)))
        return a + b

    @app.task(queue="greetings")
    async def greet(ctx: pageq.Context, name: str) -> str:
        ran.append(("greet", name))
        return f"hello {name}"

    return Tasks(app, add, greet, ran)


def count_rows(app: pageq.App) -> int:
    """Jobs in the schema, live and finished, counted on a connection of its own."""
    with psycopg.connect(app.database.dsn, autocommit=True) as conn:
        live, finished = f"{app.schema}.jobs", f"{app.schema}.finished_jobs"
        row = conn.execute(
            f"SELECT (SELECT count(*) FROM {live}) + (SELECT count(*) FROM {finished})"
        ).fetchone()
    assert row is not None
    return int(row[0])


def exists(app: pageq.App, job_id: int) -> bool:
    try:
        app.get_job(job_id)
    except pageq.JobNotFoundError:
        return False
    return True


# ----- the producer API
def test_enqueue_uses_task_defaults(tasks: Tasks) -> None:
    job_id = tasks.add.enqueue(a=1, b=2)
    job = tasks.app.get_job(job_id)
    assert (job.task, job.queue, job.args, job.state) == (
        "add",
        "math",
        {"a": 1, "b": 2},
        pageq.JobState.QUEUED,
    )
    assert (job.priority, job.max_attempts, job.timeout, job.attempts) == (1, 3, 10.0, 0)
    assert job.errors == [] and job.result is None and job.lease_token is None


async def test_enqueue_async_uses_task_defaults(tasks: Tasks) -> None:
    job_id = await tasks.greet.enqueue_async(name="ada")
    job = await tasks.app.get_job_async(job_id)
    assert (job.task, job.queue, job.args, job.state) == ("greet", "greetings", {"name": "ada"}, "queued")
    assert (job.priority, job.max_attempts, job.timeout) == (0, 5, None)
    await tasks.app.aclose()


@pytest.mark.parametrize("how", ["sync", "async", "by_name"])
async def test_per_call_options_land_in_the_row(tasks: Tasks, how: str) -> None:
    run_at = datetime.now(UTC) + timedelta(hours=1)
    options: dict[str, Any] = {
        "queue": "other",
        "priority": -7,
        "run_at": run_at,
        "max_attempts": 9,
        "timeout": 2.5,
    }
    if how == "sync":
        job_id = tasks.add.enqueue(a=5, **options)
    elif how == "async":
        job_id = await tasks.add.enqueue_async(a=5, **options)
        await tasks.app.aclose()
    else:
        job_id = tasks.app.enqueue("add", {"a": 5}, **options)
    job = tasks.app.get_job(job_id)
    assert (job.queue, job.priority, job.max_attempts, job.timeout) == ("other", -7, 9, 2.5)
    assert job.run_at == run_at
    assert job.state is pageq.JobState.SCHEDULED
    assert job.args == {"a": 5}


def test_delay_schedules_and_no_delay_queues(tasks: Tasks) -> None:
    before = datetime.now(UTC)
    delayed = tasks.app.get_job(tasks.add.enqueue(a=1, delay=30))
    immediate = tasks.app.get_job(tasks.add.enqueue(a=1))
    zero = tasks.app.get_job(tasks.add.enqueue(a=1, delay=0))
    past = tasks.app.get_job(tasks.add.enqueue(a=1, run_at=before - timedelta(minutes=5)))
    assert delayed.state is pageq.JobState.SCHEDULED
    assert delayed.run_at - delayed.created_at == timedelta(seconds=30)
    assert before + timedelta(seconds=30) <= delayed.run_at
    assert immediate.state is pageq.JobState.QUEUED and immediate.run_at == immediate.created_at
    assert zero.state is pageq.JobState.QUEUED
    assert past.state is pageq.JobState.QUEUED and past.run_at == before - timedelta(minutes=5)


async def test_enqueued_jobs_run_and_scheduled_ones_wait(tasks: Tasks) -> None:
    now_id = tasks.add.enqueue(a=2, b=3)
    later_id = tasks.add.enqueue(a=100, delay=3600)
    greet_id = await tasks.greet.enqueue_async(name="bob")
    await pageq.testing.drain(tasks.app, ["math", "greetings"], **WORKER)
    assert tasks.app.get_job(now_id).result == 5
    assert tasks.app.get_job(greet_id).result == "hello bob"
    assert tasks.app.get_job(later_id).state is pageq.JobState.SCHEDULED
    assert sorted(tasks.ran, key=str) == [("add", (2, 3)), ("greet", "bob")]
    await tasks.app.aclose()


# ----- conn=: the caller's transaction
@pytest.fixture
def caller_conn(app: pageq.App) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(app.database.dsn) as conn:
        yield conn


async def test_enqueue_in_a_rolled_back_transaction_never_exists(
    tasks: Tasks, caller_conn: psycopg.Connection[Any]
) -> None:
    job_id = tasks.add.enqueue(a=1, conn=caller_conn)
    by_name = tasks.app.enqueue("add", {"a": 2}, conn=caller_conn)
    many = tasks.app.enqueue_many([tasks.add.job(a=3), tasks.add.job(a=4)], conn=caller_conn)
    own = caller_conn.execute(f"SELECT count(*) FROM {tasks.app.schema}.jobs").fetchone()
    assert own == (4,)  # visible inside the caller's transaction
    assert count_rows(tasks.app) == 0  # and nowhere else
    caller_conn.rollback()
    for gone in (job_id, by_name, *many):
        assert not exists(tasks.app, gone)
    await pageq.testing.drain(tasks.app, ["math"], **WORKER)
    assert tasks.ran == []
    assert count_rows(tasks.app) == 0


@pytest.mark.parametrize("first", [True, False], ids=["copy-first", "copy-after-a-statement"])
def test_a_big_batch_in_a_rolled_back_transaction_never_exists(
    tasks: Tasks, caller_conn: psycopg.Connection[Any], first: bool
) -> None:
    """The COPY path (>= 200 jobs) joins the caller's transaction too, whether or not it is open yet."""
    if not first:
        caller_conn.execute("SELECT 1")
    ids = tasks.app.enqueue_many([tasks.add.job(a=n) for n in range(ops.COPY_THRESHOLD)], conn=caller_conn)
    assert count_rows(tasks.app) == 0
    caller_conn.rollback()
    assert count_rows(tasks.app) == 0 and not exists(tasks.app, ids[0])


async def test_enqueue_in_a_committed_transaction_exists_after_commit(
    tasks: Tasks, caller_conn: psycopg.Connection[Any]
) -> None:
    caller_conn.execute("SELECT 1")  # the transaction is open before the enqueue
    job_id = tasks.add.enqueue(a=20, b=22, conn=caller_conn)
    assert not exists(tasks.app, job_id)
    assert count_rows(tasks.app) == 0
    caller_conn.commit()
    assert tasks.app.get_job(job_id).state is pageq.JobState.QUEUED
    await pageq.testing.drain(tasks.app, ["math"], **WORKER)
    assert tasks.app.get_job(job_id).result == 42
    assert tasks.ran == [("add", (20, 22))]


async def test_enqueue_async_in_a_rolled_back_transaction_never_exists(tasks: Tasks) -> None:
    async with await psycopg.AsyncConnection.connect(tasks.app.database.dsn) as conn:
        job_id = await tasks.greet.enqueue_async(name="ghost", conn=conn)
        ids = await tasks.app.enqueue_many_async([tasks.greet.job(name="g2")], conn=conn)
        assert count_rows(tasks.app) == 0
        await conn.rollback()
    assert not exists(tasks.app, job_id) and not exists(tasks.app, ids[0])
    await pageq.testing.drain(tasks.app, ["greetings"], **WORKER)
    assert tasks.ran == []
    assert count_rows(tasks.app) == 0
    await tasks.app.aclose()


async def test_enqueue_async_in_a_committed_transaction_exists_after_commit(tasks: Tasks) -> None:
    async with await psycopg.AsyncConnection.connect(tasks.app.database.dsn) as conn:
        job_id = await tasks.greet.enqueue_async(name="real", conn=conn)
        assert not await _exists_async(tasks.app, job_id)
        await conn.commit()
        assert await _exists_async(tasks.app, job_id)
    await pageq.testing.drain(tasks.app, ["greetings"], **WORKER)
    assert tasks.app.get_job(job_id).result == "hello real"
    assert tasks.ran == [("greet", "real")]
    await tasks.app.aclose()


async def _exists_async(app: pageq.App, job_id: int) -> bool:
    try:
        await app.get_job_async(job_id)
    except pageq.JobNotFoundError:
        return False
    return True


# ----- batches
N = 10_000


def test_enqueue_many_inserts_all_with_ids_in_order(tasks: Tasks) -> None:
    specs = [tasks.add.job(a=i, priority=i % 7) for i in range(N)]
    ids = tasks.app.enqueue_many(specs)
    assert len(ids) == N
    assert ids == sorted(ids) and len(set(ids)) == N
    with psycopg.connect(tasks.app.database.dsn) as conn:
        rows = conn.execute(f"SELECT id, (args->>'a')::int, priority FROM {tasks.app.schema}.jobs").fetchall()
    stored = {row[0]: (row[1], row[2]) for row in rows}
    assert [stored[job_id] for job_id in ids] == [(i, i % 7) for i in range(N)]
    assert tasks.app.enqueue_many([]) == []


def hand_built(**fields: Any) -> pageq.JobSpec:
    """A `JobSpec` built by hand (not validated by `Task.job`), valid except for ``fields``."""
    values: dict[str, Any] = {"task": "add", "args": {"a": 1}, "queue": "math", "priority": 0}
    values.update(max_attempts=3, timeout=None, **fields)
    return pageq.JobSpec(**values)


@pytest.mark.parametrize(
    "bad",
    [
        {"args": {"a": object()}},
        {"args": {"a": math.nan}},
        {"args": {"a": "nul\x00byte"}},
        {"priority": 40_000},
    ],
    ids=["object", "nan", "nul", "priority"],
)
def test_enqueue_many_with_one_invalid_row_inserts_none(tasks: Tasks, bad: dict[str, Any]) -> None:
    specs = [tasks.add.job(a=i) for i in range(N)]
    with pytest.raises(pageq.PageqError):  # a bad JobSpec fails when built, a bad priority in the INSERT
        specs[N // 2] = hand_built(**bad)
        tasks.app.enqueue_many(specs)
    assert count_rows(tasks.app) == 0


async def test_enqueue_many_async_with_one_invalid_row_inserts_none(tasks: Tasks) -> None:
    specs = [tasks.add.job(a=i) for i in range(100)]
    with pytest.raises(pageq.PageqError):
        specs.append(hand_built(args={"a": {1, 2}}))
        await tasks.app.enqueue_many_async(specs)
    assert count_rows(tasks.app) == 0
    await tasks.app.aclose()


# ----- errors before writing
NAIVE = datetime(2030, 1, 1)
LATER = datetime.now(UTC) + timedelta(days=1)

INVALID: list[tuple[str, dict[str, Any], type[pageq.PageqError]]] = [
    ("unexpected argument", {"a": 1, "c": 3}, InvalidOptionError),
    ("missing argument", {"b": 1}, InvalidOptionError),
    ("object argument", {"a": object()}, SerializationError),
    ("nan argument", {"a": math.nan}, SerializationError),
    ("infinite argument", {"a": math.inf}, SerializationError),
    ("non-string key", {"a": {1: object()}}, SerializationError),
    ("bad queue name", {"a": 1, "queue": "no spaces"}, InvalidOptionError),
    ("empty queue name", {"a": 1, "queue": ""}, InvalidOptionError),
    ("priority too high", {"a": 1, "priority": 32_768}, InvalidOptionError),
    ("priority too low", {"a": 1, "priority": -32_769}, InvalidOptionError),
    ("priority not an int", {"a": 1, "priority": 1.5}, InvalidOptionError),
    ("negative delay", {"a": 1, "delay": -1}, InvalidOptionError),
    ("nan delay", {"a": 1, "delay": math.nan}, InvalidOptionError),
    ("delay and run_at", {"a": 1, "delay": 5, "run_at": LATER}, InvalidOptionError),
    ("naive run_at", {"a": 1, "run_at": NAIVE}, InvalidOptionError),
    ("run_at not a datetime", {"a": 1, "run_at": "2030-01-01"}, InvalidOptionError),
    ("zero max_attempts", {"a": 1, "max_attempts": 0}, InvalidOptionError),
    ("zero timeout", {"a": 1, "timeout": 0}, InvalidOptionError),
]


@pytest.mark.parametrize(("kwargs", "error"), [(k, e) for _, k, e in INVALID], ids=[n for n, _, _ in INVALID])
async def test_invalid_enqueue_raises_before_writing(
    tasks: Tasks, kwargs: dict[str, Any], error: type[pageq.PageqError]
) -> None:
    with pytest.raises(error):
        tasks.add.enqueue(**kwargs)
    with pytest.raises(error):
        await tasks.add.enqueue_async(**kwargs)
    with pytest.raises(error):
        tasks.add.job(**kwargs)
    assert issubclass(error, pageq.PageqError)
    assert count_rows(tasks.app) == 0


@pytest.mark.parametrize(
    "args",
    [{"a": 1, "conn": 2}, {"a": 1, "delay": 60}, {"a": 1, "queue": "elsewhere"}, {"a": object()}],
    ids=["conn", "delay", "queue", "object"],
)
def test_enqueue_by_name_rejects_args_that_do_not_fit(tasks: Tasks, args: dict[str, Any]) -> None:
    with pytest.raises(pageq.PageqError):
        tasks.app.enqueue("add", args)
    assert count_rows(tasks.app) == 0


def test_enqueue_unknown_task_raises(tasks: Tasks) -> None:
    with pytest.raises(UnknownTaskError, match="nope"):
        tasks.app.enqueue("nope", {})
    with pytest.raises(UnknownTaskError):
        tasks.app.get_task("nope")
    assert count_rows(tasks.app) == 0


# ----- registration
def test_duplicate_task_name_is_refused(app: pageq.App) -> None:
    @app.task(name="job")
    def first() -> None: ...

    with pytest.raises(ValueError, match="twice"):

        @app.task(name="job")
        def second() -> None: ...

    with pytest.raises(ValueError, match="twice"):

        @app.task(aliases=["job"])
        def third() -> None: ...

    assert app.get_task("job") is first


def test_alias_resolves_to_its_task(app: pageq.App) -> None:
    @app.task(name="new_name", aliases=["old_name"])
    def renamed(x: int) -> None: ...

    assert app.get_task("old_name") is renamed
    job = app.get_job(app.enqueue("old_name", {"x": 1}))
    assert job.task == "new_name"


@pytest.mark.parametrize("param", ["queue", "priority", "delay", "run_at", "max_attempts", "timeout", "conn"])
def test_parameter_named_like_an_option_is_refused(app: pageq.App, param: str) -> None:
    namespace: dict[str, Any] = {}
    exec(f"def handler({param}): ...", namespace)
    with pytest.raises(InvalidOptionError, match=param):
        app.task(namespace["handler"])
    assert "handler" not in app.tasks


def test_context_parameter_is_not_an_argument(app: pageq.App) -> None:
    @app.task
    def uses_ctx(ctx: pageq.Context, x: int) -> None: ...

    assert uses_ctx.wants_context
    assert uses_ctx.job(x=1).args == {"x": 1}
    with pytest.raises(InvalidOptionError):
        uses_ctx.job(ctx=1, x=1)


@pytest.mark.parametrize(
    "options",
    [{"queue": "bad queue"}, {"priority": 10**6}, {"max_attempts": 0}, {"timeout": -1}, {"name": "a b"}],
)
def test_invalid_task_defaults_are_refused(app: pageq.App, options: dict[str, Any]) -> None:
    with pytest.raises(InvalidOptionError):

        @app.task(**options)
        def handler() -> None: ...

    assert app.tasks == {}


def test_executor_async_needs_an_async_function(app: pageq.App) -> None:
    with pytest.raises(InvalidOptionError):

        @app.task(executor="async")
        def handler() -> None: ...
