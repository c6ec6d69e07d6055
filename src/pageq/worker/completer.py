"""The batch completer: writes the outcomes of many jobs in one transaction, then runs callbacks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from pageq import failpoint
from pageq.clock import Clock
from pageq.retry import Backoff
from pageq.store import Store, dispatch, ops
from pageq.task import call_hook
from pageq.worker.execution import Kind, Outcome

log = logging.getLogger("pageq.worker")
RETRY_WRITE = Backoff.exponential(base=2.0, cap=5.0, factor=0.05)


class Completer:
    """Collects outcomes; each flush is one transaction of at most three statements plus results."""

    def __init__(self, store: Store, clock: Clock, on_flushed: Callable[[list[Outcome]], None]) -> None:
        self._store = store
        self._clock = clock
        self._pending: list[Outcome] = []
        self._wake = asyncio.Event()
        self._on_flushed = on_flushed
        self._hooks: set[asyncio.Task[None]] = set()
        self._flushing = asyncio.Lock()  # a flush at shutdown must wait for the one in flight
        self.stale = 0

    def put(self, outcome: Outcome) -> None:
        self._pending.append(outcome)
        self._wake.set()

    @property
    def backlog(self) -> int:
        return len(self._pending)

    async def run(self) -> None:
        """Flush whenever something is pending; batches grow by themselves under load."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self.flush()

    async def flush(self) -> None:
        async with self._flushing:
            await self._flush()

    async def _flush(self) -> None:
        failures = 0
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                applied = await self._write(batch)
            except Exception as exc:  # keep the outcomes: the lease tokens make a repeated write harmless
                failures += 1
                delay = RETRY_WRITE.delay(failures)
                log.warning("completing %d jobs failed (%s); trying again in %.1f s", len(batch), exc, delay)
                self._pending[:0] = batch
                await asyncio.sleep(delay)
                continue
            failures = 0
            if failpoint.ACTIVE:
                failpoint.hit("after_ack_commit", min(o.ctx.job.attempts for o in batch))
            self._after(batch, applied)

    async def _write(self, batch: list[Outcome]) -> set[int]:
        now = self._clock.now()
        done = [o for o in batch if o.kind is Kind.SUCCESS]
        retry = [o for o in batch if o.kind is Kind.RETRY]
        dead = [o for o in batch if o.kind is Kind.DEAD]
        results = [o for o in batch if o.kind is Kind.DONE_IN_TX and o.result_json is not None]
        applied: set[int] = {o.ctx.job.id for o in batch if o.kind is Kind.DONE_IN_TX}
        async with self._store.atransaction() as conn:
            if done:
                op = ops.complete([o.ctx.lease for o in done], [o.result_json for o in done], now)
                ids: list[int] = await self._store.arun(op, conn)
                applied.update(ids)
            if retry:
                run_ats = [o.retry_at or now for o in retry]
                op2 = ops.retry([o.ctx.lease for o in retry], run_ats, [o.error_json or "{}" for o in retry])
                ids2: list[int] = await self._store.arun(op2, conn)
                applied.update(ids2)
                if failpoint.ACTIVE:
                    failpoint.hit("mid_retry_schedule", min(o.ctx.job.attempts for o in retry))
            if dead:
                op3 = ops.bury([o.ctx.lease for o in dead], [o.error_json or "{}" for o in dead], now)
                ids3: list[int] = await self._store.arun(op3, conn)
                applied.update(ids3)
                if failpoint.ACTIVE:
                    failpoint.hit("mid_dlq_move", min(o.ctx.job.attempts for o in dead))
            for o in results:
                await self._store.arun(ops.set_result(o.ctx.lease, o.result_json or "null"), conn)
            # groups and dependents of the finished jobs, settled in the same transaction (ctx.transaction()
            # settled those of the jobs it completed)
            linked = [o.ctx.job for o in batch if o.ctx.job.linked and o.kind in (Kind.SUCCESS, Kind.DEAD)]
            if linked:
                finished = [job for job in linked if job.id in applied]
                groups = sorted({job.group_key for job in finished if job.group_key is not None})
                await self._store.arun(dispatch.resolve([job.id for job in finished], groups, now), conn)
        return applied

    def _after(self, batch: list[Outcome], applied: set[int]) -> None:
        for outcome in batch:
            if outcome.ctx.job.id not in applied:
                self.stale += 1
                log.info("stale acknowledgement of job %d ignored (lease lost)", outcome.ctx.job.id)
                continue
            self._run_hook(outcome)
        self._on_flushed(batch)

    def _run_hook(self, outcome: Outcome) -> None:
        task = outcome.ctx.app.tasks.get(outcome.ctx.job.task)
        if task is None:
            return
        hook: Any
        value: object
        if outcome.kind in (Kind.SUCCESS, Kind.DONE_IN_TX):
            hook, value = task.on_success, outcome.result
        elif outcome.kind is Kind.RETRY:
            hook, value = task.on_failure, outcome.exc
        else:
            hook, value = task.on_dead, outcome.exc
        if hook is None:
            return
        running = asyncio.create_task(self._guarded(hook, outcome, value))
        self._hooks.add(running)
        running.add_done_callback(self._hooks.discard)

    async def _guarded(self, hook: Any, outcome: Outcome, value: object) -> None:
        try:
            await call_hook(hook, outcome.ctx, value)
        except Exception:
            log.exception("callback of job %d failed", outcome.ctx.job.id)

    async def drain_hooks(self, timeout: float) -> None:
        if self._hooks:
            await asyncio.wait(list(self._hooks), timeout=timeout)
