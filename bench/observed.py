"""Cost of watching: drain throughput while a dashboard is open and Prometheus scrapes every second, as a
ratio to nobody watching (the monitoring issue's bar: not slower by more than 5 %).

Usage: python bench/observed.py [N] [CONCURRENCY] [ROUNDS] [VIEWERS]   (embedded PostgreSQL, or PAGEQ_DSN)
Each round drains N no-op jobs twice, alternating which configuration goes first: once unobserved, once with
an observer *process* (as `pageq serve` is another process than the workers) that every second does, for
each of VIEWERS principals (1 by default), what an open dashboard page's live stream does
(`dashboard.live.read` and `live.event`) and what a scrape of /metrics does (`metrics.render`), each
principal through `App.acting_as` as the server does. Prints the median drain rate of each, their ratio,
and the median time of one look (all viewers' pages and scrapes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import statistics
import sys
import time
from typing import Any

import pageq
from pageq import metrics
from pageq.http.dashboard import live

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
CONCURRENCY = int(sys.argv[2]) if len(sys.argv) > 2 else 200
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
VIEWERS = int(sys.argv[4]) if len(sys.argv) > 4 else 1
SCHEMA = "bench_observed"


def observe(ready: Any, stop: Any, looks: Any, viewers: int) -> None:
    """The observer process: `pageq serve`'s reads for ``viewers`` open pages and scrapers, every second."""
    server = pageq.App(schema=SCHEMA)
    fmt = dict.fromkeys(("age", "duration", "size", "rate"), str)
    try:
        principals = [f"viewer{i}" for i in range(viewers)]
        for name in principals:
            with contextlib.suppress(pageq.PageqError):
                server.security.create_principal(name)
            server.security.grant(name, "read")
        acting = [server.acting_as(name) for name in principals]
        for app in acting:  # warm: connections open, statements prepared, before the drain starts
            live.read(app)
            metrics.render(app)
        ready.set()
        while not stop.wait(1.0):
            started = time.perf_counter()
            for app in acting:
                json.dumps(live.event(live.read(app), fmt))
                metrics.render(app)
            looks.append(time.perf_counter() - started)
    finally:
        server.close()


async def drain(observed: bool) -> tuple[float, list[float]]:
    app = pageq.App(schema=SCHEMA)

    @app.task(queue="bench")
    async def noop(i: int) -> None: ...

    app.drop_schema()
    app.migrate()
    for chunk in range(0, N, 10_000):
        await app.enqueue_many_async([noop.job(i=i) for i in range(chunk, min(N, chunk + 10_000))])
    context = multiprocessing.get_context("spawn")
    manager = context.Manager()
    ready, stop, shared = manager.Event(), manager.Event(), manager.list()
    watcher = context.Process(target=observe, args=(ready, stop, shared, VIEWERS)) if observed else None
    if watcher:
        watcher.start()
        await asyncio.to_thread(ready.wait)
        await asyncio.sleep(1.0)  # the process's start-up is over
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
    looks = list(shared)
    manager.shutdown()
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
    print(f"N={N} concurrency={CONCURRENCY} rounds={ROUNDS} viewers={VIEWERS}: alone {alone:,.0f} jobs/s, "
          f"observed {watched:,.0f} jobs/s, ratio {watched / alone:.3f}; one look (pages + scrapes) median "
          f"{statistics.median(looks) * 1000:.1f} ms over {len(looks)}")  # fmt: skip


if __name__ == "__main__":
    asyncio.run(main())
