"""What the examples share: run a worker until given jobs have finished."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import pageq


async def run_until_finished(
    app: pageq.App, queues: Sequence[str], ids: Sequence[int], *, concurrency: int = 8,
    timeout: float = 120.0, tick: Callable[[], None] | None = None, **options: Any,
) -> list[pageq.Job]:  # fmt: skip
    """Run a worker of ``queues`` in this process until every job of ``ids`` reached a final state (calling
    ``tick`` now and then), then stop it (running jobs finish first); returns those jobs."""
    worker = app.worker(queues, concurrency, poll_interval=0.1, **options)
    running = asyncio.create_task(worker.run())
    deadline = time.monotonic() + timeout
    try:
        while True:
            jobs = [await app.get_job_async(job_id) for job_id in ids]
            if all(job.state.is_final for job in jobs) or running.done():
                return jobs
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs still unfinished after {timeout:g} s")
            if tick is not None:
                await asyncio.to_thread(tick)
            await asyncio.sleep(0.1)
    finally:
        worker.stop()
        await running
        await app.aclose()
