"""Helpers for testing code that uses pageq: run a worker in-process until the queues are empty."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from pageq.app import App
from pageq.types import JobState
from pageq.worker import Worker


def _idle(app: App, queues: Sequence[str]) -> bool:
    for stats in app.queue_stats():
        if stats.queue not in queues:
            continue
        if stats.counts[JobState.RUNNING] or stats.oldest_queued_age is not None:
            return False
    return True


async def drain(
    app: App, queues: Sequence[str] = ("default",), *, concurrency: int = 10, timeout: float = 60.0,
    **options: Any,
) -> Worker:  # fmt: skip
    """Run a worker until no job of ``queues`` is running or due, then stop it; returns the worker.

    Example::

        send_email.enqueue(to="a@example.com")
        await pageq.testing.drain(app, ["emails"])
    """
    worker = app.worker(queues, concurrency, **options)
    running = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(timeout):
            await worker.started.wait()
            confirmed = 0  # idle twice in a row: the statistics are two statements, a job may move between
            while confirmed < 2 and not running.done():
                await asyncio.sleep(0.02)
                busy = worker.active or worker.busy or worker.completer.backlog
                confirmed = 0 if busy or not await asyncio.to_thread(_idle, app, queues) else confirmed + 1
    finally:
        worker.stop()
        await running
    return worker
