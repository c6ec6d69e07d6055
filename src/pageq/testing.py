"""Helpers for testing code that uses pageq (docs/integrations/testing.md): assert what was enqueued, run a
job's worker in-process until it finished, or drain queues.

Example::

    place_order(order_id=7)                                  # the code under test enqueues
    job = pageq.testing.assert_enqueued(app, "send_receipt", order_id=7)
    done = pageq.testing.run_job(app, job.id)
    assert done.state is pageq.JobState.SUCCEEDED
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from pageq.app import App
from pageq.task import Task
from pageq.types import WAITING_STATES, Job, JobState
from pageq.worker import Worker

T = TypeVar("T")

SCAN = 10_000
"""Jobs `enqueued` looks at, newest first."""


def _idle(app: App, queues: Sequence[str]) -> bool:
    for stats in app.queue_stats():
        if stats.queue not in queues:
            continue
        if stats.counts[JobState.RUNNING] or stats.oldest_queued_age is not None:
            return False
    return True


def _name(app: App, task: Task | str | None) -> str | None:
    if task is None:
        return None
    return task.name if isinstance(task, Task) else app.get_task(task).name


def enqueued(
    app: App, task: Task | str | None = None, /, *, queue: str | None = None, **args: Any
) -> list[Job]:
    """The jobs waiting to run (scheduled, queued, retrying or blocked), oldest first, of ``task`` (a `Task`
    or its name) and ``queue`` when given, whose arguments include ``args`` (each equal; the arguments as
    enqueued: a parameter's default is not among them unless it was passed).

    Example::

        assert len(pageq.testing.enqueued(app, send_email)) == 3
    """
    jobs = app.list_jobs(sorted(WAITING_STATES), queue=queue, task=_name(app, task), limit=SCAN)
    return [job for job in reversed(jobs) if all(job.args.get(k, _MISSING) == v for k, v in args.items())]


def assert_enqueued(
    app: App, task: Task | str, /, *, queue: str | None = None, count: int | None = None, **args: Any
) -> Job:
    """Assert that a job of ``task`` with arguments including ``args`` waits to run (exactly ``count`` of
    them when given); returns the oldest. The message of the `AssertionError` lists what is enqueued.

    Example::

        job = pageq.testing.assert_enqueued(app, send_email, to="a@example.com")
    """
    found = enqueued(app, task, queue=queue, **args)
    if found and (count is None or len(found) == count):
        return found[0]
    name, where = _name(app, task), f" in queue {queue!r}" if queue else ""
    waiting = "; ".join(f"#{j.id} {j.task}({j.args}) in {j.queue}" for j in enqueued(app)[:20])
    wanted = f"{count} job(s)" if count is not None else "a job"
    raise AssertionError(
        f"expected {wanted} of {name}{where} with arguments {args}, found {len(found)}; "
        f"waiting: {waiting or 'none'}"
    )


def assert_not_enqueued(app: App, task: Task | str, /, *, queue: str | None = None, **args: Any) -> None:
    """Assert that no job of ``task`` with arguments including ``args`` waits to run."""
    found = enqueued(app, task, queue=queue, **args)
    if found:
        raise AssertionError(
            f"expected no job of {_name(app, task)} with arguments {args}, found {[j.id for j in found]}"
        )


async def drain(
    app: App, queues: Sequence[str] = ("default",), *, concurrency: int = 10, timeout: float = 60.0,
    **options: Any,
) -> Worker:  # fmt: skip
    """Run a worker until no job of ``queues`` is running or due, then stop it; returns the worker.

    Example::

        send_email.enqueue(to="a@example.com")
        await pageq.testing.drain(app, ["emails"])
    """
    worker = app.worker(queues, concurrency, **options)
    running = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(timeout):
            await worker.started.wait()
            confirmed = 0  # idle twice in a row: the statistics are two statements, a job may move between
            while confirmed < 2 and not running.done():
                await asyncio.sleep(0.02)
                busy = worker.active or worker.busy or worker.completer.backlog
                confirmed = 0 if busy or not await asyncio.to_thread(_idle, app, queues) else confirmed + 1
    finally:
        worker.stop()
        await running
    return worker


def drain_sync(
    app: App, queues: Sequence[str] = ("default",), *, concurrency: int = 10, timeout: float = 60.0,
    **options: Any,
) -> Worker:  # fmt: skip
    """`drain` for sync tests: runs its own event loop (and closes the App's async pool of that loop)."""
    return _in_own_loop(app, drain(app, queues, concurrency=concurrency, timeout=timeout, **options))


def _in_own_loop(app: App, work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` in an event loop of its own, then close the App's async pool of that loop (it ends)."""

    async def run() -> T:
        try:
            return await work
        finally:
            await app.aclose()

    return asyncio.run(run())


async def run_job_async(app: App, job_id: int, *, timeout: float = 60.0, **options: Any) -> Job:
    """Async twin of `run_job`."""
    job = await app.get_job_async(job_id)
    if job.state in (JobState.SCHEDULED, JobState.RETRYING):
        await asyncio.to_thread(app.retry, job_id)  # due now
    elif job.state is JobState.BLOCKED:
        raise AssertionError(f"job {job_id} waits for other jobs (blocked): run those first")
    elif job.state is not JobState.QUEUED:
        raise AssertionError(f"job {job_id} is {job.state.value}, not waiting to run")
    worker = app.worker([job.queue], 1, **options)
    running = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(timeout):
            while not running.done():
                await asyncio.sleep(0.02)
                job = await app.get_job_async(job_id)
                if job.state is not JobState.QUEUED and job.state is not JobState.RUNNING:
                    break
    finally:
        worker.stop()
        await running
    return await app.get_job_async(job_id)


def run_job(app: App, job_id: int, *, timeout: float = 60.0, **options: Any) -> Job:
    """Run the job ``job_id`` now, in this process, with a worker of its queue (concurrency 1) that stops
    once the job's attempt ended; returns the job as it is then (succeeded, dead, or retrying after a
    failure). A scheduled or retrying job is made due first. Jobs of the same queue that come before it
    run first; for a test, enqueue only what it needs. From async code: `run_job_async`.

    Example::

        done = pageq.testing.run_job(app, send_email.enqueue(to="a@example.com"))
        assert done.state is pageq.JobState.SUCCEEDED
    """
    return _in_own_loop(app, run_job_async(app, job_id, timeout=timeout, **options))


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING: Any = _Missing()

__all__ = [
    "assert_enqueued",
    "assert_not_enqueued",
    "drain",
    "drain_sync",
    "enqueued",
    "run_job",
    "run_job_async",
]
