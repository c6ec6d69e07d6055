"""First baseline: enqueue N no-op jobs in bulk, then drain them with one in-process worker.

Usage: python bench/drain.py [N] [CONCURRENCY] [--dead-webhook]   (embedded PostgreSQL, or PAGEQ_DSN)
The full peer comparison lives in the performance issue; this only reports pageq's own rates.
``--dead-webhook`` subscribes one webhook to job.dead first (no job dies, so nothing is delivered: what it
costs is the audit trigger's WHEN test on every transition); bench/webhooks.py compares both in rounds.
"""

from __future__ import annotations

import asyncio
import sys
import time

import pageq

DEAD_WEBHOOK = "--dead-webhook" in sys.argv
ARGS = [a for a in sys.argv[1:] if a != "--dead-webhook"]
N = int(ARGS[0]) if ARGS else 50_000
CONCURRENCY = int(ARGS[1]) if len(ARGS) > 1 else 500

app = pageq.App(schema="bench_drain")
seen: set[int] = set()


@app.task(queue="bench")
async def noop(ctx: pageq.Context, i: int) -> None:
    seen.add(ctx.job.id)


async def main() -> None:
    app.drop_schema()
    app.migrate()
    if DEAD_WEBHOOK:
        app.webhooks.create("https://example.com/pageq-bench", ["job.dead"])
    started = time.perf_counter()
    for chunk in range(0, N, 10_000):
        await app.enqueue_many_async([noop.job(i=i) for i in range(chunk, min(N, chunk + 10_000))])
    enqueue_s = time.perf_counter() - started
    worker = app.worker(["bench"], CONCURRENCY, poll_interval=0.05)
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
    print(
        f"enqueue: {N / enqueue_s:,.0f} jobs/s   drain (1 process, concurrency {CONCURRENCY}): "
        f"{N / drain_s:,.0f} jobs/s   executed {len(seen)} distinct of {N}"
        + ("   (one job.dead webhook)" if DEAD_WEBHOOK else "")
    )


asyncio.run(main())
