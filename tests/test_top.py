"""`pageq top`: one frame (``--once``) of real jobs, as a subprocess; and with the database down."""

from __future__ import annotations

import re
import subprocess
import sys

import pageq
from apps.monitored import register
from monitoring import roll_up, run_jobs


def top(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "pageq", "top", "--once", *args]
    env = {**env, "COLUMNS": "220"}  # wide enough that rich tables do not fold their cells
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)


def cells(output: str, first: str) -> list[str]:
    """The cells of the table row whose first cell is ``first``."""
    for line in output.splitlines():
        parts = [p.strip() for p in re.split(r"[│┃|]", line)]
        if len(parts) > 2 and parts[1] == first:
            return parts[1:-1]
    raise AssertionError(f"no row {first!r} in:\n{output}")


async def test_one_frame_of_real_jobs(env: dict[str, str], app: pageq.App) -> None:
    register(app)
    await run_jobs(app)
    roll_up(app)
    done = top(env, "--window", "60")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "database up" in out and "workers: 0" in out
    header = cells(out, "queue / task")
    assert header[:7] == ["queue / task", "scheduled", "queued", "running", "retrying", "blocked", "dead"]
    mon, doomed, ok = cells(out, "mon"), cells(out, "doomed"), cells(out, "ok")
    assert mon[1:7] == ["0", "0", "0", "0", "0", "2"] and doomed[6] == "2" and ok[6] == "0"
    assert float(mon[9]) > 0  # done/s over the window
    assert [row[0] for row in (cells(out, "bulk"),)] == ["bulk"]
    assert "(no workers)" in out


def test_a_database_down_is_one_line_and_exit_1(env: dict[str, str]) -> None:
    done = top({**env, "PAGEQ_DSN": "postgresql://postgres@127.0.0.1:1/test"})
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stdout.startswith("database unreachable: ") and len(done.stdout.strip().splitlines()) == 1
