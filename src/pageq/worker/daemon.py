"""The worker daemon: claims jobs into free slots, runs them, completes them in batches."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pageq import failpoint
from pageq.context import Context
from pageq.errors import DatabaseError, InvalidOptionError
from pageq.publishing import apublish
from pageq.retry import Backoff
from pageq.security.acl import Action
from pageq.store import Listener, Store, dispatch, ops
from pageq.types import Job, check_name
from pageq.webhooks import listeners
from pageq.webhooks.deliver import close_clients
from pageq.worker import maintenance
from pageq.worker.completer import Completer
from pageq.worker.controls import QueueControls
from pageq.worker.deliveries import Deliveries
from pageq.worker.eager import start_eager
from pageq.worker.execution import FAILED, Outcome, Pools, execute
from pageq.worker.memory import resident_memory

if TYPE_CHECKING:
    from pageq.app import App

log = logging.getLogger("pageq.worker")
T = TypeVar("T")
RECONNECT = Backoff.exponential(base=2.0, cap=5.0, factor=0.05)
"""Waits between attempts to reach a database that does not answer: 0.1 s doubling up to 5 s, +-10 %."""


@dataclass(frozen=True)
class WorkerOptions:
    """Timings of a worker, in seconds, and its switches. Defaults suit production; tests shorten them."""

    lease: float = 30.0
    heartbeat: float | None = None  # default lease / 3
    poll_interval: float = 1.0
    fetch_cooldown: float = 0.002
    hot_window: float = 0.05
    batch_size: int = 500
    grace: float = 30.0
    maintenance_interval: float = 1.0
    retention: float = 7 * 86400.0
    controls_interval: float = 1.0  # how often queue controls are re-read (and the load published)
    limited_poll: float = 0.05  # poll interval of queues with a concurrency or rate limit
    crash_limit: int = ops.CRASH_LIMIT
    webhooks: bool = True  # a worker acting as the owner also serves the webhook deliveries' queue

    def __post_init__(self) -> None:
        if self.lease <= 0 or self.poll_interval <= 0 or self.grace < 0 or self.batch_size < 1:
            raise InvalidOptionError("lease, poll_interval and batch_size must be positive, grace >= 0")
        if self.crash_limit < 1:
            raise InvalidOptionError("crash_limit must be at least 1")

    @property
    def heartbeat_every(self) -> float:
        return self.heartbeat or self.lease / 3


@dataclass
class Running:
    """A claimed job: its context, its handler while that runs (None once it has returned), and when
    (``time.monotonic``) its lease ends at the latest, counted from before the claim or heartbeat was sent."""

    ctx: Context
    handler: asyncio.Task[None] | None
    deadline: float


class Worker:
    """Runs jobs of some queues with ``concurrency`` slots. Use ``pageq worker`` or `App.run_worker`."""

    def __init__(
        self, app: App, queues: Sequence[str] = ("default",), concurrency: int = 10,
        worker_id: str | None = None, **options: Any,
    ) -> None:  # fmt: skip
        if concurrency < 1:
            raise InvalidOptionError("concurrency must be at least 1")
        self.app = app
        self.options = dataclasses.replace(WorkerOptions(), **options)
        self.queues = [check_name("queue", q) for q in queues]
        self.concurrency = concurrency
        self.id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        db = app.database
        # a short wait for a pooled connection: after a server restart, a request that waited while the pool
        # gave up reconnecting must fail soon, so that the next one makes the pool try again
        self.store = Store(
            db.dsn,
            app.schema,
            max_size=min(4 + concurrency, 40),
            prepare=not db.pooled,
            principal=app.principal,
            wait=5.0,
        )
        self.clock = app.clock
        self.active: dict[int, Running] = {}
        self.busy = 0
        self.stale = 0
        self._stop = asyncio.Event()
        self._immediate = asyncio.Event()
        self._wake = asyncio.Event()
        self._slot = asyncio.Event()
        self._hot_until = 0.0
        self._handlers: set[asyncio.Task[None]] = set()
        self.completer = Completer(self.store, self.clock, self._flushed)
        self.pools = Pools(ThreadPoolExecutor(concurrency, thread_name_prefix="pageq-job"), None)
        self.claimed = 0  # jobs claimed
        self.claims = 0  # claim statements run (empty ones included)
        self.fenced = 0
        self.suspect = max(1, self.options.crash_limit - 1)  # crashes after which a job runs alone
        self._isolated: int | None = None  # the suspect job running alone in this worker
        self._suspects_due = False
        self._suspect_check_at = 0.0
        self.processed = 0  # attempts finished (acknowledged), whatever the outcome
        self.failed = 0  # of those, the failed ones (retried or dead)
        self.started = asyncio.Event()
        self.controls = QueueControls(self.queues)
        self.deliveries = Deliveries(self)
        self._refresh_now = asyncio.Event()
        self.leading = False  # this worker holds the maintenance leadership (maintenance.run says)
        self.events_ready = asyncio.Event()  # set while this worker's event stream is registered

    # ----- lifecycle
    def stop(self, *, immediate: bool = False) -> None:
        """Stop claiming and drain (within the grace period); ``immediate`` releases running jobs now."""
        self._stop.set()
        if immediate:
            self._immediate.set()
        self._wake.set()
        self._slot.set()

    async def run(self) -> None:
        """Work until `stop` is called, then shut down gracefully."""
        if any(t.executor == "process" for t in self.app.tasks.values()):
            self.pools = Pools(self.pools.threads, ProcessPoolExecutor())
        await self._register()
        await self._refresh()
        listen = self.app.database.listen_target
        if listen is None:  # behind a transaction pooler without a direct DSN: polling only
            log.info(
                "no LISTEN (pooled connections, no listen DSN): polling every %ss", self.options.poll_interval
            )
        loops = [
            *([asyncio.create_task(self._listen(listen), name="pageq-listen")] if listen else []),
            asyncio.create_task(self._watch_controls(), name="pageq-controls"),
            asyncio.create_task(self._heartbeat(), name="pageq-heartbeat"),
            asyncio.create_task(maintenance.run(self), name="pageq-maintenance"),
            asyncio.create_task(self.completer.run(), name="pageq-completer"),
            *(
                [asyncio.create_task(listeners.run(self), name="pageq-handlers")]
                if self.app.event_handlers
                else []
            ),
        ]
        producer = asyncio.create_task(self._produce(), name="pageq-producer")
        self.started.set()
        log.info("worker %s started: queues=%s concurrency=%d", self.id, self.queues, self.concurrency)
        stopped = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait([stopped, producer, *loops], return_when=asyncio.FIRST_COMPLETED)
            crashed = [t for t in (producer, *loops) if t.done() and not t.cancelled() and t.exception()]
            if crashed:
                log.error("worker loop %s crashed; stopping", crashed[0].get_name())
                error = crashed[0].exception()
                assert error is not None
                raise error
        finally:
            stopped.cancel()
            await self._stop_producer(producer)
            await self._drain()
            for loop in loops:
                loop.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await self._shutdown()

    async def _stop_producer(self, producer: asyncio.Task[None]) -> None:
        """Let the producer leave its loop instead of cancelling it: a claim in flight has committed (or
        will), and the jobs it returns must reach `active` so that the drain runs or releases them.
        Cancelled, it would drop them with their leases and hold them until the leases expire. A claim
        that does not return within the lease (a dead connection) is cancelled: its leases expire anyway."""
        self._stop.set()
        self._wake.set()
        self._slot.set()
        if not producer.done():
            await asyncio.wait([producer], timeout=self.options.lease)
        producer.cancel()
        await asyncio.gather(producer, return_exceptions=True)

    async def _register(self) -> None:
        status = await asyncio.to_thread(self.app.migration_status)
        if not status.up_to_date:
            raise DatabaseError(
                f"schema {self.app.schema!r} needs migrations {status.pending}: run `pageq migrate`"
            )
        now = self.clock.now()
        op = ops.worker_register(
            self.id, socket.gethostname(), os.getpid(), self.queues, self.concurrency, now
        )
        await self.store.arun(op)
        await self._check_durability()
        await self._publish()

    async def _publish(self) -> None:
        """Publish the app's tasks (and its routing rules, if it has any) for the SQL API; a role that may
        not (a restricted one) leaves that to the owner."""
        guard = self.app.guard
        if guard is not None and not guard.decide(Action.MANAGE, "*", "*").allowed:
            return
        try:
            await apublish(self.app, self.store, routes=bool(self.app.router.rules))
        except DatabaseError as exc:
            log.info("tasks not published for the SQL API (%s)", exc)

    async def _check_durability(self) -> None:
        fsync, synchronous_commit = await self.store.arun(ops.durability_settings())
        if fsync != "on" or synchronous_commit == "off":
            log.warning(
                "the database runs with fsync=%s, synchronous_commit=%s: jobs whose enqueue returned can "
                "be lost if the server crashes", fsync, synchronous_commit,
            )  # fmt: skip

    async def _drain(self) -> None:
        """Let running handlers finish within the grace period, then release what is left."""
        if self._handlers and not self._immediate.is_set():
            log.info("draining %d running jobs (grace %.0f s)", len(self._handlers), self.options.grace)
            immediate = asyncio.create_task(self._immediate.wait())
            await self._wait_handlers(immediate)
            immediate.cancel()
        for handler in list(self._handlers):
            handler.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self.completer.flush()
        leases = [run.ctx.lease for run in self.active.values() if not run.ctx.completed]
        if leases:
            released = await self._try(ops.release(leases, self.clock.now()))
            log.info("released %d unfinished jobs", len(released or []))
            self.active.clear()
        await self.completer.drain_hooks(timeout=5.0)

    async def _wait_handlers(self, immediate: asyncio.Task[bool]) -> None:
        deadline = time.monotonic() + self.options.grace
        while self._handlers and not immediate.done():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            await asyncio.wait(
                [*self._handlers, immediate], timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )

    async def _shutdown(self) -> None:
        await self._try(ops.leader_release(maintenance.LEADER, self.id))
        stale = self.clock.now() - dt.timedelta(seconds=max(60.0, self.options.lease * 4))
        await self._try(ops.worker_deregister(self.id, stale))
        await close_clients()
        await self.store.aclose()
        self.store.close()
        self.pools.threads.shutdown(wait=False, cancel_futures=True)
        if self.pools.processes is not None:
            self.pools.processes.shutdown(wait=False, cancel_futures=True)
        log.info("worker %s stopped", self.id)

    async def _try(self, op: ops.Op[T]) -> T | None:
        try:
            return await self.store.arun(op)
        except DatabaseError as exc:
            log.warning("%s failed: %s", op.query, exc)
            return None

    # ----- claiming
    async def _produce(self) -> None:
        waited = False
        failures = 0
        while not self._stop.is_set():
            if await self._suspect_turn():
                continue
            free = self.concurrency - self.busy
            if free <= 0 or self.completer.backlog > 10 * self.options.batch_size:
                await self._wait(self._slot, self.options.poll_interval)
                continue
            if self.busy and free < max(1, self.concurrency // 4) and not waited:
                waited = True  # let a few more slots free up so claims stay batched
                await self._wait(self._slot, self.options.fetch_cooldown)
                continue
            waited = False
            limit = min(free, self.options.batch_size)
            sent = time.monotonic()
            try:
                self.claims += 1
                jobs = await self._claim(limit)
            except DatabaseError as exc:
                failures += 1
                delay = RECONNECT.delay(failures)
                log.warning("claim failed (%s); trying again in %.1f s", exc, delay)
                await self._wait(self._stop, delay)
                continue
            failures = 0
            if failpoint.ACTIVE and jobs:
                failpoint.hit("after_claim_commit", min(job.attempts for job in jobs))
            for job in jobs:
                self._start(job, sent + self.options.lease)
            if len(jobs) < limit:
                hot = time.monotonic() < self._hot_until
                timeout = self.options.fetch_cooldown if hot else self.options.poll_interval
                if self.controls.locked:  # no one announces a freed slot or a new rate window
                    timeout = max(timeout, min(self.options.limited_poll, self.options.poll_interval))
                await self._wait(self._wake, timeout)

    async def _claim(self, limit: int) -> list[Job]:
        controls = self.controls
        now, lease, tasks, ring = self.clock.now(), self.options.lease, self._tasks(), self.app.keyring
        if not controls.limited:  # the hot path: no control, the plain claim
            if not controls.active:
                return []
            op = ops.claim(controls.active, limit, now, lease, self.id, tasks, ring, self.suspect)
            return await self.store.arun(op)
        async with self.store.atransaction() as conn:
            if controls.locked:
                await self.store.arun(dispatch.queues_lock(controls.locked), conn)
            op = dispatch.claim_controlled(
                controls.active, limit, now, lease, self.id, tasks, ring, self.suspect
            )
            return await self.store.arun(op, conn)

    def _tasks(self) -> list[str] | None:
        """With a principal: the registered task names it may work in all this worker's queues."""
        guard = self.app.guard
        if guard is None:
            return None
        return guard.workable(self.queues, [*self.app.tasks, *self.app._aliases])

    async def _suspect_turn(self) -> bool:
        """Run suspected poison pills (jobs whose worker vanished ``crash_limit - 1`` times) alone: the worker
        empties itself, claims one, and claims nothing else until it finished. True while normal claims
        wait. (Queues with a concurrency or rate limit are left out: their controlled claim takes such jobs
        like any other, limits first.)"""
        if self._isolated is not None:
            if self._isolated in self.active:
                await self._wait(self._slot, self.options.poll_interval)
                return True
            self._isolated = None
        queues = self.controls.active
        if not queues:
            return False
        now = time.monotonic()
        if not self._suspects_due and now >= self._suspect_check_at:
            # as often as an idle worker polls (at most every 5 s): an orphan that became a suspect should not
            # wait much longer than any other (the partial index jobs_suspect_idx makes the probe cheap)
            self._suspect_check_at = now + min(5.0, max(0.2, self.options.poll_interval))
            op = ops.suspects_waiting(queues, self.clock.now(), self.suspect, self._tasks())
            waiting = await self._try(op)
            self._suspects_due = waiting is True
        if not self._suspects_due:
            return False
        if self.busy or self.active:  # let the running jobs finish first
            await self._wait(self._slot, self.options.poll_interval)
            return True
        self._suspects_due = False
        sent = time.monotonic()
        op2 = ops.claim_suspect(
            queues,
            self.clock.now(),
            self.options.lease,
            self.id,
            self.suspect,
            self._tasks(),
            self.app.keyring,
        )
        for job in await self._try(op2) or []:
            log.warning("job %d crashed its workers %d times: running it alone", job.id, self.suspect)
            self._isolated = job.id
            self._start(job, sent + self.options.lease)
        return self._isolated is not None

    async def _wait(self, event: asyncio.Event, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        event.clear()

    def _start(self, job: Job, deadline: float) -> None:
        self.claimed += 1
        self.busy += 1
        ctx = Context(job, self.app, self.id, self.store, self.clock)
        run = self.active[job.id] = Running(ctx, None, deadline)
        handler = start_eager(self._handle(ctx))
        if handler is not None:  # it awaits something: it goes on as a Task
            run.handler = handler
            self._handlers.add(handler)
            handler.add_done_callback(self._handlers.discard)

    async def _handle(self, ctx: Context) -> None:
        try:
            outcome = await execute(ctx, self.pools)
        finally:
            self.busy -= 1
            self._slot.set()
        current = self.active.get(ctx.job.id)
        if current is not None and current.ctx is ctx and not ctx.fenced:
            if failpoint.ACTIVE:
                failpoint.hit("after_handler_before_ack", ctx.job.attempts)
            current.handler = None
            self.completer.put(outcome)

    def _flushed(self, batch: list[Outcome]) -> None:
        self.processed += len(batch)
        self.failed += sum(1 for outcome in batch if outcome.kind in FAILED)
        for outcome in batch:
            current = self.active.get(outcome.ctx.job.id)
            if current is not None and current.ctx is outcome.ctx:
                del self.active[outcome.ctx.job.id]

    # ----- wake-ups and leases
    async def _listen(self, target: str) -> None:
        """Wake the producer on notifications; after a lost connection, LISTEN again (with backoff) and poll
        once at once, which covers the notifications missed meanwhile."""
        listener = Listener(target, self.app.schema)
        failures = 0
        while True:
            try:
                await listener.connect()
                if failures:
                    log.info("listening again after %d failed attempts", failures)
                    self._wake.set()
                failures = 0
                async for queue in listener.notifications():
                    if queue in self.queues:  # a short list; it may grow (Deliveries)
                        self._hot_until = time.monotonic() + self.options.hot_window
                        self._wake.set()
                    elif queue.startswith("!"):
                        self._signal(queue)
            except DatabaseError as exc:
                failures += 1
                delay = RECONNECT.delay(failures)
                log.warning("%s; listening again in %.1f s", exc, delay)
                self._wake.set()  # poll meanwhile
                await asyncio.sleep(delay)
            finally:
                await listener.close()

    def _signal(self, message: str) -> None:
        """A control message on the channel: '!queues' (controls changed), '!webhooks' (one was created or
        enabled) or '!cancel:<job id>'."""
        kind, _, value = message.partition(":")
        if kind == "!queues":
            self._refresh_now.set()
        elif kind == "!webhooks":
            self.deliveries.due()
            self._refresh_now.set()
        elif kind == "!cancel" and value.isdigit():
            self._cancel_running(int(value))

    def _cancel_running(self, job_id: int) -> None:
        """The job was cancelled while we run it: flag it, and cancel its handler when it is async."""
        run = self.active.get(job_id)
        if run is None or run.ctx.completed:
            return
        run.ctx.cancelled = True
        task = self.app.tasks.get(run.ctx.job.task)
        if run.handler is not None and task is not None and task.executor == "async":
            log.info("job %d was cancelled; cancelling its handler", job_id)
            del self.active[job_id]
            run.handler.cancel()

    async def _watch_controls(self) -> None:
        while True:
            await self._wait(self._refresh_now, self.options.controls_interval)
            await self._refresh()

    async def _refresh(self) -> None:
        """Publish our load and re-read our queues' controls; a change applies to the next claim."""
        await self.deliveries.check()
        load = dispatch.WorkerLoad(self.processed, self.failed, resident_memory())
        op = dispatch.worker_refresh(self.id, self.busy, self.queues, self.clock.now(), load)
        controls = await self._try(op)
        if controls is not None:
            before = self.controls.active, self.controls.limited
            self.controls.update(controls)
            if (self.controls.active, self.controls.limited) != before:
                self._wake.set()

    async def _heartbeat(self) -> None:
        """Every heartbeat interval, renew the held leases and the worker's registration, each bounded by the
        interval, so a renewal is attempted on time even while the database does not answer."""
        every = self.options.heartbeat_every
        next_at = time.monotonic() + every
        while True:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at + every, time.monotonic())
            register = ops.worker_register(
                self.id, socket.gethostname(), os.getpid(), self.queues, self.concurrency, self.clock.now()
            )
            registration = self._bounded(register, every)
            await asyncio.gather(self._renew(every), registration)

    async def _renew(self, every: float) -> None:
        held = [run for run in self.active.values() if not run.ctx.completed]
        if not held:
            return
        sent = time.monotonic()
        op = ops.heartbeat([run.ctx.lease for run in held], self.clock.now(), self.options.lease)
        kept = await self._bounded(op, every)
        if kept is not None:
            still = set(kept)
            for run in held:
                run.deadline = max(run.deadline, sent + self.options.lease)
            self._fence([run for run in held if run.ctx.job.id not in still], "lost")
        self._self_fence(time.monotonic() + every)

    async def _bounded(self, op: ops.Op[T], timeout: float) -> T | None:
        """`_try` within ``timeout`` seconds. A statement on a half-open connection can hang for minutes and
        so can its cancellation: the heartbeat does not wait for either."""
        attempt = self._try(op)
        task = asyncio.ensure_future(attempt)
        done, _ = await asyncio.wait({task}, timeout=timeout)
        if task in done:
            return task.result()
        task.cancel()
        task.add_done_callback(_ignore_outcome)
        log.warning("%s got no answer within %.1f s", op.query, timeout)
        return None

    def _self_fence(self, horizon: float) -> None:
        """Stop handlers whose lease may end before the next heartbeat could renew it: unable to reach the
        database, we must assume the rescuer gives the job to another worker."""
        doomed = [run for run in self.active.values() if run.deadline <= horizon and run.handler is not None]
        if doomed:
            log.warning(
                "cannot renew the leases of %d jobs; stopping their handlers (self-fence)", len(doomed)
            )
            self._fence(doomed, "could not renew")

    def _fence(self, lost: list[Running], why: str) -> None:
        """Stop handlers whose lease we lost or cannot renew: they must not acknowledge. An async handler is
        cancelled; a sync one cannot be interrupted, so its context is marked (ctx.transaction() refuses to
        commit) and its outcome is dropped."""
        for run in lost:
            if self.active.get(run.ctx.job.id) is not run or run.ctx.completed or run.handler is None:
                continue  # finished meanwhile: the completer's conditional write decides
            log.warning("%s the lease of job %d; abandoning it", why, run.ctx.job.id)
            run.ctx.cancelled = True  # a sync handler's thread runs on: tell it to stop
            self.stale += 1
            self.fenced += 1
            run.ctx.fenced = True
            del self.active[run.ctx.job.id]
            run.handler.cancel()


def _ignore_outcome(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()
