"""The app chaos workers run (``chaos.app:app``): handlers that log each execution and write one effect.

``work`` writes its effect in ``ctx.transaction()`` (committed with the job's completion: exactly once);
``work_plain`` writes it on its own connection before returning (at-least-once: a re-execution shows in
`exec_log` and, if the effect was already written, in `effect_dups`). ``fail`` makes the first attempts
raise; ``permanent`` raises `NonRetryableError` (straight to the DLQ). ``poison`` kills its process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import psycopg

import pageq
from pageq import failpoint

app = pageq.App()
DSN = os.environ.get("PAGEQ_DSN", "")
SCHEMA = os.environ.get("PAGEQ_SCHEMA", "pageq")
MAX_ATTEMPTS = int(os.environ.get("CHAOS_MAX_ATTEMPTS", "10"))
_conn: psycopg.AsyncConnection[Any] | None = None
_lock = asyncio.Lock()
if os.environ.get("CHAOS_LOG_STEPS"):  # R13 reads each maintenance step's term and span from the log
    logging.getLogger("pageq.maintenance").setLevel(logging.DEBUG)


async def side(sql: str, params: tuple[Any, ...]) -> Any:
    """Run ``sql`` on this process's own autocommit connection, reconnecting (the chaos cuts it)."""
    global _conn
    for attempt in range(50):
        try:
            async with _lock:
                if _conn is None or _conn.closed:
                    _conn = await psycopg.AsyncConnection.connect(DSN, autocommit=True, connect_timeout=3)
                cur = await _conn.execute(sql.replace("{s}", SCHEMA), params)
                return await cur.fetchone() if cur.description else None
        except psycopg.OperationalError:
            if _conn is not None:
                await _conn.close()
            _conn = None
            await asyncio.sleep(min(2.0, 0.05 * 2**attempt))
    raise RuntimeError("ledger connection unavailable")


async def _start(ctx: pageq.Context, uid: str) -> int:
    row = await side(
        "INSERT INTO {s}.exec_log (uid, job_id, attempt, pid, t_start) "
        "VALUES (%s, %s, %s, %s, %s) RETURNING id",
        (uid, ctx.job.id, ctx.attempt, os.getpid(), time.time()),
    )
    if failpoint.ACTIVE:
        failpoint.hit("mid_handler", ctx.attempt)
    return int(row[0])


async def _effect(conn: Any, ctx: pageq.Context, uid: str) -> None:
    cur = await conn.execute(
        f"INSERT INTO {SCHEMA}.effects (uid, job_id, pid, attempt) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT DO NOTHING RETURNING uid",
        (uid, ctx.job.id, os.getpid(), ctx.attempt),
    )
    if await cur.fetchone() is None:
        await side("INSERT INTO {s}.effect_dups (uid, job_id, pid) VALUES (%s, %s, %s)",
                   (uid, ctx.job.id, os.getpid()))  # fmt: skip


@app.task(queue="chaos", max_attempts=MAX_ATTEMPTS)
async def work(ctx: pageq.Context, uid: str, ms: int = 0, fail: int = 0, permanent: bool = False) -> None:
    """Log, sleep ``ms``, maybe fail, then write the effect together with the completion."""
    row = await _start(ctx, uid)
    await asyncio.sleep(ms / 1000)
    if permanent:
        raise pageq.NonRetryableError("planned permanent failure")
    if ctx.attempt <= fail:
        raise RuntimeError(f"planned failure {ctx.attempt}/{fail}")
    async with ctx.transaction() as conn:
        await _effect(conn, ctx, uid)
    await side("UPDATE {s}.exec_log SET t_end = %s WHERE id = %s", (time.time(), row))


@app.task(queue="chaos", max_attempts=MAX_ATTEMPTS)
async def work_plain(
    ctx: pageq.Context, uid: str, ms: int = 0, fail: int = 0, permanent: bool = False
) -> None:
    """Like `work`, but the effect is written outside the job's transaction (at-least-once)."""
    row = await _start(ctx, uid)
    await asyncio.sleep(ms / 1000)
    if permanent:
        raise pageq.NonRetryableError("planned permanent failure")
    if ctx.attempt <= fail:
        raise RuntimeError(f"planned failure {ctx.attempt}/{fail}")
    await _plain_effect(ctx, uid)
    await side("UPDATE {s}.exec_log SET t_end = %s WHERE id = %s", (time.time(), row))


async def _plain_effect(ctx: pageq.Context, uid: str) -> None:
    row = await side(
        "INSERT INTO {s}.effects (uid, job_id, pid, attempt) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT DO NOTHING RETURNING uid",
        (uid, ctx.job.id, os.getpid(), ctx.attempt),
    )
    if row is None:
        await side("INSERT INTO {s}.effect_dups (uid, job_id, pid) VALUES (%s, %s, %s)",
                   (uid, ctx.job.id, os.getpid()))  # fmt: skip


@app.task(queue="chaos", max_attempts=MAX_ATTEMPTS)
async def poison(ctx: pageq.Context, uid: str) -> None:
    """Kills the worker process running it (a poison pill)."""
    await _start(ctx, uid)
    os._exit(1)


@app.task(queue="chaos", max_attempts=MAX_ATTEMPTS)
def long_sync(ctx: pageq.Context, uid: str, seconds: float) -> None:
    """A sync handler that runs ``seconds`` and then tries to commit its effect with the completion."""
    time.sleep(seconds)
    with ctx.transaction() as conn:
        conn.execute(
            f"INSERT INTO {SCHEMA}.effects (uid, job_id, pid, attempt) VALUES (%s, %s, %s, %s)",
            (uid, ctx.job.id, os.getpid(), ctx.attempt),
        )


@app.task(queue="chaos", max_attempts=MAX_ATTEMPTS)
async def long_once(ctx: pageq.Context, uid: str, ms: int, rest_ms: int = 0) -> None:
    """Runs ``ms`` on the uid's first execution and ``rest_ms`` on later ones (a job released at shutdown
    and claimed again, attempt not counted), then writes its effect with the completion."""
    row = await _start(ctx, uid)
    first = await side("SELECT count(*) FROM {s}.exec_log WHERE uid = %s", (uid,))
    await asyncio.sleep((ms if first[0] == 1 else rest_ms) / 1000)
    async with ctx.transaction() as conn:
        await _effect(conn, ctx, uid)
    await side("UPDATE {s}.exec_log SET t_end = %s WHERE id = %s", (time.time(), row))


def _spin(seconds: float) -> None:
    """Pure-Python CPU work: holds the GIL in 5 ms slices, starving the event loop's thread."""
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += sum(i * i for i in range(500))


def _sync_side(sql: str, params: tuple[Any, ...]) -> Any:
    with psycopg.connect(DSN, autocommit=True) as conn:
        cur = conn.execute(sql.replace("{s}", SCHEMA), params)
        return cur.fetchone() if cur.description else None


LEASE_OF = "SELECT extract(epoch FROM lease_expires_at) FROM {s}.jobs WHERE id = %s"


@app.task(queue="chaos", max_attempts=MAX_ATTEMPTS)
def long_cpu(ctx: pageq.Context, uid: str, seconds: float, spin: float = 0.0) -> None:
    """A long sync handler: ``spin`` seconds of CPU-bound Python, then sleeps until ``seconds`` passed; logs
    its execution and its lease's expiry at start and end (`exec_log`, `leases`), writes its effect with
    the completion."""
    started = time.time()
    row = _sync_side(
        "INSERT INTO {s}.exec_log (uid, job_id, attempt, pid, t_start) VALUES (%s, %s, %s, %s, %s) "
        "RETURNING id",
        (uid, ctx.job.id, ctx.attempt, os.getpid(), started),
    )
    first = _sync_side(LEASE_OF, (ctx.job.id,))
    _spin(spin)
    time.sleep(max(0.0, seconds - (time.time() - started)))
    last = _sync_side(LEASE_OF, (ctx.job.id,))
    _sync_side("INSERT INTO {s}.leases (uid, first, last) VALUES (%s, %s, %s)", (uid, first[0], last[0]))
    with ctx.transaction() as conn:
        conn.execute(
            f"INSERT INTO {SCHEMA}.effects (uid, job_id, pid, attempt) VALUES (%s, %s, %s, %s)",
            (uid, ctx.job.id, os.getpid(), ctx.attempt),
        )
    _sync_side("UPDATE {s}.exec_log SET t_end = %s WHERE id = %s", (time.time(), row[0]))


@app.task(queue="chaos", max_attempts=2)
async def overrun(ctx: pageq.Context, uid: str, ms: int) -> None:
    """Outlasts its timeout on the first attempt (``ms``); the retry finishes at once."""
    row = await _start(ctx, uid)
    if ctx.attempt == 1:
        await asyncio.sleep(ms / 1000)
    async with ctx.transaction() as conn:
        await _effect(conn, ctx, uid)
    await side("UPDATE {s}.exec_log SET t_end = %s WHERE id = %s", (time.time(), row))
