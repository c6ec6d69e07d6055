"""Prometheus metrics: a real worker's /metrics (``--metrics-port``) scraped and checked by ``promtool``.

promtool comes from Debian's ``prometheus`` package (.ci/run installs it). Without it these tests fail;
``PAGEQ_NO_PROMTOOL=1`` turns that into a skip, for machines that cannot install it (never set in CI).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator

import pytest

import pageq
import pageq.metrics
from apps.monitored import enqueue_all, register
from monitoring import roll_up


def promtool_check(text: str) -> None:
    """``promtool check metrics`` must accept ``text`` without a single lint remark."""
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("PAGEQ_NO_PROMTOOL") == "1":
            pytest.skip("promtool is not installed and PAGEQ_NO_PROMTOOL=1")
        pytest.fail("promtool is missing: apt-get install prometheus (PAGEQ_NO_PROMTOOL=1 skips this)")
    done = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout + done.stderr) == (0, "")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        return str(response.read().decode())


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the series ``name`` whose labels include ``labels``, None when absent."""
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:{{(.*)}})? (\S+)$", line)
        if match:
            found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
            if labels.items() <= found.items():
                return float(match.group(2))
    return None


def scrape_until(port: int, ready: Callable[[str], bool], timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            text = scrape(port)
        except OSError:  # not listening yet
            text = ""
        if ready(text) or time.monotonic() > deadline:
            assert ready(text), text
            return text
        time.sleep(0.2)


@pytest.fixture
def worker(env: dict[str, str], app: pageq.App) -> Iterator[int]:
    """`pageq worker apps.monitored:app --metrics-port N` on the test's schema; yields N."""
    port = free_port()
    command = [
        sys.executable, "-m", "pageq", "worker", "apps.monitored:app", "--queues", "mon,bulk",
        "--metrics-port", str(port), "--poll-interval", "0.05", "--maintenance-interval", "0.2",
    ]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
        assert process.returncode == 0, stderr
        assert f"metrics at http://127.0.0.1:{port}/metrics" in stderr


def test_a_workers_metrics_count_real_jobs_and_pass_promtool(app: pageq.App, worker: int) -> None:
    register(app)
    enqueue_all(app)
    text = scrape_until(worker, lambda t: sample(t, "pageq_worker_attempts_total") == 20.0)
    assert sample(text, "pageq_database_up") == 1.0
    assert sample(text, "pageq_worker_attempts_failed_total") == 7.0
    assert sample(text, "pageq_worker_capacity") == 10.0
    assert (sample(text, "pageq_worker_resident_memory_bytes") or 0) > 10 * 2**20
    assert sample(text, "process_resident_memory_bytes") is not None  # the serving process's own
    text = scrape_until(worker, lambda t: sample(t, "pageq_maintenance_up") == 1.0)
    assert sample(text, "pageq_jobs", queue="mon", task="doomed", state="dead") == 2.0
    assert sample(text, "pageq_jobs", queue="mon", task="doomed", state="queued") == 0.0
    promtool_check(text)

    roll_up(app)  # what the leader does once the minute has settled
    text = scrape_until(worker, lambda t: sample(t, "pageq_jobs_enqueued_total", task="ok") == 6.0)
    assert sample(text, "pageq_jobs_finished_total", queue="mon", task="flaky", state="succeeded") == 3.0
    assert sample(text, "pageq_jobs_finished_total", queue="mon", task="doomed", state="dead") == 2.0
    assert sample(text, "pageq_job_attempts_failed_total", queue="mon", task="doomed") == 4.0
    assert sample(text, "pageq_job_run_seconds_count", queue="mon", task="ok") == 6.0
    assert sample(text, "pageq_job_wait_seconds", queue="bulk", task="bulk", quantile="0.99") is not None
    assert sample(text, "pageq_stats_rollup_lag_seconds") is not None
    promtool_check(text)


def test_metrics_of_an_unreachable_database_say_so() -> None:
    app = pageq.App("postgresql://postgres@127.0.0.1:1/test", schema="nowhere")
    body, content_type = pageq.metrics.render(app)
    text = body.decode()
    assert content_type.startswith("text/plain") and sample(text, "pageq_database_up") == 0.0
    assert "pageq_jobs" not in text
    promtool_check(text)


def test_a_busy_metrics_port_is_one_line_of_error(env: dict[str, str], app: pageq.App) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        command = [sys.executable, "-m", "pageq", "worker", "apps.monitored:app", "--metrics-port", str(port)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line and not line.startswith("database: ")]
    assert lines == [f"error: cannot serve metrics on 127.0.0.1:{port}: Address already in use"]


def test_pageq_serve_exposes_the_callers_metrics(app: pageq.App) -> None:
    """`/metrics` on the HTTP API: credentials needed (401 without), and a reader sees only the queues it
    may read; the output passes promtool."""
    from http_helpers import serve

    for api in serve(app):
        api.call("admin", "POST", "/v1/jobs", {"task": "email.send", "args": {"to": "a"}})
        api.call("admin", "POST", "/v1/jobs", {"task": "report.build", "args": {"n": 1}})
        assert api.call(None, "GET", "/metrics").status_code == 401
        full = api.call("admin", "GET", "/metrics")
        assert full.status_code == 200 and full.headers["content-type"].startswith("text/plain; version=")
        assert sample(full.text, "pageq_jobs", queue="reports", task="report.build", state="queued") == 1.0
        promtool_check(full.text)
        mine = api.call("producer", "GET", "/metrics").text  # may read email.* only
        assert sample(mine, "pageq_jobs", queue="emails", task="email.send", state="queued") == 1.0
        assert sample(mine, "pageq_jobs", queue="reports", task="report.build", state="queued") is None
        promtool_check(mine)
