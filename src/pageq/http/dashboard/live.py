"""What the pages show that changes by the second, read once for the page and then pushed every second as
server-sent events: one flat map from a key (``queue/emails/queued``) to the text shown, which the page's
script writes into each element marked ``data-live="key"``, plus raw numbers for the live charts."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pageq
from pageq.stats import SHOWN_STATES

STREAM_SECONDS = 300.0
"""An event stream ends after this long; the browser reconnects at once (and re-authenticates)."""


def key(*parts: object) -> str:
    return "/".join(str(part) for part in parts)


@dataclass(frozen=True)
class Now:
    """The statistics of one moment, as the viewer may read them."""

    system: pageq.SystemStats
    queues: list[pageq.QueueSummary]
    workers: list[pageq.WorkerStats]
    controls: dict[str, pageq.QueueControl]

    @property
    def totals(self) -> dict[str, int]:
        return {s.value: sum(q.jobs.get(s, 0) for q in self.queues) for s in SHOWN_STATES}

    @property
    def live_workers(self) -> list[pageq.WorkerStats]:
        return [w for w in self.workers if not w.stale]


def read(app: pageq.App) -> Now:
    """The statistics now (blocking). The queue and worker lists are empty while the database is down."""
    system = app.stats.system()
    if not system.database:
        return Now(system, [], [], {})
    controls = {c.name: c for c in app.queue_controls()}
    return Now(system, app.stats.queues(), app.stats.workers(), controls)


def values(now: Now, fmt: dict[str, Callable[[Any], str]]) -> dict[str, str]:
    """Every live value of the pages, formatted (``fmt``: the templates' filters)."""
    age, duration, size, rate = fmt["age"], fmt["duration"], fmt["size"], fmt["rate"]
    system = now.system
    found = {
        "system/database": "up" if system.database else "down",
        "system/round_trip": duration(system.round_trip),
        "system/leader": system.leader or "none",
        "system/maintenance": "running" if system.maintenance else "stopped",
        "system/rollup_lag": age(system.rollup_lag),
        "system/workers": str(len(now.live_workers)),
    }
    for state, count in now.totals.items():
        found[key("total", state)] = str(count)
    for queue in now.queues:
        for member in (queue, *queue.tasks):
            prefix = ("queue", queue.queue) if member.task is None else ("task", queue.queue, member.task)
            for state, count in member.jobs.items():
                found[key(*prefix, state.value)] = str(count)
            found[key(*prefix, "oldest")] = age(member.oldest_due_age)
            found[key(*prefix, "in")] = rate(member.rates.enqueued)
            found[key(*prefix, "done")] = rate(member.rates.succeeded)
            found[key(*prefix, "failed")] = rate(member.rates.failed)
    for name, control in now.controls.items():
        found[key("queue", name, "paused")] = "paused" if control.paused else "running"
    for worker in now.workers:
        found[key("worker", worker.id, "running")] = f"{worker.running} / {worker.capacity}"
        found[key("worker", worker.id, "processed")] = str(worker.processed)
        found[key("worker", worker.id, "failed")] = str(worker.failed)
        found[key("worker", worker.id, "memory")] = size(worker.rss_bytes)
        found[key("worker", worker.id, "heartbeat")] = age(worker.heartbeat_age)
        found[key("worker", worker.id, "health")] = "stale" if worker.stale else "healthy"
    return found


def event(now: Now, fmt: dict[str, Callable[[Any], str]]) -> dict[str, Any]:
    """One event of the stream: the values, and the numbers the live charts plot."""
    return {
        "at": time.time(),
        "values": values(now, fmt),
        "depth": now.totals,
        "processed": sum(w.processed for w in now.workers),
        "failed": sum(w.failed for w in now.workers),
        "running": sum(w.running for w in now.live_workers),
        "capacity": sum(w.capacity for w in now.live_workers),
    }


async def stream(
    current: Callable[[], Any], interval: float, fmt: dict[str, Callable[[Any], str]]
) -> AsyncIterator[str]:
    """The text/event-stream body: a ``snapshot`` event every ``interval`` seconds; ``logout`` (and the end)
    once the viewer's token stops working. ``current`` (async) returns the viewer's app, or None."""
    yield "retry: 2000\n\n"
    started = time.monotonic()
    while time.monotonic() - started < STREAM_SECONDS:
        app = await current()
        if app is None:
            yield "event: logout\ndata: {}\n\n"
            return
        now = await asyncio.to_thread(read, app)
        yield f"event: snapshot\ndata: {json.dumps(event(now, fmt), separators=(',', ':'))}\n\n"
        await asyncio.sleep(interval)
