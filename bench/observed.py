"""Cost of watching: drain throughput while a dashboard is open and Prometheus scrapes every second, as a
ratio to nobody watching (the monitoring issue's bar: not slower by more than 5 %).

Usage: python bench/observed.py [N] [CONCURRENCY] [ROUNDS]   (embedded PostgreSQL, or PAGEQ_DSN)
Each round drains N no-op jobs twice, alternating which configuration goes first: once unobserved, once with
an observer thread that every second does what an open dashboard page does (`dashboard.live.read`: system,
queues, workers, controls) and what a scrape does (`metrics.render`), on its own App (as `pageq serve` would
be another process). Prints the median drain rate of each and their ratio.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import threading
import time

import pageq
from pageq import metrics
from pageq.http.dashboard import live

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
CONCURRENCY = int(sys.argv[2]) if len(sys.argv) > 2 else 200
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
SCHEMA = "bench_observed"


def observe(stop: threading.Event, looks: list[float]) -> None:
    viewer = pageq.App(schema=SCHEMA)
    try:
        while not stop.wait(1.0):
            started = time.perf_counter()
            live.read(viewer)
            metrics.render(viewer)
            looks.append(time.perf_counter() - started)
    finally:
        viewer.close()


async def drain(observed: bool) -> tuple[float, list[float]]:
    app = pageq.App(schema=SCHEMA)

    @app.task(queue="bench")
    async def noop(i: int) -> None: ...

    app.drop_schema()
    app.migrate()
    for chunk in range(0, N, 10_000):
        await app.enqueue_many_async([noop.job(i=i) for i in range(chunk, min(N, chunk + 10_000))])
    stop, looks = threading.Event(), []
    watcher = threading.Thread(target=observe, args=(stop, looks)) if observed else None
    if watcher:
        watcher.start()
    worker = app.worker(["bench"], CONCURRENCY, poll_interval=0.05)
    started = time.perf_counter()
    running = asyncio.create_task(worker.run())
    while True:
        stats = {s.queue: s for s in await asyncio.to_thread(app.queue_stats)}
        if stats["bench"].counts.get(pageq.JobState.SUCCEEDED, 0) >= N:
            break
        await asyncio.sleep(0.05)
    rate = N / (time.perf_counter() - started)
    worker.stop()
    await running
    stop.set()
    if watcher:
        watcher.join()
    await app.aclose()
    app.close()
    return rate, looks


async def main() -> None:
    rates: dict[bool, list[float]] = {False: [], True: []}
    looks: list[float] = []
    for round_ in range(ROUNDS):
        for observed in (False, True) if round_ % 2 == 0 else (True, False):
            rate, seen = await drain(observed)
            rates[observed].append(rate)
            looks.extend(seen)
            print(
                f"round {round_ + 1} {'observed' if observed else 'alone':>8}: {rate:,.0f} jobs/s", flush=True
            )
    alone, watched = statistics.median(rates[False]), statistics.median(rates[True])
    print(f"N={N} concurrency={CONCURRENCY} rounds={ROUNDS}: alone {alone:,.0f} jobs/s, observed "
          f"{watched:,.0f} jobs/s, ratio {watched / alone:.3f}; one look (dashboard + scrape) median "
          f"{statistics.median(looks) * 1000:.1f} ms over {len(looks)}")  # fmt: skip


asyncio.run(main())
