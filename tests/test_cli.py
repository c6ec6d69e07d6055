"""The `pageq` command line, run as a real subprocess against the test database."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import pageq
import pageq.testing
from pageq.store.queries import migrations


def pageq_cli(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pageq", *args]
    env = {**env, "COLUMNS": "200"}  # wide enough that rich tables do not fold their cells
    return subprocess.run(command, env=env, input=stdin, capture_output=True, text=True, timeout=60)


def ok(env: dict[str, str], *args: str, stdin: str = "") -> str:
    """Run a command that must succeed and announce its database; returns its stdout."""
    done = pageq_cli(env, *args, stdin=stdin)
    assert done.returncode == 0, f"pageq {' '.join(args)} failed: {done.stderr}"
    announced = [line for line in done.stderr.splitlines() if line.startswith("database: ")]
    assert len(announced) == 1, done.stderr
    assert announced[0].endswith(f"schema {env['PAGEQ_SCHEMA']}")
    assert "(from PAGEQ_DSN)" in announced[0]
    return done.stdout


def ok_json(env: dict[str, str], *args: str) -> Any:
    return json.loads(ok(env, *args, "--json"))


def error(env: dict[str, str], *args: str, stdin: str = "") -> str:
    """Run a command that must fail with one line on stderr and no traceback; returns that line."""
    done = pageq_cli(env, *args, stdin=stdin)
    assert done.returncode != 0, done.stdout
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line and not line.startswith("database: ")]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: "), done.stderr
    return lines[0]


@pytest.fixture
def fresh(dsn: str, schema: str) -> Iterator[str]:
    """A schema nobody migrated yet, dropped after the test."""
    yield schema
    app = pageq.App(dsn, schema=schema)
    app.drop_schema()
    app.close()


def test_migrate_then_check(env: dict[str, str], fresh: str) -> None:
    names = ", ".join(f"{version:04d}_{name}" for version, name, _ in migrations())
    line = error(env, "migrate", "--check")
    assert line == f"error: pending migrations: {names}"
    assert pageq_cli(env, "migrate", "--check").returncode == 1

    assert ok(env, "migrate").strip() == f"applied: {names}"
    assert ok(env, "migrate", "--check").strip() == "schema is up to date"
    assert ok(env, "migrate").strip() == "schema is up to date"
    with psycopg.connect(env["PAGEQ_DSN"], autocommit=True) as conn:  # made from another pageq's queries
        conn.execute(f"UPDATE {env['PAGEQ_SCHEMA']}.sql_api SET digest = 'older'")
    assert "SQL API's query functions are out of date" in error(env, "migrate", "--check")
    assert ok(env, "migrate").strip() == "schema is up to date"
    assert ok(env, "migrate", "--check").strip() == "schema is up to date"


def test_enqueue_show_list_cancel_and_retry(app: pageq.App, env: dict[str, str]) -> None:
    created = ok_json(env, "enqueue", "mark", "--args", '{"n": 1}', "--app", "apps.ledger:app")
    assert set(created) == {"id"}
    job_id = created["id"]
    job = app.get_job(job_id)
    assert (job.task, job.queue, job.args, job.state) == ("mark", "ledger", {"n": 1}, pageq.JobState.QUEUED)

    shown = ok_json(env, "jobs", "show", str(job_id))
    assert (shown["id"], shown["task"], shown["state"], shown["args"]) == (job_id, "mark", "queued", {"n": 1})
    assert [j["id"] for j in ok_json(env, "jobs", "list")] == [job_id]
    queued = ok_json(env, "jobs", "list", "--state", "queued", "--queue", "ledger")
    assert [j["id"] for j in queued] == [job_id]
    assert ok_json(env, "jobs", "list", "--state", "dead") == []

    [stats] = ok_json(env, "status")
    assert stats["queue"] == "ledger"
    assert stats["counts"]["queued"] == 1 and stats["counts"]["succeeded"] == 0
    assert "ledger" in ok(env, "status")

    assert ok(env, "jobs", "cancel", str(job_id)).strip() == f"job {job_id} is cancelled"
    assert app.get_job(job_id).state == pageq.JobState.CANCELLED
    refused = error(env, "jobs", "cancel", str(job_id))
    assert refused == f"error: job {job_id} is cancelled and cannot be cancelled"
    assert ok(env, "jobs", "retry", str(job_id)).strip() == f"job {job_id} is queued"
    assert app.get_job(job_id).state == pageq.JobState.QUEUED
    assert f"job {job_id}" in ok(env, "jobs", "show", str(job_id))


def bury(app: pageq.App, count: int) -> list[int]:
    """Run ``count`` jobs that fail on their only attempt, so they end in the dead-letter queue."""
    if "explode" not in app.tasks:

        @app.task(queue="doomed", max_attempts=1)
        def explode(n: int) -> None:
            raise RuntimeError(f"boom {n}")

    ids = app.enqueue_many([app.get_task("explode").job(n=i) for i in range(count)])
    asyncio.run(pageq.testing.drain(app, ["doomed"], concurrency=4, poll_interval=0.05))
    assert {app.get_job(i).state for i in ids} == {pageq.JobState.DEAD}
    return ids


def test_dead_letter_queue_list_requeue_and_purge(app: pageq.App, env: dict[str, str]) -> None:
    ids = bury(app, 2)

    dead = ok_json(env, "dlq", "list")
    assert sorted(j["id"] for j in dead) == sorted(ids)
    assert all(j["state"] == "dead" and "RuntimeError: boom" in j["errors"][0]["error"] for j in dead)
    assert "dead jobs" in ok(env, "dlq", "list")

    assert ok(env, "dlq", "requeue", str(ids[0])).strip() == "requeued 1 job(s)"
    assert app.get_job(ids[0]).state == pageq.JobState.QUEUED
    assert ok(env, "dlq", "requeue").strip() == "requeued 1 job(s)"
    assert ok_json(env, "dlq", "list") == []

    again = bury(app, 1) + ids
    assert error(env, "dlq", "purge", stdin="n\n") == "error: not confirmed"
    assert len(ok_json(env, "dlq", "list")) == 3
    assert ok(env, "dlq", "purge", "--yes").strip() == "purged 3 job(s)"
    assert ok_json(env, "dlq", "list") == []
    with pytest.raises(pageq.JobNotFoundError):
        app.get_job(again[0])


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["enqueue", "mark", "--args", '{"n": 1', "--app", "apps.ledger:app"], "--args is not valid JSON"),
        (["enqueue", "mark", "--args", "[1, 2]", "--app", "apps.ledger:app"], "--args must be a JSON object"),
        (["enqueue", "mark", "--args", "{}"], "enqueue needs the app"),
        (["enqueue", "nope", "--app", "apps.ledger:app"], "unknown task 'nope'"),
        (["enqueue", "mark", "--args", '{"x": 1}', "--app", "apps.ledger:app"], "arguments do not fit"),
        (["enqueue", "mark", "--args", '{"n": 1}', "--app", "nope:app"], "nope"),
        (["enqueue", "mark", "--args", '{"n": 1}', "--app", "apps.ledger"], "module:attribute"),
        (["enqueue", "mark", "--args", '{"n": 1}', "--app", "apps.ledger:DSN"], "is not a pageq.App"),
        (["jobs", "show", "987654321"], "no job with id 987654321"),
        (["jobs", "cancel", "987654321"], "no job with id 987654321"),
        (["jobs", "retry", "987654321"], "no job with id 987654321"),
        (["jobs", "list", "--state", "bogus"], "unknown state 'bogus'"),
    ],
)
def test_errors_are_one_line(app: pageq.App, env: dict[str, str], args: list[str], expected: str) -> None:
    assert expected in error(env, *args)


def test_a_database_that_cannot_be_reached_is_one_line_error(env: dict[str, str]) -> None:
    env = {**env, "PAGEQ_DSN": "postgresql://postgres@127.0.0.1:1/x"}
    for args in (["status"], ["migrate", "--check"], ["jobs", "list", "--json"]):
        line = error(env, *args)
        assert line.startswith("error: cannot connect to the database:"), line


def test_an_unmigrated_schema_is_one_line_error(env: dict[str, str], fresh: str) -> None:
    assert "pageq migrate" in error(env, "status")


def test_embedded_database_commands(env: dict[str, str], tmp_path: Any) -> None:
    """`pageq db start|status|url|stop` manage the embedded server under PAGEQ_HOME, without a DSN."""
    local = {k: v for k, v in env.items() if k not in ("PAGEQ_DSN", "DATABASE_URL")}
    local["PAGEQ_HOME"] = str(tmp_path / "home")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return pageq_cli(local, "db", *args)

    try:
        assert run("status").returncode == 3
        assert "running" in run("start").stdout
        status = json.loads(run("status", "--json").stdout)
        assert status["running"] and status["pgdata"].startswith(str(tmp_path))
        assert run("url").stdout.strip() == status["url"]
        migrated = pageq_cli(local, "migrate")
        assert migrated.returncode == 0 and "embedded PostgreSQL in" in migrated.stderr
    finally:
        assert run("stop").stdout.strip() in ("stopped", "not running")
    assert run("status").returncode == 3
    assert run("stop").stdout.strip() == "not running"
