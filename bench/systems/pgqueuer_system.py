"""PgQueuer (pinned in the `bench` extra) with its documented best settings for short no-op jobs.

asyncpg, uvloop, one direct asyncpg connection per QueueManager (its docs: "a single connection for
QueueManager"), several QueueManagers per process (its own tools/benchmark.py runs 5 dequeue tasks),
batch_size 200 (a sweep of 1-8 managers x batch 50-200 found 2 x 200 best, all within noise),
`pgq autovac` applied, durability `durable` (the default: every table logged).
"""

from __future__ import annotations

import asyncio
import os
import signal
import struct
import sys
from collections.abc import Sequence
from importlib.metadata import version

import pgqueuer  # noqa: F401 - ImportError here makes the harness skip this system

from bench.systems.base import Producer, System

ENTRYPOINT = "noop"
PAYLOAD = struct.Struct("<qq")  # job id, enqueued_ns
MANAGERS = int(os.environ.get("BENCH_PGQUEUER_MANAGERS", "2"))  # env: for sweeps
BATCH = int(os.environ.get("BENCH_PGQUEUER_BATCH", "200"))
DEQUEUE_TIMEOUT = 30.0  # its default: NOTIFY wakes the managers, polling is a fallback
CHUNK = 50_000


async def connect(dsn: str):  # type: ignore[no-untyped-def]
    import asyncpg

    return await asyncpg.connect(dsn=dsn)


class PgQueuerProducer(Producer):
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    async def open(self) -> None:
        from pgqueuer import AsyncpgDriver, Queries

        self.conn = await connect(self.dsn)
        self.queries = Queries(AsyncpgDriver(self.conn))

    async def enqueue_many(self, ids: Sequence[int], enqueued_ns: int) -> None:
        pack = PAYLOAD.pack
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            n = len(chunk)
            await self.queries.enqueue([ENTRYPOINT] * n, [pack(i, enqueued_ns) for i in chunk], [0] * n)

    async def enqueue_one(self, job_id: int, enqueued_ns: int) -> None:
        await self.queries.enqueue(ENTRYPOINT, PAYLOAD.pack(job_id, enqueued_ns), 0)

    async def close(self) -> None:
        await self.conn.close()


class PgQueuerSystem(System):
    name = "pgqueuer"

    def version(self) -> str:
        return version("pgqueuer")

    def settings(self) -> dict[str, object]:
        return {
            "driver": f"asyncpg {version('asyncpg')} (one connection per QueueManager), uvloop",
            "queue_managers_per_process": MANAGERS,
            "batch_size": BATCH,
            "max_concurrent_tasks": "unset (default)",
            "dequeue_timeout_s": DEQUEUE_TIMEOUT,
            "enqueue": "Queries.enqueue with lists (one UNNEST statement); W3: scalar Queries.enqueue",
            "durability": "durable (default)",
            "autovacuum": "pgq autovac (Queries.optimize_autovacuum)",
        }

    def install(self, dsn: str) -> None:
        asyncio.run(_install(dsn))

    def producer(self, dsn: str) -> Producer:
        return PgQueuerProducer(dsn)

    def worker_argv(self, dsn: str) -> list[str]:
        return [self.python(), "-m", "bench.systems.pgqueuer_system", dsn]

    def claim_batch(self) -> int:
        return BATCH


async def _install(dsn: str) -> None:
    from pgqueuer import AsyncpgDriver, Queries

    conn = await connect(dsn)
    try:
        queries = Queries(AsyncpgDriver(conn))
        await queries.install()
        await queries.optimize_autovacuum()
    finally:
        await conn.close()


async def _work(dsn: str) -> None:
    from datetime import timedelta

    from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager

    from bench.recorder import Recorder

    record = Recorder.from_env().record
    unpack = PAYLOAD.unpack
    managers = []
    for _ in range(MANAGERS):
        qm = QueueManager(Queries(AsyncpgDriver(await connect(dsn))))

        @qm.entrypoint(ENTRYPOINT)
        async def noop(job: Job) -> None:
            record(*unpack(job.payload))  # type: ignore[arg-type]

        managers.append(qm)

    def stop() -> None:
        for qm in managers:
            qm.shutdown.set()

    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop)
    timeout = timedelta(seconds=DEQUEUE_TIMEOUT)
    await asyncio.gather(*(qm.run(batch_size=BATCH, dequeue_timeout=timeout) for qm in managers))


if __name__ == "__main__":
    import uvloop

    uvloop.run(_work(sys.argv[1]))
