"""Shared by the configuration benchmarks (bench/security.py, bench/webhooks.py): time one enqueue-then-drain
of a prepared app, and print the medians of each configuration as ratios to a baseline."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

import pageq


async def enqueue_then_drain(
    app: pageq.App, job: Callable[[int], Any], n: int, concurrency: int, **worker_options: Any
) -> tuple[float, float]:
    """Enqueue ``n`` jobs (``job(i)``, batches of 1,000), then drain them with one in-process worker; returns
    (enqueue, drain) in jobs/s and closes the app."""
    started = time.perf_counter()
    for chunk in range(0, n, 1000):
        await app.enqueue_many_async([job(i) for i in range(chunk, min(n, chunk + 1000))])
    enqueue_s = time.perf_counter() - started
    worker = app.worker(["bench"], concurrency, poll_interval=0.05, **worker_options)
    started = time.perf_counter()
    running = asyncio.create_task(worker.run())
    while True:
        stats = {s.queue: s for s in await asyncio.to_thread(app.queue_stats)}
        if stats["bench"].counts[pageq.JobState.SUCCEEDED] >= n:
            break
        await asyncio.sleep(0.02)
    drain_s = time.perf_counter() - started
    worker.stop()
    await running
    await app.aclose()
    app.close()
    return n / enqueue_s, n / drain_s


def report(results: dict[str, list[tuple[float, float]]], baseline: str, header: str) -> None:
    """Print each configuration's median enqueue and drain rates, as ratios to ``baseline``'s, and the
    drain's range over the rounds."""
    base_e = statistics.median(r[0] for r in results[baseline])
    base_d = statistics.median(r[1] for r in results[baseline])
    print(f"{header} (medians; min-max of drain in brackets)")
    width = max(len(name) for name in results) + 2
    for name, rows in results.items():
        enq, drain = statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)
        low, high = min(r[1] for r in rows), max(r[1] for r in rows)
        print(f"{name:{width}s} enqueue {enq:8,.0f} jobs/s ({enq / base_e:4.0%})   "
              f"drain {drain:8,.0f} jobs/s ({drain / base_d:4.0%}) [{low:,.0f}-{high:,.0f}]")  # fmt: skip
