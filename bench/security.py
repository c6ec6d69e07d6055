"""Cost of security features: drain throughput with payload encryption and the full audit trail, as a
ratio to both off (the issue's goal: at least 70 %).

Usage: python bench/security.py [N] [CONCURRENCY] [ROUNDS]   (embedded PostgreSQL, or PAGEQ_DSN)
Each round runs the four configurations in turn (so drift hits them alike) on a fresh schema: enqueue N
no-op jobs in batches of 1,000, then drain them with one in-process worker. Prints jobs/s (median of rounds).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

import pageq
from pageq.security.crypto import Keyring, new_key

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
CONCURRENCY = int(sys.argv[2]) if len(sys.argv) > 2 else 200
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
CONFIGS = {  # name: (audit level, encrypted)
    "audit off, clear": ("off", False),
    "audit full, clear": ("full", False),
    "audit off, encrypted": ("off", True),
    "audit full, encrypted": ("full", True),
}
RING = Keyring.parse(f"k1:{new_key()}")


async def one(level: str, encrypted: bool) -> tuple[float, float]:
    app = pageq.App(schema="bench_security", keyring=RING if encrypted else None)

    @app.task(queue="bench")
    async def noop(card: str, i: int) -> dict[str, int]:
        return {"i": i}

    app.drop_schema()
    app.migrate()
    app.security.audit_level(level)
    started = time.perf_counter()
    for chunk in range(0, N, 1000):
        await app.enqueue_many_async(
            [noop.job(card="4111-1111", i=i) for i in range(chunk, min(N, chunk + 1000))]
        )
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
    await app.aclose()
    app.close()
    return N / enqueue_s, N / drain_s


async def main() -> None:
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in CONFIGS}
    for _ in range(ROUNDS):
        for name, (level, encrypted) in CONFIGS.items():
            results[name].append(await one(level, encrypted))
    base_e = statistics.median(r[0] for r in results["audit off, clear"])
    base_d = statistics.median(r[1] for r in results["audit off, clear"])
    print(f"N={N} concurrency={CONCURRENCY} rounds={ROUNDS} (medians)")
    for name, rows in results.items():
        enq, drain = statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)
        print(f"{name:24s} enqueue {enq:8,.0f} jobs/s ({enq / base_e:4.0%})   "
              f"drain {drain:8,.0f} jobs/s ({drain / base_d:4.0%})")  # fmt: skip
    pageq.App(schema="bench_security").drop_schema()


asyncio.run(main())
