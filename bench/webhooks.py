"""Cost of webhooks on the hot path: drain throughput with one webhook subscribed to job.dead, as a ratio to
none (the issue's goal: not slower by more than 5 %).

Usage: python bench/webhooks.py [N] [CONCURRENCY] [ROUNDS]   (embedded PostgreSQL, or PAGEQ_DSN)
Each round runs the configurations in turn (so drift hits them alike) on a fresh schema: enqueue N no-op jobs
in batches of 1,000, then drain them with one in-process worker. No job dies, so nothing is delivered: the
difference is the audit trigger's WHEN test on each audit row (enqueue, claim, complete). A third line shows
a worker started with webhooks=False (it does not claim from the deliveries' queue) and no webhook.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

import pageq

N = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
CONCURRENCY = int(sys.argv[2]) if len(sys.argv) > 2 else 500
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 5
CONFIGS = {  # name: (a job.dead webhook, the worker serves the deliveries' queue)
    "no webhook": (False, True),
    "one job.dead webhook": (True, True),
    "no webhook, webhooks=False": (False, False),
}
SCHEMA = "bench_webhooks"


async def one(webhook: bool, serve: bool) -> tuple[float, float]:
    app = pageq.App(schema=SCHEMA)

    @app.task(queue="bench")
    async def noop(i: int) -> None: ...

    app.drop_schema()
    app.migrate()
    if webhook:
        app.webhooks.create("https://example.com/pageq-bench", ["job.dead"])
    started = time.perf_counter()
    for chunk in range(0, N, 1000):
        await app.enqueue_many_async([noop.job(i=i) for i in range(chunk, min(N, chunk + 1000))])
    enqueue_s = time.perf_counter() - started
    worker = app.worker(["bench"], CONCURRENCY, poll_interval=0.05, webhooks=serve)
    started = time.perf_counter()
    running = asyncio.create_task(worker.run())
    while True:
        stats = {s.queue: s for s in await asyncio.to_thread(app.queue_stats)}
        if stats["bench"].counts[pageq.JobState.SUCCEEDED] >= N:
            break
        await asyncio.sleep(0.02)
    drain_s = time.perf_counter() - started
    worker.stop()
    await running
    await app.aclose()
    app.close()
    return N / enqueue_s, N / drain_s


async def main() -> None:
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in CONFIGS}
    for _ in range(ROUNDS):
        for name, (webhook, serve) in CONFIGS.items():
            results[name].append(await one(webhook, serve))
    base_e = statistics.median(r[0] for r in results["no webhook"])
    base_d = statistics.median(r[1] for r in results["no webhook"])
    print(f"N={N} concurrency={CONCURRENCY} rounds={ROUNDS} (medians; min-max of drain in brackets)")
    for name, rows in results.items():
        enq, drain = statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)
        low, high = min(r[1] for r in rows), max(r[1] for r in rows)
        print(f"{name:28s} enqueue {enq:8,.0f} jobs/s ({enq / base_e:4.0%})   "
              f"drain {drain:8,.0f} jobs/s ({drain / base_d:4.0%}) [{low:,.0f}-{high:,.0f}]")  # fmt: skip
    pageq.App(schema=SCHEMA).drop_schema()


asyncio.run(main())
