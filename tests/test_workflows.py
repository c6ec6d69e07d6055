"""Follow-up jobs (on_complete= / on_success= / on_failure=), and the dispatcher's sweeps at a few thousand
jobs: dependents, group callbacks and ordered groups settle correctly, page by page."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

import pageq
from pageq import JobState
from pageq.periodic import fire_due
from pageq.store import ops
from pageq.worker import sweeps
from test_dispatch import finished, run_until, sql


def reports(app: pageq.App) -> dict[str, pageq.Job]:
    """The follow-up jobs of task `report`, by their tag."""
    return {job.args["tag"]: job for job in app.list_jobs(task="report", limit=100)}


# ----- follow-ups
async def test_follow_ups_run_by_outcome_and_read_their_parent(app: pageq.App) -> None:
    seen: dict[str, list[tuple[int, JobState, Any, str | None]]] = {}

    @app.task(queue="f")
    def ok(n: int) -> int:
        return n * 10

    @app.task(queue="f", max_attempts=1)
    def fail() -> None:
        raise RuntimeError("boom")

    @app.task(queue="f")
    async def report(ctx: pageq.Context, tag: str) -> None:
        seen[tag] = [(p.job_id, p.state, p.result, p.error) for p in await ctx.parent_results_async()]

    def follow(name: str) -> dict[str, pageq.JobSpec]:
        return {
            "on_complete": report.job(tag=f"{name}:complete"),
            "on_success": report.job(tag=f"{name}:success"),
            "on_failure": report.job(tag=f"{name}:failure"),
        }

    good = ok.enqueue(n=4, **follow("good"))
    bad = fail.enqueue(**follow("bad"))
    dropped = await ok.enqueue_async(n=1, delay=3600, **follow("dropped"))
    nested = app.enqueue("ok", {"n": 5}, on_success=ok.job(n=6, on_success=[report.job(tag="nested")]))
    assert {job.state for job in reports(app).values()} == {JobState.BLOCKED}
    app.cancel(dropped)  # a cancelled job "failed": its on_failure follow-up runs
    await run_until(app, finished(app, 5 + 10), ["f"], concurrency=8)

    assert seen.pop("good:complete") == seen.pop("good:success") == [(good, JobState.SUCCEEDED, 40, None)]
    assert (
        seen.pop("bad:complete")
        == seen.pop("bad:failure")
        == [(bad, JobState.DEAD, None, "RuntimeError: boom")]
    )
    assert (
        seen.pop("dropped:complete")
        == seen.pop("dropped:failure")
        == [(dropped, JobState.CANCELLED, None, None)]
    )
    ((child, state, result, error),) = seen.pop("nested")
    assert (state, result, error) == (JobState.SUCCEEDED, 60, None)
    assert app.get_job(child).task == "ok" and child > nested
    assert not seen
    skipped = {tag: job for tag, job in reports(app).items() if job.state is not JobState.SUCCEEDED}
    assert sorted(skipped) == ["bad:success", "dropped:success", "good:failure"]
    assert skipped["good:failure"].state is JobState.CANCELLED
    assert skipped["good:failure"].errors[-1].error.startswith("ParentSucceeded")
    assert skipped["bad:success"].errors[-1].error.startswith("ParentFailed")


def test_follow_ups_are_enqueued_with_their_job_or_not_at_all(app: pageq.App) -> None:
    @app.task
    def ok(n: int) -> int:
        return n

    @app.task
    def report(tag: str) -> None: ...

    @app.task
    def tidy() -> None: ...

    first = ok.enqueue(n=1, unique="u", on_complete=report.job(tag="first"))
    assert ok.enqueue(n=2, unique="u", on_complete=report.job(tag="ignored")) == first  # no follow-up either
    assert list(reports(app)) == ["first"]
    assert sql(app, "SELECT parent_id, on_failure FROM {s}.job_deps") == [(first, "run")]
    with pytest.raises(pageq.JobNotFoundError):  # a follow-up that cannot be enqueued: its job is not either
        ok.enqueue(n=3, on_success=report.job(tag="orphan", after=[10**9]))
    with psycopg.connect(app.database.dsn) as conn:  # conn=: the caller's transaction decides
        ok.enqueue(n=4, on_failure=report.job(tag="rolled back"), conn=conn)
        conn.rollback()
    assert list(reports(app)) == ["first"]
    assert [job.args["n"] for job in app.list_jobs(task="ok")] == [1]
    for bad in ("report", [report.job(tag="x"), "y"]):
        with pytest.raises(pageq.InvalidOptionError, match="on_complete= takes a task or a job"):
            ok.job(n=5, on_complete=bad)  # type: ignore[arg-type]
    with pytest.raises(pageq.InvalidOptionError, match="arguments do not fit task 'report'"):
        ok.job(n=5, on_failure=report)  # a task is its job without arguments
    (followup,) = ok.job(n=5, on_success=[tidy]).followups
    assert followup == ("cancel", tidy.job())
    with pytest.raises(pageq.InvalidOptionError, match="clash with enqueue options"):
        app.task(name="clash")(lambda on_failure: None)


# ----- the sweeps at a few thousand jobs
async def test_thousands_of_dependents_callbacks_and_groups_settle(
    app: pageq.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    """1,500 dependents of one job, a callback of 1,500 jobs and 50 ordered groups of 20 settle through the
    completer; then 1,000 jobs and 200 group heads finished with nobody settling them are found by the
    leader's sweep, 100 parents and 100 groups a page."""
    monkeypatch.setattr(sweeps, "PAGE", 100)
    gathered: list[int] = []
    order: dict[str, list[int]] = {}

    @app.task(queue="s")
    def leaf(n: int, group: str | None = None) -> int:
        if group is not None:
            order.setdefault(group, []).append(n)
        return n

    @app.task(queue="s")
    def gather(ctx: pageq.Context) -> None:
        gathered.extend(p.result for p in ctx.parent_results())

    root = leaf.enqueue(n=-1)
    fan_out = app.enqueue_many([leaf.job(n=i, after=[root]) for i in range(1500)])
    members = app.group([leaf.job(n=i) for i in range(1500)], then=gather.job())
    app.enqueue_many([leaf.job(n=i, group=f"g{i % 50}", group_key=f"g{i % 50}") for i in range(1000)])
    await run_until(app, finished(app, 4002), ["s"], timeout=120, workers=2, concurrency=50)
    assert gathered == list(range(1500))
    assert order == {f"g{g}": list(range(g, 1000, 50)) for g in range(50)}
    ends = (root, fan_out[0], fan_out[-1], members[-1])
    assert {app.get_job(i).state for i in ends} == {JobState.SUCCEEDED}

    # finished without settling (what the sweep is the safety net for): 1,000 parents, 200 group heads
    parents = app.enqueue_many([leaf.job(n=i, priority=1) for i in range(1000)])
    children = app.enqueue_many([leaf.job(n=i, after=[p]) for i, p in enumerate(parents)])
    heads = app.enqueue_many([leaf.job(n=i, group_key=f"h{i}", priority=1) for i in range(200)])
    nexts = app.enqueue_many([leaf.job(n=i, group_key=f"h{i}") for i in range(200)])
    now = app.clock.now()
    claimed = app.store.run(ops.claim(["s"], 1200, now, 30.0, "gone"))
    assert sorted(job.id for job in claimed) == sorted(parents + heads)
    leases = [ops.Lease(job.id, uuid.UUID(job.lease_token or "")) for job in claimed]
    app.store.run(ops.complete(leases, [None] * 1200, now))
    assert {state for (state,) in sql(app, "SELECT DISTINCT state FROM {s}.jobs")} == {"blocked"}
    await run_until(app, finished(app, 4002 + 2400), ["s"], timeout=120, concurrency=50)
    assert {app.get_job(i).state for i in (children[0], children[-1], nexts[0], nexts[-1])} == {
        JobState.SUCCEEDED
    }


async def test_cleanup_of_thousands_of_unique_keys_goes_page_by_page(app: pageq.App) -> None:
    @app.task
    def once(n: int) -> None: ...

    app.enqueue_many([once.job(n=i, unique=pageq.Unique(f"w{i}", window=60)) for i in range(2000)])
    held = app.enqueue_many([once.job(n=i, unique=f"k{i}") for i in range(3000)])
    sql(app, "DELETE FROM {s}.jobs WHERE id = ANY(%s) RETURNING id", held[:2500])  # as if pruned from history
    cleaner = sweeps.Sweeps(app.store, prune_page=400)
    later = app.clock.now() + timedelta(seconds=61)
    assert await cleaner.prune(later, pages=3) == 2000 + 3 * 400  # every expired key, 3 pages of orphans
    assert await cleaner.prune(later) == 2500 - 3 * 400  # the other orphans, up to the end of the table
    assert sql(app, "SELECT count(*) FROM {s}.unique_keys") == [(500,)]
    await app.aclose()


# ----- the periodic scheduler between ticks
def test_schedulers_do_not_touch_the_database_between_ticks(app: pageq.App) -> None:
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    app.periodic(every=600, name="slow")(lambda: None)

    def fire(now: datetime) -> int:
        async def go() -> int:
            try:
                return await fire_due(app, app.store, now)
            finally:
                await app.aclose()

        return asyncio.run(go())

    def version() -> list[tuple[Any, ...]]:
        return sql(app, "SELECT xmin::text, last_tick FROM {s}.periodic")

    assert fire(t0 + timedelta(seconds=1)) == 0  # first sight: the row is created
    before = version()
    for second in range(2, 600, 37):  # no tick due: the row is not even locked
        assert fire(t0 + timedelta(seconds=second)) == 0
    assert version() == before
    assert fire(t0 + timedelta(seconds=600)) == 1
    assert version() != before and version()[0][1] == t0 + timedelta(seconds=600)
