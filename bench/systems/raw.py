"""The floor: a minimal hand-written SKIP LOCKED queue on psycopg 3, what raw SQL in Python reaches.

Enqueue: COPY (bulk) or one INSERT. Worker: one synchronous loop per process that, in ONE transaction,
deletes (acks) the previous batch and claims the next one (`UPDATE ... WHERE id IN (SELECT ... ORDER BY id
LIMIT n FOR UPDATE SKIP LOCKED)`), then runs the batch's no-op handlers; when the queue is empty it polls
every 1 ms (the busy-polling latency floor). No leases, retries, NOTIFY or bookkeeping.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Sequence
from importlib.metadata import version

from bench.systems.base import Producer, System

BATCH = 1000
IDLE_POLL = 0.001

SCHEMA_SQL = """
CREATE TABLE raw_jobs (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id bigint NOT NULL,
    enqueued_ns bigint NOT NULL,
    picked boolean NOT NULL DEFAULT false
) WITH (fillfactor = 70, autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_cost_delay = 0);
CREATE INDEX raw_jobs_ready ON raw_jobs (id) WHERE NOT picked;
"""

ACK_AND_CLAIM = """
WITH acked AS (DELETE FROM raw_jobs WHERE id = ANY(%(done)s))
UPDATE raw_jobs SET picked = true
WHERE id IN (SELECT id FROM raw_jobs WHERE NOT picked ORDER BY id LIMIT %(n)s FOR UPDATE SKIP LOCKED)
RETURNING id, job_id, enqueued_ns
"""


class RawProducer(Producer):
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    async def open(self) -> None:
        import psycopg

        self.conn = await psycopg.AsyncConnection.connect(self.dsn, autocommit=True)

    async def enqueue_many(self, ids: Sequence[int], enqueued_ns: int) -> None:
        async with (
            self.conn.transaction(),
            self.conn.cursor() as cur,
            cur.copy("COPY raw_jobs (job_id, enqueued_ns) FROM STDIN") as copy,
        ):
            for i in ids:
                await copy.write_row((i, enqueued_ns))

    async def enqueue_one(self, job_id: int, enqueued_ns: int) -> None:
        await self.conn.execute(
            "INSERT INTO raw_jobs (job_id, enqueued_ns) VALUES (%s, %s)", (job_id, enqueued_ns), prepare=True
        )

    async def close(self) -> None:
        await self.conn.close()


class RawSystem(System):
    name = "raw"

    def version(self) -> str:
        return f"psycopg {version('psycopg')}"

    def settings(self) -> dict[str, object]:
        return {
            "driver": "psycopg 3 (sync, prepared statements)",
            "claim": f"ack previous + claim next {BATCH} in one statement (UPDATE ... SKIP LOCKED)",
            "idle": f"poll every {IDLE_POLL * 1000:g} ms",
            "enqueue": "COPY; W3: single INSERT",
            "semantics": "at-least-once without leases (no recovery of a dead worker's jobs)",
        }

    def install(self, dsn: str) -> None:
        import psycopg

        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(SCHEMA_SQL)

    def producer(self, dsn: str) -> Producer:
        return RawProducer(dsn)

    def worker_argv(self, dsn: str) -> list[str]:
        return [self.python(), "-m", "bench.systems.raw", dsn]

    def claim_batch(self) -> int:
        return BATCH


def work(dsn: str) -> None:
    """The worker loop, until SIGTERM."""
    import psycopg

    from bench.recorder import Recorder

    record = Recorder.from_env().record
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    done: list[int] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        while not stopping:
            rows = conn.execute(ACK_AND_CLAIM, {"done": done, "n": BATCH}, prepare=True).fetchall()
            done = []
            for row_id, job_id, enqueued_ns in rows:
                record(job_id, enqueued_ns)  # the no-op handler
                done.append(row_id)
            if not rows:
                time.sleep(IDLE_POLL)
        if done:
            conn.execute("DELETE FROM raw_jobs WHERE id = ANY(%s)", (done,))


if __name__ == "__main__":
    work(sys.argv[1])
