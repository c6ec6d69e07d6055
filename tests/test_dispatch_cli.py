"""The dispatcher's command line: `pageq queues ...`, `pageq jobs cancel-all`, `pageq routes`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psycopg

import pageq
from test_cli import error, ok, ok_json, pageq_cli

ROUTED = """
import psycopg

import pageq

app = pageq.App()

@app.task(name="reports.daily", queue="reports")
def daily(tenant: str) -> None: ...

app.route("reports.*", args={"tenant": "big"}, queue="reports-big", priority=-5)
"""


def test_queue_controls_and_bulk_cancel(app: pageq.App, env: dict[str, str]) -> None:
    assert ok_json(env, "queues", "pause", "mail")[0]["paused"] is True
    ok(env, "queues", "limit", "mail", "3")
    ok(env, "queues", "rate", "mail", "6/min")
    ok(env, "queues", "weight", "mail", "4")
    assert ok_json(env, "queues", "list") == [
        {"name": "mail", "paused": True, "concurrency": 3, "rate_limit": 6, "rate_period": 60.0, "weight": 4}
    ]
    for args in (["resume", "mail"], ["limit", "mail", "none"], ["rate", "mail", "none"]):
        ok(env, "queues", *args)
    assert app.queue_controls() == [pageq.QueueControl("mail", weight=4)]
    assert "is not N/PERIOD" in error(env, "queues", "rate", "mail", "5/fortnight")
    assert "must be a non-negative integer" in error(env, "queues", "limit", "mail", "lots")

    @app.task(queue="mail")
    def send(n: int) -> None: ...

    mail = app.enqueue_many([send.job(n=n) for n in range(3)])
    other = send.enqueue(n=3, queue="other")
    assert ok(env, "jobs", "cancel-all", "--queue", "mail").strip() == "cancelled 3 job(s)"
    assert {app.get_job(i).state for i in mail} == {pageq.JobState.CANCELLED}
    assert app.get_job(other).state is pageq.JobState.QUEUED
    assert "only live jobs" in error(env, "jobs", "cancel-all", "--state", "succeeded")


def test_routes_are_listed_and_explained(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "routed.py").write_text(ROUTED)
    routed = {**env, "PYTHONPATH": f"{tmp_path}{os.pathsep}{env['PYTHONPATH']}"}
    listed = pageq_cli(routed, "routes", "--app", "routed:app", "--json")
    assert [(r["rule"], r["queue"], r["priority"]) for r in json.loads(listed.stdout)] == [
        (1, "reports-big", -5)
    ]
    big = pageq_cli(routed, "routes", "reports.daily", "--args", '{"tenant": "big"}', "--app", "routed:app")
    assert big.stdout.splitlines()[-1] == "reports.daily -> queue 'reports-big', priority -5 (rule 1)"
    small = pageq_cli(routed, "routes", "reports.daily", "--args", '{"tenant": "s"}', "--app", "routed:app")
    assert small.stdout.splitlines() == [
        "rule 1 (task ~ reports.* and tenant == 'big'): no: argument 'tenant' is not 'big'",
        "reports.daily -> queue 'reports', priority 0 (the task's own options)",
    ]
    assert "routes needs the app" in error(env, "routes")
    assert "--args must be a JSON object" in error(
        routed, "routes", "reports.daily", "--args", "[]", "--app", "routed:app"
    )


def test_routes_are_published_for_the_sql_api(app: pageq.App, env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "routed.py").write_text(ROUTED)
    routed = {**env, "PYTHONPATH": f"{tmp_path}{os.pathsep}{env['PYTHONPATH']}"}
    published = pageq_cli(routed, "routes", "--publish", "--app", "routed:app", "--json")
    assert json.loads(published.stdout) == {"tasks_written": 1, "rules_written": 1}
    with psycopg.connect(app.database.dsn, autocommit=True) as conn:
        made = conn.execute(
            f"""SELECT {app.schema}.enqueue('reports.daily', '{{"tenant": "big"}}')"""
        ).fetchone()
    assert made is not None
    job = app.get_job(made[0])
    assert (job.task, job.queue, job.priority) == ("reports.daily", "reports-big", -5)
