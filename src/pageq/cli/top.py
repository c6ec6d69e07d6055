"""`pageq top`: a live terminal view of queues and workers (rich), refreshed every second."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

import pageq
from pageq.cli.common import Schema, open_app
from pageq.cli.output import age, out
from pageq.stats import SHOWN_STATES, Latency, QueueSummary, SystemStats, WorkerStats


def top(
    once: Annotated[bool, typer.Option("--once", help="Print one frame and exit.")] = False,
    interval: Annotated[float, typer.Option(min=0.1, max=3600, help="Seconds between refreshes.")] = 1.0,
    window: Annotated[int, typer.Option(min=1, max=1440, help="Minutes the rates average over.")] = 5,
    schema: Schema = None,
) -> None:
    """Live view of queues (jobs by state, rates, wait and run times) and workers; Ctrl-C leaves.

    With --once, print one frame and exit (1 when the database does not answer)."""
    app = open_app(None, schema)
    if once:
        out.print(frame(app, window))
        if not app.stats.system().database:
            raise SystemExit(1)
        return
    try:
        with Live(frame(app, window), console=out, auto_refresh=False, screen=False) as live:
            while True:
                time.sleep(interval)
                live.update(frame(app, window), refresh=True)
    except KeyboardInterrupt:
        pass


def frame(app: pageq.App, window: int) -> RenderableType:
    """One screen: the system line, the queues table, the workers table."""
    system = app.stats.system()
    if not system.database:
        return Group(_header(system))
    queues = app.stats.queues(window=window)
    workers = app.stats.workers()
    return Group(_header(system), _queues(queues, window), _workers(workers))


def _header(system: SystemStats) -> Text:
    if not system.database:
        return Text.assemble(("database unreachable: ", "bold red"), system.error or "")
    trip = f"{1000 * (system.round_trip or 0):.1f} ms"
    leader = system.leader if system.maintenance else None
    parts: list[str | tuple[str, str]] = [
        ("database up", "bold green"), f" ({trip}, PostgreSQL {system.server_version})  ",
        "maintenance: ", (leader, "cyan") if leader else ("no leader", "bold red"),
        f"  rollups {age(system.rollup_lag)} behind  workers: {system.workers}",
    ]  # fmt: skip
    return Text.assemble(*parts)


def _queues(queues: list[QueueSummary], window: int) -> Table:
    table = Table(title=f"queues (rates over {window} min, times of the newest minute)", expand=True)
    table.add_column("queue / task", overflow="fold")
    for state in SHOWN_STATES:
        table.add_column(state.value, justify="right")
    for column in ("oldest due", "in/s", "done/s", "failed/s", "wait p50/p95", "run p50/p95"):
        table.add_column(column, justify="right")
    for queue in queues:
        table.add_row(*_row(queue.queue, queue), style="bold")
        for task in queue.tasks:
            table.add_row(*_row(f"  {task.task}", task))
    if not queues:
        table.add_row("(no jobs yet)")
    return table


def _row(label: str, item: QueueSummary) -> list[str]:
    counts = [str(item.jobs.get(state, 0)) for state in SHOWN_STATES]
    rates = item.rates
    return [
        label, *counts, age(item.oldest_due_age), f"{rates.enqueued:.1f}", f"{rates.succeeded:.1f}",
        f"{rates.failed:.1f}", _times(item.latency, "wait"), _times(item.latency, "run"),
    ]  # fmt: skip


def _times(latency: Latency | None, kind: str) -> str:
    if latency is None:
        return "-"
    percentiles = latency.wait if kind == "wait" else latency.run
    return f"{_seconds(percentiles.p50)} / {_seconds(percentiles.p95)}"


def _seconds(value: float) -> str:
    return f"{1000 * value:.0f}ms" if value < 1 else age(value)


def _workers(workers: list[WorkerStats]) -> Table:
    table = Table(title="workers", expand=True)
    for column in ("worker", "queues", "running", "processed", "failed", "memory", "heartbeat"):
        table.add_column(
            column, justify="left" if column in ("worker", "queues") else "right", overflow="fold"
        )
    for worker in workers:
        memory = "-" if worker.rss_bytes is None else f"{worker.rss_bytes / 2**20:.0f} MiB"
        heartbeat = f"{age(worker.heartbeat_age)} ago"
        table.add_row(
            worker.id, ",".join(worker.queues), f"{worker.running}/{worker.capacity}", str(worker.processed),
            str(worker.failed), memory, Text(heartbeat, style="bold red" if worker.stale else ""),
        )  # fmt: skip
    if not workers:
        table.add_row("(no workers)")
    return table
