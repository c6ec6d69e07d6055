"""A test app whose handlers record each execution in a ledger table (for exactly-once counting)."""

from __future__ import annotations

import asyncio
import os
import time

import psycopg

import pageq

app = pageq.App()
DSN = os.environ.get("PAGEQ_DSN", "")
SCHEMA = os.environ.get("PAGEQ_SCHEMA", "pageq")


def record(job_id: int, note: str) -> None:
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(
            f"INSERT INTO {SCHEMA}.ledger (job_id, pid, note) VALUES (%s, %s, %s)",
            (job_id, os.getpid(), note),
        )


@app.task(queue="ledger")
async def mark(ctx: pageq.Context, n: int) -> None:
    """Records one execution of the job, in the job's own transaction."""
    async with ctx.transaction() as conn:
        await conn.execute(
            f"INSERT INTO {SCHEMA}.ledger (job_id, pid, note) VALUES (%s, %s, 'mark')",
            (ctx.job.id, os.getpid()),
        )


@app.task(queue="slow", max_attempts=3)
def sleepy(ctx: pageq.Context, seconds: float) -> str:
    """Records its start, sleeps, records its end."""
    record(ctx.job.id, "start")
    time.sleep(seconds)
    record(ctx.job.id, "end")
    return "slept"


@app.task(queue="slow", max_attempts=3)
def stall_once(ctx: pageq.Context, seconds: float) -> str:
    """Like `sleepy`, but sleeps only on its first attempt, so a rescued retry finishes at once."""
    record(ctx.job.id, f"start {ctx.attempt}")
    if ctx.attempt == 1:
        time.sleep(seconds)
    record(ctx.job.id, f"end {ctx.attempt}")
    return "done"


@app.task(queue="limited")
async def nap(seconds: float) -> None:
    """Holds a slot for a while (the global concurrency test counts running jobs meanwhile)."""
    await asyncio.sleep(seconds)
