"""What a handler receives as ``ctx``: its job, and a transaction that commits with the job's completion."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING

from pageq.clock import Clock
from pageq.errors import StaleLeaseError
from pageq.store import Store, dispatch, ops
from pageq.store.engine import AsyncConn, SyncConn
from pageq.types import JSON, Job, JobState

if TYPE_CHECKING:
    from pageq.app import App


@dataclass(frozen=True)
class ParentResult:
    """A job another job waited for: its id, final state, result (``None`` unless it succeeded) and, unless
    it succeeded, the last error of its history (``None`` if it has none, e.g. cancelled before it ran)."""

    job_id: int
    state: JobState
    result: JSON
    error: str | None = None


@dataclass
class Context:
    """The running job and its worker, passed to handlers whose first parameter is ``ctx``.

    Example::

        @app.task()
        async def fulfil(ctx: pageq.Context, order_id: int) -> None:
            async with ctx.transaction() as conn:
                await conn.execute("UPDATE orders SET state = 'paid' WHERE id = %s", [order_id])
            # the UPDATE and the job's completion committed together
    """

    job: Job
    app: App
    worker_id: str
    _store: Store = field(repr=False)
    _clock: Clock = field(repr=False)
    completed: bool = field(default=False, init=False)
    fenced: bool = field(default=False, init=False)  # the worker gave the job up: nothing may commit
    cancelled: bool = field(default=False, init=False)
    """True once the job was cancelled while running: a sync handler should check it and return early
    (an async handler is cancelled outright). Whatever the handler does afterwards is not recorded."""

    @property
    def attempt(self) -> int:
        """1 on the first run, 2 on the first retry, and so on."""
        return self.job.attempts

    @property
    def lease(self) -> ops.Lease:
        """The claim's (id, lease token) that fences every write about this job; internal."""
        assert self.job.lease_token is not None
        return ops.Lease(self.job.id, self.job.lease_token)

    def parent_results(self) -> list[ParentResult]:
        """The jobs this one waited for (``after=``, a chain, a group, or the job it follows up with
        ``on_complete=`` / ``on_success=`` / ``on_failure=``), in order, with their results and errors."""
        op = dispatch.parent_results(self.job.id, self.app.keyring)
        return [ParentResult(*row) for row in self._store.run(op)]

    async def parent_results_async(self) -> list[ParentResult]:
        """Async twin of `parent_results`."""
        op = dispatch.parent_results(self.job.id, self.app.keyring)
        return [ParentResult(*row) for row in await self._store.arun(op)]

    def _complete_op(self) -> ops.Op[list[int]]:
        if self.completed:
            raise StaleLeaseError(f"job {self.job.id} was already completed by ctx.transaction()")
        if self.fenced:
            raise StaleLeaseError(f"job {self.job.id} was given up by its worker (lease not renewed)")
        return ops.complete([self.lease], [None], self._clock.now())

    def _resolve_op(self) -> ops.Op[int] | None:
        """Settle the job's dependents and group in the transaction that completes it (a crash before the
        completer's flush must not leave them blocked)."""
        if not self.job.linked:
            return None
        groups = [self.job.group_key] if self.job.group_key is not None else []
        return dispatch.resolve([self.job.id], groups, self._clock.now())

    def transaction(self) -> JobTransaction:
        """A transaction that commits together with this job's completion.

        ``async with ctx.transaction() as conn`` in async handlers, ``with`` in sync ones. If the
        worker lost the job's lease meanwhile, nothing commits and `StaleLeaseError` is raised.
        """
        return JobTransaction(self)

    @contextlib.asynccontextmanager
    async def _atransaction(self) -> AsyncIterator[AsyncConn]:
        async with self._store.atransaction() as conn:
            yield conn
            if not await self._store.arun(self._complete_op(), conn):
                raise StaleLeaseError(f"job {self.job.id} is no longer leased to this worker")
            if (resolve := self._resolve_op()) is not None:
                await self._store.arun(resolve, conn)
        self.completed = True

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[SyncConn]:
        with self._store.transaction() as conn:
            yield conn
            if not self._store.run(self._complete_op(), conn):
                raise StaleLeaseError(f"job {self.job.id} is no longer leased to this worker")
            if (resolve := self._resolve_op()) is not None:
                self._store.run(resolve, conn)
        self.completed = True


class JobTransaction:
    """Both an async and a sync context manager; see `Context.transaction`."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._async: contextlib.AbstractAsyncContextManager[AsyncConn] | None = None
        self._sync: contextlib.AbstractContextManager[SyncConn] | None = None

    async def __aenter__(self) -> AsyncConn:
        self._async = self._ctx._atransaction()
        return await self._async.__aenter__()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        assert self._async is not None
        return await self._async.__aexit__(kind, exc, tb)

    def __enter__(self) -> SyncConn:
        self._sync = self._ctx._transaction()
        return self._sync.__enter__()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        assert self._sync is not None
        return self._sync.__exit__(kind, exc, tb)
