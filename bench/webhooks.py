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
import sys
from pathlib import Path

import pageq

if __package__ in (None, ""):  # run as a script: python bench/NAME.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.configs import enqueue_then_drain, report

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
    return await enqueue_then_drain(app, lambda i: noop.job(i=i), N, CONCURRENCY, webhooks=serve)


async def main() -> None:
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in CONFIGS}
    for _ in range(ROUNDS):
        for name, (webhook, serve) in CONFIGS.items():
            results[name].append(await one(webhook, serve))
    report(results, "no webhook", f"N={N} concurrency={CONCURRENCY} rounds={ROUNDS}")
    pageq.App(schema=SCHEMA).drop_schema()


asyncio.run(main())
