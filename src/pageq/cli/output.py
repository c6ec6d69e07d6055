"""Printing for the CLI: rich tables for people, JSON for scripts, one-line errors."""

from __future__ import annotations

import dataclasses
import json
import sys
from datetime import datetime
from enum import Enum
from typing import Any, NoReturn

from rich.console import Console
from rich.table import Table

import pageq

out = Console()
err = Console(stderr=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one line to stderr and exit non-zero."""
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise SystemExit(code)


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(_plain(k)): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(_plain(value), indent=2, default=str) + "\n")


def age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def jobs_table(jobs: list[pageq.Job], title: str = "jobs") -> Table:
    table = Table(title=title)
    for column in ("id", "task", "queue", "state", "attempts", "run at", "finished", "last error"):
        table.add_column(column, overflow="fold")
    for job in jobs:
        last = job.errors[-1].error if job.errors else ""
        table.add_row(
            str(job.id), job.task, job.queue, job.state.value, f"{job.attempts}/{job.max_attempts}",
            when(job.run_at), when(job.finished_at), last[:80],
        )  # fmt: skip
    return table


def stats_table(stats: list[pageq.QueueStats]) -> Table:
    table = Table(title="queues")
    states = list(pageq.JobState)
    table.add_column("queue")
    for state in states:
        table.add_column(state.value, justify="right")
    table.add_column("oldest waiting", justify="right")
    table.add_column("jobs/s (1 min)", justify="right")
    for item in stats:
        counts = [str(item.counts[state]) for state in states]
        table.add_row(item.queue, *counts, age(item.oldest_queued_age), f"{item.throughput:.1f}")
    return table
