"""Run one claimed job's handler and turn what happened into an `Outcome`."""

from __future__ import annotations

import asyncio
import functools
import importlib
import json
import traceback
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from pageq.context import Context
from pageq.errors import JobTimeoutError, NonRetryableError, SerializationError
from pageq.retry import DEFAULT_BACKOFF
from pageq.security.crypto import DecryptError, is_encrypted, seal_error
from pageq.task import Task
from pageq.types import dump_json

MAX_ERROR = 2_000
MAX_ENTRY = 8_192
"""Bytes of one error entry (as JSON, before encryption) at most: the error text is cut to `MAX_ERROR`
characters and the traceback keeps its tail, whatever fits."""


class Kind(Enum):
    SUCCESS = "success"
    RETRY = "retry"
    DEAD = "dead"
    DONE_IN_TX = "done_in_tx"  # ctx.transaction() already completed the job


FAILED = frozenset({Kind.RETRY, Kind.DEAD})


@dataclass
class Outcome:
    """How an attempt ended, ready for the completer to write."""

    ctx: Context
    kind: Kind
    result: Any = None
    result_json: str | None = None
    error_json: str | None = None
    retry_at: datetime | None = None
    exc: BaseException | None = None


@dataclass(frozen=True)
class Pools:
    threads: Executor
    processes: Executor | None


def _call_in_process(module: str, attr: str, args: dict[str, Any]) -> Any:
    task = getattr(importlib.import_module(module), attr)
    return task.fn(**args)


async def _invoke(task: Task, ctx: Context, pools: Pools) -> Any:
    args = ctx.job.args
    lead = (ctx,) if task.wants_context else ()
    if task.executor == "async":
        return await task.fn(*lead, **args)
    loop = asyncio.get_running_loop()
    if task.executor == "process" and pools.processes is not None:
        entry = functools.partial(_call_in_process, task.fn.__module__, task.fn.__name__, args)
        return await loop.run_in_executor(pools.processes, entry)
    return await loop.run_in_executor(pools.threads, functools.partial(task.fn, *lead, **args))


async def execute(ctx: Context, pools: Pools) -> Outcome:
    """Run the handler of ``ctx.job`` with its timeout; never raises except on cancellation."""
    job = ctx.job
    ring = ctx.app.keyring
    try:
        if is_encrypted(job.args):  # the claim decrypted what it could: this job cannot be decrypted
            if ring is None:
                raise DecryptError(f"the args of job {job.id} are encrypted and this worker has no keyring")
            ring.decrypt(job.args, "args", job.id, job.queue, job.task)  # raises with the reason
            raise DecryptError(f"the args of job {job.id} cannot be decrypted")
        task = ctx.app.get_task(job.task)
        if ring is not None and not job.sealed and not task.accept_clear:
            raise DecryptError(
                f"the args of job {job.id} are not encrypted and task {task.name!r} does not accept_clear"
            )
        if job.timeout:
            try:
                result = await asyncio.wait_for(_invoke(task, ctx, pools), job.timeout)
            except TimeoutError:
                raise JobTimeoutError(f"timed out after {job.timeout:g} s") from None
        else:
            result = await _invoke(task, ctx, pools)
        result_json = None if result is None else dump_json(f"result of job {job.id}", result)
        if ring is not None and result_json is not None:
            result_json = ring.encrypt_json(result_json, "result", job.id, job.queue, job.task)
    except (asyncio.CancelledError, GeneratorExit):
        raise
    except BaseException as exc:  # the handler's failure, whatever it is, is the job's
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            exc = RuntimeError(f"handler raised {type(exc).__name__}")
        return failure(ctx, exc)
    kind = Kind.DONE_IN_TX if ctx.completed else Kind.SUCCESS
    return Outcome(ctx, kind, result=result, result_json=result_json)


def error_record(ctx: Context, exc: BaseException, now: datetime) -> dict[str, Any]:
    text = f"{type(exc).__name__}: {exc}"[:MAX_ERROR]
    trace = "".join(traceback.format_exception(exc))
    record = {"attempt": ctx.job.attempts, "error": text, "traceback": "", "worker": ctx.worker_id,
              "at": now.isoformat()}  # fmt: skip
    record["traceback"] = _tail(trace, MAX_ENTRY - len(json.dumps(record).encode()) + 2)
    if isinstance(exc, DecryptError):  # says nothing secret; kept in clear with its reason
        return record | {"traceback": None, "reason": exc.reason}
    ring, job = ctx.app.keyring, ctx.job
    return record if ring is None else seal_error(ring, record, job.id, job.queue, job.task)


def _tail(text: str, room: int) -> str:
    """A tail of ``text`` whose JSON string takes at most ``room`` bytes (the end of a traceback is where it
    was raised). Each character takes at least one byte, so dropping ``excess`` more characters is enough."""
    cut = text[-(room - 2) :] if room > 2 else ""
    excess = len(json.dumps(cut).encode()) - room
    return cut[excess:] if excess > 0 else cut


def failure(ctx: Context, exc: BaseException) -> Outcome:
    """Retry with backoff, or bury when attempts are spent or the error says it is permanent."""
    job = ctx.job
    now = ctx._clock.now()
    if ctx.completed:
        return Outcome(ctx, Kind.DONE_IN_TX, exc=exc)
    record = dump_json("error", error_record(ctx, exc, now))
    permanent = isinstance(exc, NonRetryableError | SerializationError)
    if permanent or job.attempts >= job.max_attempts:
        return Outcome(ctx, Kind.DEAD, error_json=record, exc=exc)
    task = ctx.app.tasks.get(job.task)
    policy = task.retry if task is not None else DEFAULT_BACKOFF
    retry_at = now + timedelta(seconds=policy.delay(job.attempts))
    return Outcome(ctx, Kind.RETRY, error_json=record, retry_at=retry_at, exc=exc)
