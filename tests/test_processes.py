"""Acceptance tests with real worker processes: exactly-once under load, SIGKILL rescue, SIGTERM drain."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest

import pageq
from apps.ledger import mark, sleepy, stall_once

LEASE = ["--lease", "2", "--heartbeat", "0.5", "--poll-interval", "0.2", "--maintenance-interval", "0.3"]


def wait_for(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def ours(schema: str) -> list[psutil.Process]:
    """Live processes started for this test: they carry its unique schema in their environment."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and alive(proc) and proc.environ().get("PAGEQ_SCHEMA") == schema:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


class Workers:
    """Starts `pageq worker` processes for one test and kills whatever is left of them afterwards."""

    def __init__(self, env: dict[str, str], logs: Path, schema: str) -> None:
        self.env = env
        self.logs = logs
        self.schema = schema
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, queues: str, *options: str) -> subprocess.Popen[bytes]:
        log = self.logs / f"worker-{len(self.started)}.log"
        command = [sys.executable, "-m", "pageq", "worker", "apps.ledger:app", "--queues", queues, *options]
        with log.open("wb") as sink:
            proc = subprocess.Popen(command, env=self.env, stdout=sink, stderr=subprocess.STDOUT)
        self.started.append((proc, log))
        return proc

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        path = next(log for p, log in self.started if p is proc)
        return path.read_text(errors="replace")

    def exit_code(self, proc: subprocess.Popen[bytes], timeout: float) -> int:
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"worker {proc.pid} still runs after {timeout:g} s; log:\n{self.log(proc)[-3000:]}")

    def kill_all(self) -> None:
        for proc, _ in self.started:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for leftover in ours(self.schema):
            leftover.kill()


@pytest.fixture
def workers(env: dict[str, str], app: pageq.App, schema: str, tmp_path: Path) -> Iterator[Workers]:
    with psycopg.connect(env["PAGEQ_DSN"], autocommit=True) as conn:
        conn.execute(
            f"CREATE TABLE {schema}.ledger (job_id bigint, pid int, note text,"
            " at timestamptz default clock_timestamp())"
        )
    started = Workers(env, tmp_path, schema)
    try:
        yield started
    finally:
        started.kill_all()


def sql(app: pageq.App, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(app.database.dsn, autocommit=True) as conn:
        return conn.execute(query.format(schema=app.schema), params).fetchall()


def notes(app: pageq.App, job_id: int) -> list[str]:
    return [n for (n,) in sql(app, "SELECT note FROM {schema}.ledger WHERE job_id = %s ORDER BY at", job_id)]


def started(app: pageq.App, ids: list[int], note: str = "start") -> bool:
    return all(note in notes(app, job_id) for job_id in ids)


def count(app: pageq.App, state: pageq.JobState) -> int:
    return sum(stats.counts[state] for stats in app.queue_stats())


def test_ten_thousand_jobs_on_four_processes_run_exactly_once(app: pageq.App, workers: Workers) -> None:
    total = 10_000
    ids = app.enqueue_many([mark.job(n=i) for i in range(total)])
    supervisor = workers.start("ledger", "--concurrency", "10", "--processes", "4", *LEASE, "--grace", "5")

    def all_done() -> bool:
        assert supervisor.poll() is None, workers.log(supervisor)[-3000:]
        return count(app, pageq.JobState.SUCCEEDED) == total

    wait_for(all_done, 120, "10,000 jobs to succeed", every=0.25)

    assert sql(app, "SELECT job_id FROM {schema}.ledger GROUP BY job_id HAVING count(*) <> 1") == []
    rows = sql(app, "SELECT count(*), count(DISTINCT job_id), count(DISTINCT pid) FROM {schema}.ledger")
    assert rows[0][:2] == (total, total)
    assert rows[0][2] > 1, "only one worker process did any work"
    assert sql(app, "SELECT min(job_id), max(job_id) FROM {schema}.ledger")[0] == (min(ids), max(ids))

    children = psutil.Process(supervisor.pid).children(recursive=True)
    assert len(children) >= 4
    supervisor.send_signal(signal.SIGTERM)
    assert workers.exit_code(supervisor, 30) == 0
    wait_for(lambda: not [c for c in children if alive(c)], 15, "the worker processes to exit")
    assert ours(app.schema) == []


def test_a_job_whose_worker_is_killed_is_rescued_after_its_lease_expires(
    app: pageq.App, workers: Workers
) -> None:
    [job_id] = app.enqueue_many([stall_once.job(seconds=60)])
    first = workers.start("slow", "--concurrency", "2", "--processes", "1", *LEASE, "--grace", "5")
    wait_for(lambda: "start 1" in notes(app, job_id), 30, "the first attempt to start")

    first.send_signal(signal.SIGKILL)
    assert workers.exit_code(first, 10) == -signal.SIGKILL
    workers.start("slow", "--concurrency", "2", "--processes", "1", *LEASE, "--grace", "5")

    job = wait_for(lambda: (j := app.get_job(job_id)).state.is_final and j, 60, "the rescued job to finish")
    assert job.state == pageq.JobState.SUCCEEDED
    assert job.attempts == 2
    assert [e.attempt for e in job.errors] == [1]
    assert "LeaseExpired" in job.errors[0].error
    assert notes(app, job_id) == ["start 1", "start 2", "end 2"]


def test_sigterm_lets_short_jobs_finish_and_releases_long_ones(app: pageq.App, workers: Workers) -> None:
    short = app.enqueue_many([sleepy.job(seconds=1), sleepy.job(seconds=1)])
    long = app.enqueue_many([sleepy.job(seconds=60), sleepy.job(seconds=60)])
    worker = workers.start("slow", "--concurrency", "4", "--processes", "1", *LEASE, "--grace", "3")
    wait_for(lambda: started(app, short + long), 30, "all four jobs to start")

    worker.send_signal(signal.SIGTERM)
    assert workers.exit_code(worker, 3 + 10) == 0

    for job_id in short:
        assert app.get_job(job_id).state == pageq.JobState.SUCCEEDED
        assert notes(app, job_id) == ["start", "end"]
    assert_released(app, long)

    workers.start("slow", "--concurrency", "4", "--processes", "1", *LEASE, "--grace", "0")
    wait_for(lambda: all(notes(app, i) == ["start", "start"] for i in long), 30, "the released jobs to rerun")


def test_a_second_sigterm_releases_long_jobs_without_waiting_for_the_grace_period(
    app: pageq.App, workers: Workers
) -> None:
    long = app.enqueue_many([sleepy.job(seconds=60), sleepy.job(seconds=60)])
    worker = workers.start("slow", "--concurrency", "4", "--processes", "1", *LEASE, "--grace", "60")
    wait_for(lambda: started(app, long), 30, "both jobs to start")

    worker.send_signal(signal.SIGTERM)
    wait_for(lambda: "draining 2 running jobs" in workers.log(worker), 15, "the worker to start draining")
    worker.send_signal(signal.SIGTERM)
    assert workers.exit_code(worker, 15) == 0
    assert_released(app, long)


def assert_released(app: pageq.App, ids: list[int]) -> None:
    """The jobs are back in their queue, due now, their interrupted attempt not counted."""
    now = sql(app, "SELECT now()")[0][0]
    for job_id in ids:
        job = app.get_job(job_id)
        assert (job.state, job.attempts, job.errors) == (pageq.JobState.QUEUED, 0, [])
        assert job.run_at <= now
        assert notes(app, job_id) == ["start"]
