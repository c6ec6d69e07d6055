"""The chaos scenarios at CI size (``-m chaos``); `python -m chaos.full` runs them at full size."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import pageq
from chaos import lifecycle, scenarios

pytestmark = pytest.mark.chaos
ONCE = pytest.mark.skipif(
    bool(os.environ.get("PAGEQ_TEST_DSN")),
    reason="worker processes or its own server: runs once per CI, in the embedded-server run",
)


@pytest.fixture
def clean(dsn: str, schema: str) -> Iterator[str]:
    yield schema
    app = pageq.App(dsn, schema=schema)
    app.drop_schema()
    app.close()


def passed(result: scenarios.Result) -> None:
    print(result.name, result.figures)
    assert not result.violations, f"{result.name}: {result.violations} ({result.figures})"


@ONCE
def test_r2_sigkilled_workers_lose_nothing_and_complete_each_job_once(
    dsn: str, clean: str, tmp_path: Path
) -> None:
    passed(scenarios.r2_kill9(dsn, clean, tmp_path))


@ONCE
def test_r3_server_restarts_lose_no_acknowledged_enqueue_and_workers_reconnect(tmp_path: Path) -> None:
    passed(scenarios.r3_restarts(tmp_path))


def test_r6_fencing_races_have_one_winner(dsn: str, clean: str) -> None:
    passed(scenarios.r6_fencing(dsn, clean, iterations=50))


@ONCE
def test_r7_each_crash_point_costs_the_expected_re_execution_and_loses_nothing(
    dsn: str, clean: str, tmp_path: Path
) -> None:
    passed(scenarios.r7_crash_points(dsn, clean, tmp_path, jobs=2, workers=2))


@ONCE
def test_r9_a_poison_pill_is_buried_after_three_crashes(dsn: str, clean: str, tmp_path: Path) -> None:
    passed(scenarios.r9_poison(dsn, clean, tmp_path))


@ONCE
def test_r4_terminated_backends_lose_nothing_and_listeners_come_back(
    dsn: str, clean: str, tmp_path: Path
) -> None:
    passed(scenarios.r4_backend_storm(dsn, clean, tmp_path))


@ONCE
def test_r5_a_cut_off_worker_fences_itself_and_its_late_writes_change_nothing(tmp_path: Path) -> None:
    passed(scenarios.r5_half_open(tmp_path))


def test_r14_enqueue_is_transactional_and_idempotent(dsn: str, clean: str) -> None:
    passed(scenarios.r14_enqueue(dsn, clean))


@ONCE
def test_r1_each_job_runs_once_without_faults(dsn: str, clean: str, tmp_path: Path) -> None:
    passed(lifecycle.r1_exactly_once(dsn, clean, tmp_path))


def test_r8_retries_follow_the_backoff_and_dead_jobs_come_back(dsn: str, clean: str) -> None:
    passed(lifecycle.r8_retries(dsn, clean))


@ONCE
def test_r10_long_jobs_keep_their_leases_and_timeouts_cancel(dsn: str, clean: str, tmp_path: Path) -> None:
    passed(lifecycle.r10_long_jobs(dsn, clean, tmp_path))


@ONCE
def test_r11_sigterm_finishes_short_jobs_and_hands_long_ones_over(
    dsn: str, clean: str, tmp_path: Path
) -> None:
    passed(lifecycle.r11_shutdown(dsn, clean, tmp_path))


@ONCE
def test_r13_a_killed_leader_is_replaced_at_once_and_terms_never_overlap(
    dsn: str, clean: str, tmp_path: Path
) -> None:
    passed(lifecycle.r13_failover(dsn, clean, tmp_path))
