"""`pageq.App`: the one entry object. Tasks, enqueueing (sync and async), admin calls and workers."""

from __future__ import annotations

import contextlib
import dataclasses
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal, overload

from pageq import config
from pageq.access import Guard, Security, Tokens, authenticate
from pageq.clock import Clock, SystemClock
from pageq.errors import InvalidOptionError, InvalidStateError, JobNotFoundError, UnknownTaskError
from pageq.monitor import Stats
from pageq.periodic import Missed, Periodic
from pageq.publishing import publish
from pageq.retry import DEFAULT_BACKOFF, Backoff
from pageq.routing import Route, RouteDecision, Router
from pageq.security.acl import Action, Decision
from pageq.security.crypto import Keyring, keyring_from_env
from pageq.store import MigrationStatus, Store, dispatch, ops, secops
from pageq.store import migrate as migrations
from pageq.store.secops import AuditRow
from pageq.task import OPTION_NAMES, Executor, Hook, Task, TaskOptions
from pageq.types import (
    JSON,
    Job,
    JobPage,
    JobSpec,
    JobState,
    QueueControl,
    QueueStats,
    check_int,
    check_name,
    check_seconds,
)
from pageq.webhooks.events import Event, Handler, check_types, stream
from pageq.webhooks.manage import Webhooks
from pageq.webhooks.settings import WebhookSettings

if TYPE_CHECKING:
    from pageq.leases import Leases
    from pageq.worker import Worker

MAX_PRINCIPALS = 32
"""Principals an app keeps an acting copy of (`App.acting_as`); the least recently used beyond are closed."""
ACTING_POOL = 4
"""Connections each acting copy may open (its pool opens them on demand)."""


@dataclass(frozen=True)
class Timings:
    """Wait (run_at to start) and run (start to finish) percentiles of recently succeeded jobs."""

    count: int
    wait_p50: float | None
    wait_p95: float | None
    run_p50: float | None
    run_p95: float | None
    first_created: datetime | None
    last_finished: datetime | None


class _Debounce:
    """At most one NOTIFY per queue per interval from this process (never one per job)."""

    def __init__(self, interval: float) -> None:
        self._interval = interval
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def due(self, queues: Iterable[str]) -> list[str]:
        now = time.monotonic()
        with self._lock:
            due = [q for q in set(queues) if now - self._last.get(q, -1e9) >= self._interval]
            for queue in due:
                self._last[queue] = now
        return due


class App:
    """A pageq application: register tasks, enqueue jobs, inspect and run them.

    Example::

        app = pageq.App()                     # DSN: arg > PAGEQ_DSN > DATABASE_URL > embedded

        @app.task(queue="emails")
        def send_email(to: str) -> None: ...

        send_email.enqueue(to="a@example.com")
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        schema: str | None = None,
        clock: Clock | None = None,
        notify_interval: float = 0.005,
        pool_size: int = 10,
        pooled: bool | None = None,
        listen_dsn: str | None = None,
        principal: str | None = None,
        token: str | None = None,
        keyring: Keyring | None = None,
        webhook_settings: WebhookSettings | None = None,
    ) -> None:
        self._dsn_arg = dsn
        self._pooled, self._listen_dsn = pooled, listen_dsn
        self._principal_arg = principal
        self._token = token
        self.keyring: Keyring | None = keyring or keyring_from_env()
        """Encrypts job arguments, results and errors when set (``PAGEQ_KEYRING``, ``PAGEQ_KEYRING_FILE``)."""
        self.webhook_settings = webhook_settings or WebhookSettings.from_env()
        """How this app's workers deliver webhooks (``PAGEQ_WEBHOOKS_ALLOW``); see docs/webhooks.md."""
        self.event_handlers: dict[str, list[Handler]] = {}
        self._guard: Guard | None = None
        self._guards: dict[str, Guard] = {}
        self._copy_ok: bool | None = None
        self.schema = config.schema_name(schema)
        self.clock: Clock = clock or SystemClock()
        self.tasks: dict[str, Task] = {}
        self._aliases: dict[str, str] = {}
        self._debounce = _Debounce(notify_interval)
        self._pool_size = pool_size
        self._database: config.Database | None = None
        self._store: Store | None = None
        self._lock = threading.Lock()
        self.router = Router()
        self.periodics: dict[str, Periodic] = {}
        self._tokens: Tokens | None = None
        self._acting: dict[str, App] = {}
        self._stats: Stats | None = None

    # ----- database
    @property
    def database(self) -> config.Database:
        """The resolved database (starts the embedded server on first use if none is configured)."""
        with self._lock:
            if self._database is None:
                self._database = config.resolve(
                    self._dsn_arg, pooled=self._pooled, listen_dsn=self._listen_dsn
                )
            return self._database

    @property
    def store(self) -> Store:
        """The store (connection pools and named queries) behind this app; internal."""
        db = self.database
        with self._lock:
            if self._store is None:
                self._store = Store(db.dsn, self.schema, max_size=self._pool_size, prepare=not db.pooled)
        if (self._principal_arg or self._token) and self._guard is None:
            self._act_as(self._store)
        return self._store

    def _act_as(self, store: Store) -> None:
        name = self._principal_arg
        if self._token is not None:
            name = authenticate(store, self._token)
            if self._principal_arg is not None and self._principal_arg != name:
                raise InvalidOptionError("the token belongs to another principal")
        assert name is not None
        with self._lock:
            store.principal = name
            self._guard = Guard(store, name, self._token)

    # ----- security
    @property
    def principal(self) -> str | None:
        """The principal this app acts as (``principal=`` or the owner of ``token=``), else None (owner)."""
        _ = self.store
        return self._guard.principal if self._guard is not None else None

    @property
    def guard(self) -> Guard | None:
        """The access checks of the acting principal, None when acting as the database owner; internal."""
        _ = self.store
        return self._guard

    @property
    def security(self) -> Security:
        """Principals, tokens, grants, the audit trail, keys and database roles."""
        return Security(self)

    @property
    def webhooks(self) -> Webhooks:
        """Webhook subscriptions: create, list, enable, disable, delete, rotate secrets, delivery logs."""
        return Webhooks(self)

    def authorize(
        self, token: str, operation: str, queue: str, task: str, *, job_id: int | None = None
    ) -> Decision:
        """Check a request made with ``token`` (what the HTTP API calls for each request): the decision if
        allowed; `AuthenticationError` or `AccessDeniedError` (the denial audited) otherwise.

        ``operation`` is an action (enqueue, work, read, manage) or an API operation (claim, complete,
        cancel, retry, purge).
        """
        guard = self._guards.get(token)
        if guard is None:
            guard = Guard(self.store, authenticate(self.store, token), token)
            if len(self._guards) > 1000:
                self._guards.clear()
            self._guards[token] = guard
        return guard.check(operation, queue, task, job_id=job_id)

    def authenticate(self, token: str) -> str:
        """The principal that ``token`` belongs to, or `AuthenticationError` (unknown, revoked, or its
        principal disabled). Answers are reused at most half a second: revocations apply within 1 s."""
        store = self.store
        with self._lock:
            if self._tokens is None:
                self._tokens = Tokens(store)
            tokens = self._tokens
        return tokens.principal(token)

    def acting_as(self, principal: str) -> App:
        """This app acting as ``principal``: the same database, tasks, routes and keyring, every action
        checked against the principal's grants and recorded under its name in the audit trail (what the HTTP
        API does for each request). The copy is kept for later calls; `close` closes it too.

        Example::

            app.acting_as("mailer").enqueue("email.send", {"to": "a@example.com"})
        """
        db = self.database
        shared = self.stats.cache  # outside the lock: `stats` takes it
        with self._lock:
            child = self._acting.pop(principal, None)
            evicted = []
            if child is None:
                child = App(
                    db.dsn, schema=self.schema, clock=self.clock, pool_size=min(self._pool_size, ACTING_POOL),
                    pooled=self._pooled, listen_dsn=self._listen_dsn, principal=principal,
                    keyring=self.keyring, webhook_settings=self.webhook_settings,
                )  # fmt: skip
                child.tasks, child._aliases, child.router = self.tasks, self._aliases, self.router
                child.event_handlers = self.event_handlers
                child.periodics = self.periodics
                child._stats = Stats(child, cache=shared)
                while len(self._acting) >= MAX_PRINCIPALS:
                    evicted.append(self._acting.pop(next(iter(self._acting))))
            self._acting[principal] = child  # most recently used last
        for old in evicted:
            old.close()
        return child

    def _check(self, action: Action, queue: str, task: str, job_id: int | None = None) -> None:
        guard = self.guard
        if guard is not None:
            guard.check(action, queue, task, job_id=job_id)

    def migrate(self) -> list[str]:
        """Apply pending schema migrations (safe to run from several processes); returns their names."""
        return migrations.migrate(self.store)

    def migration_status(self) -> MigrationStatus:
        """Which migrations the schema has and which are pending (creates nothing)."""
        return migrations.status(self.store)

    def drop_schema(self) -> None:
        """Delete pageq's schema and every job in it."""
        migrations.drop(self.store)

    def close(self) -> None:
        """Close the sync connection pool (the async one closes with `aclose`), and those of `acting_as`."""
        with self._lock:
            acting, self._acting = list(self._acting.values()), {}
        for child in acting:
            child.close()
        if self._store is not None:
            self._store.close()

    async def aclose(self) -> None:
        """Close the async connection pool of the running event loop."""
        if self._store is not None:
            await self._store.aclose()

    # ----- tasks
    @overload
    def task(self, fn: Callable[..., Any], /) -> Task: ...

    @overload
    def task(
        self,
        *,
        name: str | None = None,
        queue: str = "default",
        priority: int = 0,
        max_attempts: int = 5,
        timeout: float | None = None,
        retry: Backoff = DEFAULT_BACKOFF,
        executor: Executor = "auto",
        aliases: Sequence[str] = (),
        on_success: Hook | None = None,
        on_failure: Hook | None = None,
        on_dead: Hook | None = None,
        accept_clear: bool = False,
    ) -> Callable[[Callable[..., Any]], Task]: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        queue: str = "default",
        priority: int = 0,
        max_attempts: int = 5,
        timeout: float | None = None,
        retry: Backoff = DEFAULT_BACKOFF,
        executor: Executor = "auto",
        aliases: Sequence[str] = (),
        on_success: Hook | None = None,
        on_failure: Hook | None = None,
        on_dead: Hook | None = None,
        accept_clear: bool = False,
    ) -> Task | Callable[[Callable[..., Any]], Task]:
        """Register a sync or async function as a task; usable as ``@app.task`` or ``@app.task(...)``.

        Example::

            @app.task(queue="emails", max_attempts=5, timeout=30)
            def send_email(to: str) -> None: ...

        ``accept_clear``: with a keyring, this task also runs jobs whose arguments are in clear (jobs
        enqueued through the SQL API, which cannot encrypt); otherwise its workers refuse them
        (docs/sql-api.md).
        """

        def register(func: Callable[..., Any]) -> Task:
            task_name = name or func.__name__
            options = TaskOptions(queue, priority, max_attempts, timeout)
            hooks = {"on_success": on_success, "on_failure": on_failure, "on_dead": on_dead}
            task = Task(self, func, task_name, options, retry, executor, hooks, accept_clear)
            for key in (task.name, *aliases):
                if key in self.tasks or key in self._aliases:
                    raise InvalidOptionError(f"task name {key!r} is registered twice")
            self.tasks[task.name] = task
            self._aliases.update({check_name("task", a): task.name for a in aliases})
            return task

        return register(fn) if fn is not None else register

    def get_task(self, name: str) -> Task:
        """The task registered under ``name`` or one of its aliases."""
        task = self.tasks.get(name) or self.tasks.get(self._aliases.get(name, ""))
        if task is None:
            raise UnknownTaskError(f"unknown task {name!r}: registered tasks are {sorted(self.tasks)}")
        return task

    # ----- enqueue
    def _check_enqueue(self, specs: Sequence[JobSpec]) -> None:
        guard = self.guard
        if guard is not None:
            for queue, task in {(spec.queue, spec.task) for spec in specs}:
                guard.check(Action.ENQUEUE, queue, task)

    def _insert(self, specs: Sequence[JobSpec], ids: list[int] | None = None) -> ops.Op[list[int]]:
        now = self.clock.now()
        self._check_enqueue(specs)
        if ids is None and self._copies(specs):  # the COPY reserves the ids, encrypts as it builds rows
            ready = {s.queue for s in specs if not (s.delay or (s.run_at and s.run_at > now))}
            notify = self._debounce.due(sorted(ready))
            return ops.enqueue_copy(specs, now, self.store.channel, notify, self.keyring)
        batch = ops.Insert([], [], [], [], [], [], [], ids)
        ring = self.keyring if ids is not None else None
        for i, spec in enumerate(specs):
            batch.tasks.append(spec.task)
            batch.queues.append(spec.queue)
            if ring is not None and ids is not None:
                batch.args.append(ring.encrypt_json(spec.args_json, "args", ids[i], spec.queue, spec.task))
            else:
                batch.args.append(spec.args_json)
            batch.priorities.append(spec.priority)
            batch.run_ats.append(spec.run_at or (now + timedelta(seconds=spec.delay) if spec.delay else now))
            batch.max_attempts.append(spec.max_attempts)
            batch.timeouts.append(spec.timeout)
        if any(spec.special for spec in specs):  # unique key, group or after=: one enqueue_one() per job
            return dispatch.enqueue_special(batch, _special(specs), now)
        due = [q for q, r in zip(batch.queues, batch.run_ats, strict=True) if r <= now]
        return ops.enqueue(batch, now, self.store.channel, self._debounce.due(due))

    def _copies(self, specs: Sequence[JobSpec]) -> bool:
        special = any(spec.special for spec in specs)  # unique key, group or after=: the dispatcher's insert
        return len(specs) >= ops.COPY_THRESHOLD and not special and self._copy_allowed()

    def _reserves(self, specs: Sequence[JobSpec]) -> bool:
        """Encrypted arguments of an INSERT need their ids first (one more round trip, only then)."""
        return self.keyring is not None and not self._copies(specs)

    def _copy_allowed(self) -> bool:
        """COPY is refused under row-level security (a restricted database role): such apps INSERT."""
        if self._copy_ok is None:
            self._copy_ok = not self.store.run(secops.row_security_active())
        return self._copy_ok

    def enqueue(
        self, task: str, args: dict[str, Any] | None = None, *, conn: Any = None, **options: Any
    ) -> int:
        """Enqueue a task by name (what the CLI and other languages do); returns the job id."""
        return self.enqueue_many([self.job(task, args, **options)], conn=conn)[0]

    def job(self, task: str, args: dict[str, Any] | None = None, **options: Any) -> JobSpec:
        """A job of the task named ``task`` (or an alias), validated but not written: for `enqueue_many`.

        Example::

            app.enqueue_many([app.job("email.send", {"to": a}, priority=5) for a in addresses])
        """
        target, args = self.get_task(task), args or {}
        if clash := OPTION_NAMES.intersection(args):  # an argument must never pass for an option
            raise InvalidOptionError(f"arguments of {target.name!r} may not be named {sorted(clash)}")
        return target.job(**args, **options)

    def enqueue_many(self, specs: Iterable[JobSpec], *, conn: Any = None) -> list[int]:
        """Insert many jobs in one statement: all or none. Returns their ids in order.

        Example::

            app.enqueue_many([send_email.job(to=a) for a in addresses])
        """
        specs = list(specs)
        if not specs:
            return []
        return self._write(specs, conn)

    def _write(self, specs: Sequence[JobSpec], conn: Any) -> list[int]:
        plan = self._plan(specs)
        if any(spec.idempotency_key for spec in specs):  # keys and jobs: one transaction, the caller's too
            with self.store.joined(conn) as tx:
                return _drive(self.store, plan, tx)
        if conn is None and any(spec.followups for spec in specs):  # jobs and follow-ups: all or none
            with self.store.transaction() as tx:
                return _drive(self.store, plan, tx)
        return _drive(self.store, plan, conn)

    async def enqueue_many_async(self, specs: Iterable[JobSpec], *, conn: Any = None) -> list[int]:
        """Async twin of `enqueue_many`."""
        specs = list(specs)
        if not specs:
            return []
        plan = self._plan(specs)
        if any(spec.idempotency_key for spec in specs):
            async with self.store.ajoined(conn) as tx:
                return await _adrive(self.store, plan, tx)
        if conn is None and any(spec.followups for spec in specs):
            async with self.store.atransaction() as tx:
                return await _adrive(self.store, plan, tx)
        return await _adrive(self.store, plan, conn)

    def _plan(self, specs: Sequence[JobSpec], reserved: list[int] | None = None) -> Plan:
        """The statements that write ``specs`` (sans-I/O: `_drive` or `_adrive` runs them): idempotency keys
        taken when some job has one (`_plan_keyed`), reserved ids when needed (or ``reserved``, given by the
        keys), the insert, then the follow-ups of the jobs actually inserted, level by level."""
        if reserved is None and any(spec.idempotency_key for spec in specs):
            return (yield from self._plan_keyed(specs))
        followed = any(spec.followups for spec in specs)
        # a unique job's follow-ups go in only if it did (a conflict returns another id than it reserved)
        reserve = self._reserves(specs) or (followed and any(spec.unique for spec in specs))
        ids = reserved
        if ids is None and reserve:
            ids = yield ops.reserve_ids(len(specs))
        got: list[int] = yield self._insert(specs, ids)
        if followed:
            mine = ids or got
            children = [
                child
                for spec, job_id, mine_id in zip(specs, got, mine, strict=True)
                if job_id == mine_id
                for child in spec.followups_of(job_id)
            ]
            if children:
                yield from self._plan(children)
        return got

    def _plan_keyed(self, specs: Sequence[JobSpec]) -> Plan:
        """Jobs some of which carry an idempotency key (in one transaction): take the keys (a new key
        reserves its job's id), write the jobs of new keys and of no key under their reserved ids (follow-ups
        included), and answer the id a known key names for the others."""
        self._check_enqueue(specs)
        taken: list[tuple[int, bool]] = yield ops.idempotency_take(
            [spec.idempotency_key for spec in specs], self.clock.now()
        )
        fresh = [i for i, (_, new) in enumerate(taken) if new]
        ids = [id_ for id_, _ in taken]
        if fresh:
            reserved = [ids[i] for i in fresh]
            made = yield from self._plan([specs[i] for i in fresh], reserved)
            if moved := _moved_keys(specs, fresh, reserved, made):
                yield ops.idempotency_relink(*moved)
            remap = dict(zip(reserved, made, strict=True))  # a later row of the batch with the same key too
            ids = [remap.get(id_, id_) for id_ in ids]
        return ids

    # ----- jobs
    def get_job(self, job_id: int) -> Job:
        """A job by id, live or finished; raises `JobNotFoundError`."""
        return self._readable(_found(self.store.run(ops.job_get(job_id, self.keyring)), job_id))

    async def get_job_async(self, job_id: int) -> Job:
        """Async twin of `get_job`."""
        return self._readable(_found(await self.store.arun(ops.job_get(job_id, self.keyring)), job_id))

    def _readable(self, job: Job) -> Job:
        self._check(Action.READ, job.queue, job.task, job.id)
        return job

    def list_jobs(
        self,
        state: JobState | Sequence[JobState] | None = None,
        *,
        queue: str | None = None,
        task: str | None = None,
        limit: int = 50,
    ) -> list[Job]:
        """Newest jobs first, optionally filtered."""
        return self.page_jobs(state, queue=queue, task=task, limit=limit).jobs

    def page_jobs(
        self, state: JobState | Sequence[JobState] | None = None, *, queue: str | None = None,
        task: str | None = None, since: datetime | None = None, until: datetime | None = None,
        before_id: int | None = None, limit: int = 50, search: str | None = None,
        order: Literal["newest", "oldest"] = "newest", after_id: int | None = None,
    ) -> JobPage:  # fmt: skip
        """One page of jobs, newest first: filtered by state, queue, task, creation time in [``since``,
        ``until``) and ``search`` (digits: the job's id; else a part of its task, worker, arguments or
        errors, in any case; encrypted values do not match); pass the page's ``next_before_id`` as
        ``before_id`` for the next page. With ``order="oldest"``: oldest first, the next page from
        ``after_id=next_after_id``.

        Example::

            page = app.page_jobs(queue="emails", limit=100)
            while page.next_before_id is not None:
                page = app.page_jobs(queue="emails", limit=100, before_id=page.next_before_id)
        """
        states = [state] if isinstance(state, JobState) else state
        check_int("limit", limit, (1, 10_000))
        if order not in ("newest", "oldest"):
            raise InvalidOptionError(f"order must be newest or oldest, got {order!r}")
        if search is not None and (
            not isinstance(search, str) or not 1 <= len(search) <= 200 or "\x00" in search
        ):
            raise InvalidOptionError("search must be 1-200 characters without NUL")
        oldest = order == "oldest"
        op = ops.jobs_list(
            states, queue, task, limit, self.keyring, before_id=before_id, since=since, until=until,
            search=search, after_id=after_id, oldest=oldest,
        )  # fmt: skip
        jobs = self.store.run(op)
        more = jobs[-1].id if len(jobs) == limit else None  # the page is full: more jobs may follow
        guard = self.guard
        if guard is not None:  # with a principal: the jobs it may read (a page may come out shorter)
            jobs = [job for job in jobs if guard.decide(Action.READ, job.queue, job.task).allowed]
        return JobPage(jobs, None, more) if oldest else JobPage(jobs, more)

    def job_events(self, job_id: int, *, limit: int = 500) -> list[AuditRow]:
        """The audit trail of a job, oldest first: its transitions (enqueue, claim, retry, complete, bury,
        cancel, requeue, ...), who made each and when (what the audit level records; docs/security.md).
        Needs ``read`` on the job.

        Example::

            for event in app.job_events(job_id):
                print(event.at, event.action, event.principal or event.db_role, event.reason or "")
        """
        self.get_job(job_id)
        check_int("limit", limit, (1, 10_000))
        rows = self.store.run(secops.audit_list(None, job_id, None, None, None, None, limit))
        return rows[::-1]

    def can(self, action: str, queue: str = "*", task: str = "*") -> bool:
        """Whether this app may ``action`` (enqueue, work, read, manage) jobs of ``task`` in ``queue``
        (``"*"``: every one): always for the owner, else by the acting principal's grants. Nothing is
        audited: this is for showing what a user may do, every action is still checked when made.

        Example::

            if app.acting_as("ops").can("manage", queue="emails"): ...
        """
        try:
            act = Action(action)
        except ValueError:
            raise InvalidOptionError(
                f"unknown action {action!r}: use enqueue, work, read or manage"
            ) from None
        guard = self.guard
        return guard is None or guard.decide(act, queue, task).allowed

    def cancel(self, job_id: int, *, conn: Any = None) -> Job:
        """Cancel an unfinished job. A running job's worker is told at once: ``ctx.cancelled`` becomes
        true and an async handler is cancelled; whatever it acknowledges later changes nothing. Jobs that
        depend on it are cancelled too (or released, with ``on_parent_failure="run"``)."""
        self._manage(job_id)
        if not self.store.run(ops.job_cancel(job_id, self.clock.now()), conn):
            job = self._managed(job_id, conn)
            raise InvalidStateError(f"job {job_id} is {job.state.value} and cannot be cancelled")
        return self._managed(job_id, conn)

    def cancel_jobs(
        self, ids: Sequence[int] | None = None, *, state: JobState | Sequence[JobState] | None = None,
        queue: str | None = None, task: str | None = None, limit: int = 10_000, conn: Any = None,
    ) -> list[int]:  # fmt: skip
        """Cancel the live jobs that match every filter given (at most ``limit``); returns their ids.

        Example::

            app.cancel_jobs(queue="emails", state=pageq.JobState.QUEUED)
        """
        states = [state] if isinstance(state, JobState) else state
        if states and any(s.is_final for s in states):
            raise InvalidOptionError("only live jobs can be cancelled: drop the final states from state=")
        if ids is None:
            self._check(Action.MANAGE, queue or "*", task or "*")
        else:
            for job_id in ids:
                self._manage(job_id)
        op = dispatch.jobs_cancel(
            self.clock.now(), ids=ids, states=states, queue=queue, task=task, limit=limit
        )
        return self.store.run(op, conn)

    def retry(self, job_id: int, *, conn: Any = None) -> Job:
        """Run a job again now: a dead or cancelled one is requeued, a waiting one made due."""
        self._manage(job_id)
        now = self.clock.now()
        if not self.store.run(ops.job_requeue([job_id], now), conn) and not self.store.run(
            ops.job_run_now(job_id, now), conn
        ):
            job = self._managed(job_id, conn)
            raise InvalidStateError(f"job {job_id} is {job.state.value} and cannot be retried")
        return self._managed(job_id, conn)

    def _manage(self, job_id: int) -> None:
        if self.guard is not None:
            job = _found(self.store.run(ops.job_get(job_id)), job_id)
            self._check(Action.MANAGE, job.queue, job.task, job_id)

    def _managed(self, job_id: int, conn: Any) -> Job:
        """The job an operator action just changed (managing a job includes seeing it: no read check)."""
        return _found(self.store.run(ops.job_get(job_id, self.keyring), conn), job_id)

    # ----- dead-letter queue
    def dead_jobs(self, *, queue: str | None = None, task: str | None = None, limit: int = 50) -> list[Job]:
        """The dead-letter queue: dead jobs, newest first."""
        return self.list_jobs(JobState.DEAD, queue=queue, task=task, limit=limit)

    def requeue_dead(
        self, ids: Sequence[int] | None = None, *, queue: str | None = None, task: str | None = None,
        limit: int = 10_000,
    ) -> list[int]:  # fmt: skip
        """Put dead jobs (the given ids, or those matching the filters) back in their queues."""
        if ids is None:
            self._check(Action.MANAGE, queue or "*", task or "*")
            ids = self.store.run(ops.dlq_ids(queue, task, limit))
        else:
            for job_id in ids:
                self._manage(job_id)
        return self.store.run(ops.job_requeue(ids, self.clock.now())) if ids else []

    def purge_dead(
        self, ids: Sequence[int] | None = None, *, queue: str | None = None, task: str | None = None,
        older_than: float | None = None,
    ) -> int:  # fmt: skip
        """Delete dead jobs (the given ids, and those matching the filters) for good; returns how many."""
        before = self.clock.now() - timedelta(seconds=older_than) if older_than is not None else None
        if ids is None:
            self._check(Action.MANAGE, queue or "*", task or "*")
        else:
            for job_id in ids:
                self._manage(job_id)
        return self.store.run(ops.dlq_purge(queue, task, before, ids))

    def set_history_period(self, seconds: float) -> None:
        """Make each history partition hold ``seconds`` of finished jobs (a day by default).

        The leader creates partitions of the new period once the existing ones (made up to two periods
        ahead) have passed; retention drops whole partitions, so a shorter period frees space sooner.
        """
        period = check_seconds("history period", seconds, allow_zero=False)
        if period is None or period < 1:
            raise InvalidOptionError(f"history period must be at least 1 second, got {seconds!r}")
        self.store.run(ops.history_set_period(period))

    # ----- queue controls (stored in the database; workers follow them within a second)
    def control_queue(self, name: str, **changes: Any) -> QueueControl:
        """Change several controls of queue ``name`` in one write: ``paused`` (bool), ``concurrency`` (int
        or None), ``rate`` ((limit, per seconds) or None), ``weight`` (int); what is not given is kept.

        Example::

            app.control_queue("api-calls", paused=False, concurrency=20, rate=(50, 1.0))
        """
        unknown = set(changes) - {"paused", "concurrency", "rate", "weight"}
        if unknown:
            raise InvalidOptionError(f"unknown queue controls {sorted(unknown)}")
        checked: dict[str, Any] = {}
        if "paused" in changes:
            if not isinstance(changes["paused"], bool):
                raise InvalidOptionError(f"paused must be true or false, got {changes['paused']!r}")
            checked["paused"] = changes["paused"]
        if "concurrency" in changes:
            limit = changes["concurrency"]
            checked["concurrency"] = (
                None if limit is None else check_int("concurrency", limit, (0, 1_000_000))
            )
        if "rate" in changes:
            checked["rate"] = None if changes["rate"] is None else _rate(*changes["rate"])
        if "weight" in changes:
            checked["weight"] = check_int("weight", changes["weight"], (1, 1000))
        return self._control(name, **checked)

    def _control(self, name: str, **changes: Any) -> QueueControl:
        self._check(Action.MANAGE, check_name("queue", name), "*")
        op = dispatch.queue_control_set(
            check_name("queue", name), self.store.channel, self.clock.now(), **changes
        )
        return self.store.run(op)[0]

    def pause_queue(self, name: str) -> QueueControl:
        """Stop every worker from starting jobs of ``name`` (running ones finish)."""
        return self._control(name, paused=True)

    def resume_queue(self, name: str) -> QueueControl:
        """Undo `pause_queue`."""
        return self._control(name, paused=False)

    def limit_queue(self, name: str, concurrency: int | None) -> QueueControl:
        """At most ``concurrency`` running jobs of ``name`` across all workers (``None``: no limit)."""
        if concurrency is not None:
            check_int("concurrency", concurrency, (0, 1_000_000))
        return self._control(name, concurrency=concurrency)

    def rate_limit_queue(self, name: str, limit: int | None, per: float = 1.0) -> QueueControl:
        """At most ``limit`` job starts of ``name`` per ``per`` seconds, cluster-wide (``None``: no limit).

        Example::

            app.rate_limit_queue("api-calls", 50, per=1.0)
        """
        return self._control(name, rate=None if limit is None else _rate(limit, per))

    def weight_queue(self, name: str, weight: int) -> QueueControl:
        """The share of ``name`` in the claims of workers that serve several queues (default 1)."""
        return self._control(name, weight=check_int("weight", weight, (1, 1000)))

    def queue_controls(self) -> list[QueueControl]:
        """Every queue that has controls, by name (with a principal: the queues it may read)."""
        controls = self.store.run(dispatch.queue_controls())
        guard = self.guard
        if guard is None:
            return controls
        return [c for c in controls if guard.decide(Action.READ, c.name, "*").allowed]

    # ----- workflows
    def chain(self, *specs: JobSpec, conn: Any = None) -> list[int]:
        """Enqueue jobs that run one after the other: each waits for the previous one to succeed.

        Example::

            app.chain(fetch.job(url=u), parse.job(url=u), index.job(url=u))
        """
        with self._transaction(conn) as tx:
            ids: list[int] = []
            for spec in specs:
                after = (*spec.after, ids[-1]) if ids else spec.after
                ids.extend(self._write([dataclasses.replace(spec, after=after)], tx))
        return ids

    def group(self, specs: Sequence[JobSpec], *, then: JobSpec | None = None, conn: Any = None) -> list[int]:
        """Enqueue jobs that run in parallel and, with ``then``, a callback that runs once all of them
        finished (whatever their outcome); the callback reads their results with ``ctx.parent_results()``.
        Returns the members' ids, then the callback's.

        Example::

            app.group([resize.job(size=s) for s in sizes], then=publish.job())
        """
        with self._transaction(conn) as tx:
            ids = self._write(list(specs), tx) if specs else []
            if then is not None:
                callback = dataclasses.replace(then, after=(*then.after, *ids), on_parent_failure="run")
                ids.extend(self._write([callback], tx))
        return ids

    @contextlib.contextmanager
    def _transaction(self, conn: Any) -> Iterator[Any]:
        if conn is not None:
            yield conn
        else:
            with self.store.transaction() as tx:
                yield tx

    # ----- periodic jobs
    def periodic(
        self, cron: str | None = None, *, every: float | None = None, tz: str = "UTC",
        name: str | None = None, missed: Missed = "latest", grace: float = 60.0,
        args: dict[str, JSON] | None = None, **task_options: Any,
    ) -> Callable[[Callable[..., Any] | Task], Task]:  # fmt: skip
        """Run a task on a cron schedule (in ``tz``) or every ``every`` seconds, once per tick across all
        workers; the worker that leads maintenance enqueues the ticks.

        Example::

            @app.periodic("*/5 * * * *", tz="Europe/Paris")
            def refresh_rates() -> None: ...
        """

        def register(fn: Callable[..., Any] | Task) -> Task:
            options = {"name": name, **task_options}
            task = fn if isinstance(fn, Task) else self.task(**options)(fn)
            key = name or task.name
            if key in self.periodics:
                raise InvalidOptionError(f"periodic {key!r} is registered twice")
            schedule = Periodic(key, task.name, cron, every, tz, missed, grace, dict(args or {}))
            task.bind(schedule.args)
            self.periodics[key] = schedule
            return task

        return register

    # ----- routing
    def route(
        self, task: str, *, queue: str | None = None, priority: int | None = None,
        args: dict[str, JSON] | None = None, when: Callable[[Any], bool] | None = None,
    ) -> Route:  # fmt: skip
        """Add a routing rule (rules are tried in order; the first match decides): jobs of tasks matching
        the glob ``task`` whose arguments equal ``args`` and satisfy ``when`` go to ``queue`` / ``priority``
        unless the enqueue call names its own.

        Example::

            app.route("reports.*", args={"tenant": "big"}, queue="reports-big", priority=-5)
        """
        return self.router.add(Route(task, queue, priority, dict(args or {}), when))

    def publish_routes(self) -> tuple[int, int]:
        """Write this app's tasks (defaults, aliases, argument names, retry policies, whether its workers
        decrypt arguments) and its routing rules to the database, where the SQL API's enqueue and fail read
        them (docs/sql-api.md); the published rules are replaced by this app's. Workers publish their app's
        tasks at start (and its rules when it has any). Returns (task rows written, rules written).
        """
        self._check(Action.MANAGE, "*", "*")
        written, rules = publish(self, self.store)
        return written, rules or 0

    def explain_route(self, task: str, args: dict[str, JSON] | None = None) -> RouteDecision:
        """Where a job of ``task`` with ``args`` would go, and why (for `pageq routes`)."""
        target = self.get_task(task)
        return self.router.explain(target.name, args or {}, target.options.queue, target.options.priority)

    # ----- statistics
    @property
    def stats(self) -> Stats:
        """Statistics of queues, workers and the system, for dashboards and metrics (`pageq.monitor.Stats`).

        Example::

            app.stats.queues(); app.stats.series(minutes=60); app.stats.workers(); app.stats.system()
        """
        with self._lock:
            if self._stats is None:
                self._stats = Stats(self)
            return self._stats

    def queue_stats(self) -> list[QueueStats]:
        """Per queue: jobs by state, age of the oldest waiting job, jobs finished in the last minute."""
        now = self.clock.now()
        # two READ COMMITTED statements, not one REPEATABLE READ snapshot: a snapshot taken before a rotation
        # of the jobs partitions commits would see them empty (TRUNCATE is not MVCC-safe)
        counts = self.store.run(ops.queue_counts())
        activity = self.store.run(ops.queue_activity(now, now - timedelta(minutes=1)))
        stats = _queue_stats(counts, activity)
        guard = self.guard
        if guard is None:
            return stats
        return [s for s in stats if guard.decide(Action.READ, s.queue, "*").allowed]

    def timings(self, since: datetime) -> Timings:
        """Wait and run time percentiles of jobs that succeeded since ``since``."""
        row = self.store.run(ops.timings(since)) or (0, None, None, None, None, None, None)
        return Timings(int(row[0]), *row[1:])

    def history(self, since: datetime) -> dict[JobState, tuple[int, int]]:
        """Jobs finished since ``since`` by final state: (how many, attempts they took in all)."""
        rows = self.store.run(ops.history_summary(since))
        return {JobState(state): counts for state, counts in rows.items()}

    def workers(self) -> list[dict[str, Any]]:
        """Registered workers with their last heartbeat and load (``running``), most recent first."""
        keys = ("id", "host", "pid", "queues", "concurrency", "started_at", "last_seen_at", "running")
        return [dict(zip(keys, row, strict=True)) for row in self.store.run(ops.workers_list())]

    # ----- events
    @overload
    def on(self, event: str) -> Callable[[Handler], Handler]: ...

    @overload
    def on(self, event: str, handler: Handler) -> Handler: ...

    def on(self, event: str, handler: Handler | None = None) -> Handler | Callable[[Handler], Handler]:
        """Call ``handler(event)`` (sync or async) for each job event of type ``event`` (``job.dead``...,
        or ``*``), in the worker that leads maintenance: once per event across the cluster, at most once (an
        event committed while no worker listens is not replayed; webhooks are the at-least-once way).

        Example::

            @app.on("job.dead")
            async def alert(event: pageq.Event) -> None: ...
        """
        (kind,) = check_types(event)

        def register(fn: Handler) -> Handler:
            self.event_handlers.setdefault(kind, []).append(fn)
            return fn

        return register(handler) if handler is not None else register

    def events(self, *types: str) -> AsyncGenerator[Event, None]:
        """Job events of ``types`` (default all) committed from now on, for as long as you read them (at most
        once: none is replayed after a lost connection). Close it when done: ``contextlib.aclosing``.

        Example::

            async with contextlib.aclosing(app.events("job.dead")) as events:
                async for event in events: ...
        """
        return stream(self, self.store, check_types(types or "*"))

    # ----- workers
    @property
    def leases(self) -> Leases:
        """Claims, heartbeats and acknowledgements for workers outside this process (the HTTP API's remote
        workers), fenced by lease tokens like the daemon's."""
        from pageq.leases import Leases

        return Leases(self)

    def worker(self, queues: Sequence[str] = ("default",), concurrency: int = 10, **options: Any) -> Worker:
        """A worker daemon for this app; ``await worker.run()`` until ``worker.stop()``."""
        from pageq.worker import Worker

        return Worker(self, queues=queues, concurrency=concurrency, **options)

    def run_worker(
        self, queues: Sequence[str] = ("default",), concurrency: int = 10, *, processes: int = 1,
        app_ref: str | None = None, **options: Any,
    ) -> int:  # fmt: skip
        """Run workers until SIGTERM/SIGINT; ``processes > 1`` starts that many (needs ``app_ref``)."""
        from pageq.worker import run_forever, supervise

        if processes > 1:
            if app_ref is None:
                raise ValueError("processes > 1 needs app_ref='module:attribute' to import the app")
            return supervise(app_ref, queues, concurrency, processes, options)
        return run_forever(self.worker(queues, concurrency, **options))


def _moved_keys(
    specs: Sequence[JobSpec], fresh: Sequence[int], reserved: Sequence[int], made: Sequence[int]
) -> tuple[list[str], list[int]] | None:
    """Keys whose job is not the one reserved for it (its unique key was held: the holder's id came back)."""
    keys, ids = [], []
    for i, want, got in zip(fresh, reserved, made, strict=True):
        key = specs[i].idempotency_key
        if key is not None and got != want:
            keys.append(key)
            ids.append(got)
    return (keys, ids) if keys else None


Plan = Generator[ops.Op[Any], Any, list[int]]


def _drive(store: Store, plan: Plan, conn: Any) -> list[int]:
    """Run a plan's statements in order, sending each result back (on ``conn``, else on pooled ones)."""
    try:
        op = next(plan)
        while True:
            op = plan.send(store.run(op, conn))
    except StopIteration as done:
        result: list[int] = done.value
        return result


async def _adrive(store: Store, plan: Plan, conn: Any) -> list[int]:
    """Async twin of `_drive`."""
    try:
        op = next(plan)
        while True:
            op = plan.send(await store.arun(op, conn))
    except StopIteration as done:
        result: list[int] = done.value
        return result


def _special(specs: Sequence[JobSpec]) -> dispatch.Special:
    special = dispatch.Special([], [], [], [], [], [], [])
    for spec in specs:
        unique = spec.unique
        special.unique_keys.append(unique.key if unique else None)
        special.unique_states.append(",".join(sorted(unique.states)) if unique else None)
        special.unique_windows.append(unique.window if unique else None)
        special.on_conflicts.append(unique.on_conflict if unique else "ignore")
        special.group_keys.append(spec.group_key)
        special.afters.append(",".join(map(str, spec.after)) if spec.after else None)
        special.on_failures.append(spec.on_parent_failure)
    return special


def _rate(limit: object, per: object = 1.0) -> tuple[int, float]:
    checked = check_int("rate limit", limit, (0, 1_000_000))
    if isinstance(per, bool) or not isinstance(per, int | float) or not 0.001 <= per <= 86400 * 31:
        raise InvalidOptionError(f"rate period must be 0.001 s to 31 days, got {per!r}")
    return checked, float(per)


def _found(job: Job | None, job_id: int) -> Job:
    if job is None:
        raise JobNotFoundError(f"no job with id {job_id}")
    return job


def _queue_stats(
    counts: list[tuple[str, str, int]], activity: list[tuple[str, float | None, int]]
) -> list[QueueStats]:
    by_queue: dict[str, dict[JobState, int]] = {}
    for queue, state, count in counts:
        by_queue.setdefault(queue, dict.fromkeys(JobState, 0))[JobState(state)] += count
    recent = {queue: (oldest, done) for queue, oldest, done in activity}
    for queue in recent:
        by_queue.setdefault(queue, dict.fromkeys(JobState, 0))
    return [QueueStats(queue, by_queue[queue], *recent.get(queue, (None, 0))) for queue in sorted(by_queue)]


__all__ = ["App", "Timings"]
