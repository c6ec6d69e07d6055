"""Procrastinate (pinned in the `bench` extra) with its documented best settings for short no-op jobs.

- Driver: `PsycopgConnector` (psycopg 3, async, a psycopg_pool pool), the connector its docs recommend for
  async use (docs/howto/basics/connector.md); the pool is sized so that every sub-worker has a connection.
- Worker: one `App.run_worker_async` per process with `concurrency` sub-workers (docs/howto/concurrency.md:
  launch async sub-workers to increase throughput; its example uses 30). Its fetch loop claims one job per
  statement, so concurrency only overlaps the finish of one job with the fetch of the next: measured here
  (W2-1, 3,000 jobs) 1: ~180/s, 4: ~210/s, 10: ~370/s, 30: ~320-360/s, hence 10. The handler is an `async def`
  task, so no thread hop (sync tasks run in a thread). `listen_notify=True` (the default: LISTEN/NOTIFY
  wakes the worker at once, "Provides lower latency"), `fetch_job_polling_interval` kept at its default
  5 s, which its docstring says is only a fallback with listen_notify on. `delete_jobs="successful"`
  (docs/howto/production/delete_finished_jobs.md) so finished rows do not pile up in procrastinate_jobs.
- Enqueue: `batch_defer_async` (docs/howto/basics/batch_defer.md: one `procrastinate_defer_jobs_v1` call,
  one transaction, for many jobs), split into chunks; W3: `defer_async`.
- Schema: `SchemaManager.apply_schema_async` (its own schema applier, `procrastinate schema --apply`).
- Durability: the defaults (logged tables, synchronous_commit as the server has it).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from importlib.metadata import version

import procrastinate  # ImportError here makes the harness skip this system

from bench.systems.base import Producer, System

TASK = "bench_noop"
QUEUE = "bench"
CONCURRENCY = int(os.environ.get("BENCH_PROCRASTINATE_CONCURRENCY", "10"))  # env: for sweeps
POLLING_INTERVAL = float(os.environ.get("BENCH_PROCRASTINATE_POLL", "5.0"))  # its default
DELETE_JOBS = os.environ.get("BENCH_PROCRASTINATE_DELETE", "successful")
CHUNK = int(os.environ.get("BENCH_PROCRASTINATE_CHUNK", "5000"))
# sub-workers each hold a connection while finishing a job; + the fetch loop, heartbeat and abort polling.
# LISTEN uses a standalone connection outside the pool.
POOL_SIZE = CONCURRENCY + 3


def make_app(dsn: str, pool_size: int = 2) -> procrastinate.App:
    """An App on `dsn` with the psycopg 3 async connector (not opened)."""
    return procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=dsn, min_size=pool_size, max_size=pool_size)
    )


class ProcrastinateProducer(Producer):
    def __init__(self, dsn: str) -> None:
        self.app = make_app(dsn)

    async def open(self) -> None:
        await self.app.open_async()
        self.deferrer = self.app.configure_task(TASK, queue=QUEUE)

    async def enqueue_many(self, ids: Sequence[int], enqueued_ns: int) -> None:
        for start in range(0, len(ids), CHUNK):
            await self.deferrer.batch_defer_async(
                *[{"job_id": i, "enqueued_ns": enqueued_ns} for i in ids[start : start + CHUNK]]
            )

    async def enqueue_one(self, job_id: int, enqueued_ns: int) -> None:
        await self.deferrer.defer_async(job_id=job_id, enqueued_ns=enqueued_ns)

    async def close(self) -> None:
        await self.app.close_async()


class ProcrastinateSystem(System):
    name = "procrastinate"

    def version(self) -> str:
        return version("procrastinate")

    def settings(self) -> dict[str, object]:
        return {
            "driver": f"PsycopgConnector (psycopg {version('psycopg')} async, pool of {POOL_SIZE})",
            "worker": "one App.run_worker_async per process, async def task",
            "concurrency": CONCURRENCY,
            "listen_notify": True,
            "fetch_job_polling_interval_s": POLLING_INTERVAL,
            "delete_jobs": DELETE_JOBS,
            "fetch": "one job per procrastinate_fetch_job_v2 call (its only mode)",
            "enqueue": f"batch_defer_async in chunks of {CHUNK}; W3: defer_async",
            "schema": "SchemaManager.apply_schema_async",
            "durability": "default (logged tables, synchronous_commit as the server)",
        }

    def install(self, dsn: str) -> None:
        asyncio.run(_install(dsn))

    def producer(self, dsn: str) -> Producer:
        return ProcrastinateProducer(dsn)

    def worker_argv(self, dsn: str) -> list[str]:
        return [self.python(), "-m", "bench.systems.procrastinate_worker", dsn]

    def claim_batch(self) -> int:
        return 1


async def _install(dsn: str) -> None:
    app = make_app(dsn, pool_size=1)
    async with app.open_async():
        await app.schema_manager.apply_schema_async()
