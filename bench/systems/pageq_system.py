"""pageq (this repository): `App.enqueue_many` (one COPY-like statement) and an in-process worker daemon."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from importlib.metadata import version

from bench.systems.base import Producer, System

QUEUE = "bench"
SCHEMA = "pageq"
# Best settings for no-op async jobs on 2 cores (chosen by sweeping; see bench/README.md). The environment
# variables are for such sweeps.
CONCURRENCY = int(os.environ.get("BENCH_PAGEQ_CONCURRENCY", "1000"))
BATCH_SIZE = int(os.environ.get("BENCH_PAGEQ_BATCH", "500"))


def make_app(dsn: str):  # type: ignore[no-untyped-def]
    import pageq

    interval = os.environ.get("BENCH_PAGEQ_NOTIFY_INTERVAL")
    if interval is None:
        return pageq.App(dsn, schema=SCHEMA)
    return pageq.App(dsn, schema=SCHEMA, notify_interval=float(interval))


class PageqProducer(Producer):
    def __init__(self, dsn: str) -> None:
        from bench.systems import pageq_worker

        self.app = make_app(dsn)
        self.task = pageq_worker.register(self.app, recorder=None)

    async def enqueue_many(self, ids: Sequence[int], enqueued_ns: int) -> None:
        if ids:
            job = self.task.job
            await self.app.enqueue_many_async([job(i=i, t=enqueued_ns) for i in ids])

    async def enqueue_one(self, job_id: int, enqueued_ns: int) -> None:
        await self.task.enqueue_async(i=job_id, t=enqueued_ns)

    async def close(self) -> None:
        await self.app.aclose()
        await asyncio.to_thread(self.app.close)


class PageqSystem(System):
    name = "pageq"

    def version(self) -> str:
        return version("pageq")

    def settings(self) -> dict[str, object]:
        return {
            "driver": "psycopg 3 (async pool)",
            "worker": "App.worker run by pageq's run_forever (bench/systems/pageq_worker.py), uvloop",
            "handler": "async def, no ctx",
            "concurrency": CONCURRENCY,
            "batch_size": BATCH_SIZE,
            "enqueue": "App.enqueue_many_async (>= 200 jobs: COPY streamed in chunks of 2,000; else one "
            "INSERT); W3: task.enqueue_async",
            "rotation": "live-jobs partitions rotated every 20,000 jobs (default)",
            "audit": os.environ.get("BENCH_PAGEQ_AUDIT", "full (default)"),
            "history": "partition period "
            + (
                f"{os.environ['BENCH_PAGEQ_HISTORY_PERIOD']} s"
                if "BENCH_PAGEQ_HISTORY_PERIOD" in os.environ
                else "1 day"
            )
            + ", retention "
            + (
                f"{os.environ['BENCH_PAGEQ_RETENTION']} s"
                if "BENCH_PAGEQ_RETENTION" in os.environ
                else "7 days"
            ),
            "durability": "default (logged tables, synchronous_commit on)",
        }

    def install(self, dsn: str) -> None:
        app = make_app(dsn)
        try:
            app.migrate()
            if period := os.environ.get("BENCH_PAGEQ_HISTORY_PERIOD"):  # partitions that rotate within a run
                app.set_history_period(float(period))
                # the migration made day partitions (empty yet): drop them so the new period applies at once
                from datetime import UTC, datetime, timedelta

                from pageq.store import ops

                app.store.run(ops.history_drop(datetime.now(UTC) + timedelta(days=3), 1000))
            if level := os.environ.get("BENCH_PAGEQ_AUDIT"):  # off / actions / full (the default)
                app.security.audit_level(level)
        finally:
            app.close()

    def producer(self, dsn: str) -> Producer:
        return PageqProducer(dsn)

    def worker_argv(self, dsn: str) -> list[str]:
        return [self.python(), "-m", "bench.systems.pageq_worker", dsn, str(CONCURRENCY), str(BATCH_SIZE)]

    def claim_batch(self) -> int:
        return BATCH_SIZE
