"""pageq.testing, the helpers for users' own tests: enqueue assertions, one job run inline, draining."""

from __future__ import annotations

import pytest

import pageq
from pageq.testing import (
    assert_enqueued,
    assert_not_enqueued,
    drain,
    enqueued,
    run_job,
    run_job_async,
)


def test_enqueue_assertions(app: pageq.App) -> None:
    @app.task(queue="emails")
    def send(to: str, subject: str = "hi") -> None: ...

    @app.task
    def other() -> None: ...

    first = send.enqueue(to="a@example.com")
    send.enqueue(to="b@example.com", subject="news")
    send.enqueue(to="a@example.com", subject="again")
    other.enqueue()

    assert assert_enqueued(app, send, to="a@example.com").id == first  # the oldest
    assert_enqueued(app, "send", to="a@example.com", count=2)
    assert_enqueued(app, send, queue="emails", subject="news")
    assert [job.task for job in enqueued(app)] == ["send", "send", "send", "other"]
    assert enqueued(app, send, queue="default") == []
    assert_not_enqueued(app, send, to="c@example.com")
    with pytest.raises(AssertionError, match=r"expected 3 job\(s\) of send .* found 2; waiting: #1 send"):
        assert_enqueued(app, send, to="a@example.com", count=3)
    with pytest.raises(AssertionError, match="expected no job of send"):
        assert_not_enqueued(app, send, subject="news")
    with pytest.raises(pageq.UnknownTaskError):
        assert_enqueued(app, "nope")


def test_run_job_runs_the_job_now_and_reports_its_outcome(app: pageq.App) -> None:
    @app.task(max_attempts=2)
    def divide(a: int, b: int) -> float:
        return a / b

    later = divide.enqueue(a=1, b=2, delay=3600)
    done = run_job(app, later, poll_interval=0.05)  # a scheduled job is made due
    assert (done.state, done.result) == (pageq.JobState.SUCCEEDED, 0.5)
    assert enqueued(app) == []

    failing = divide.enqueue(a=1, b=0)
    assert run_job(app, failing).state is pageq.JobState.RETRYING
    dead = run_job(app, failing)  # the retrying job again, now: its last attempt
    assert dead.state is pageq.JobState.DEAD and "ZeroDivisionError" in dead.errors[-1].error
    with pytest.raises(AssertionError, match="is dead, not waiting to run"):
        run_job(app, failing)


def test_run_job_refuses_a_blocked_job(app: pageq.App) -> None:
    @app.task
    def step() -> None: ...

    _, second = app.chain(step.job(), step.job())
    with pytest.raises(AssertionError, match="blocked"):
        run_job(app, second)


async def test_async_helpers(app: pageq.App) -> None:
    @app.task(queue="q")
    async def double(n: int) -> int:
        return 2 * n

    job_id = await double.enqueue_async(n=21)
    assert (await run_job_async(app, job_id)).result == 42
    for n in range(3):
        await double.enqueue_async(n=n)
    await drain(app, ["q"])
    assert enqueued(app) == []
    await app.aclose()
