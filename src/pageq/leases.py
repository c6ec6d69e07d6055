"""Claims and acknowledgements for workers outside the daemon (``app.leases``): what the HTTP API's remote
workers call. The same statements as the daemon's (claim, heartbeat, complete, retry, bury, release), each
acknowledgement fenced by the claim's lease token. Not public API beyond `App.leases`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pageq.errors import InvalidOptionError, JobNotFoundError, StaleLeaseError
from pageq.retry import DEFAULT_BACKOFF
from pageq.security.acl import Action
from pageq.security.crypto import is_encrypted, seal_error
from pageq.store import dispatch, ops
from pageq.types import Job, JobState, QueueControl, check_int, check_name, check_seconds, dump_json
from pageq.worker.controls import QueueControls

if TYPE_CHECKING:
    from pageq.app import App

MAX_ERROR = 2_000
MAX_TRACEBACK = 8_192
MAX_CLAIM = 1_000


@dataclass(frozen=True)
class Failed:
    """What `Leases.fail` did: the job's new state (``retrying`` or ``dead``) and, when retrying, when."""

    state: JobState
    run_at: datetime | None


class Leases:
    """Claim jobs, extend their leases, and complete or fail them, from outside the worker daemon.

    Example::

        jobs = app.leases.claim(["emails"], limit=10, lease=60, worker="node-1")
        for job in jobs:
            app.leases.complete(job.id, job.lease_token, {"sent": True})
    """

    def __init__(self, app: App) -> None:
        self._app = app

    def claim(
        self, queues: Sequence[str], *, limit: int = 10, lease: float = 30.0, worker: str = "remote",
        tasks: Sequence[str] | None = None,
    ) -> list[Job]:  # fmt: skip
        """Lease up to ``limit`` runnable jobs of ``queues`` (paused queues skipped, concurrency and rate
        limits applied) for ``lease`` seconds; each `Job` carries its ``lease_token``. ``tasks``: only jobs
        of these task names (default: any the acting principal may work, or the app's registered tasks)."""
        names = list(dict.fromkeys(check_name("queue", q) for q in queues))
        check_int("limit", limit, (1, MAX_CLAIM))
        seconds = _lease_seconds(lease)
        check_name("worker", worker)
        wanted = self._workable(names, tasks)
        if wanted == []:
            return []
        app, store = self._app, self._app.store
        controls = QueueControls(names)
        current: list[QueueControl] = store.run(dispatch.queue_controls())
        controls.update(current)
        if not controls.active:
            return []
        now = app.clock.now()
        if not controls.limited:
            jobs = store.run(ops.claim(controls.active, limit, now, seconds, worker, wanted, app.keyring))
        else:
            with store.transaction() as conn:
                if controls.locked:
                    store.run(dispatch.queues_lock(controls.locked), conn)
                op = dispatch.claim_controlled(
                    controls.active, limit, now, seconds, worker, wanted, app.keyring
                )
                jobs = store.run(op, conn)
        return self._decrypted(jobs, now)

    def _workable(self, queues: list[str], tasks: Sequence[str] | None) -> list[str] | None:
        """The task names to claim (None: any), as the acting principal's grants allow in every queue."""
        guard = self._app.guard
        asked = None if tasks is None else list(dict.fromkeys(check_name("task", t) for t in tasks))
        if guard is None:
            return asked
        if asked is None:
            if all(guard.decide(Action.WORK, q, "*").allowed for q in queues):
                return None
            asked = [*self._app.tasks, *self._app._aliases]
            allowed = [t for t in asked if all(guard.decide(Action.WORK, q, t).allowed for q in queues)]
            if not allowed:  # nothing at all: refused (and audited) like any denied request
                guard.check(Action.WORK, queues[0], "*")
            return allowed
        for queue in queues:
            for task in asked:
                guard.check(Action.WORK, queue, task)
        return asked

    def _decrypted(self, jobs: list[Job], now: datetime) -> list[Job]:
        """Jobs whose arguments this app cannot decrypt, or (with a keyring) that are in clear for a task
        without ``accept_clear``, go to `dead` (reason ``decrypt_failed``), like the daemon does; the others
        are returned."""
        refused = {job.id: why for job in jobs if (why := self._refused(job)) is not None}
        if not refused:
            return jobs
        bad = [job for job in jobs if job.id in refused]
        errors = []
        for job in bad:
            record = {
                "attempt": job.attempts, "error": f"DecryptError: {refused[job.id]}",
                "traceback": None, "worker": None, "at": now.isoformat(), "reason": "decrypt_failed",
            }  # fmt: skip
            errors.append(dump_json("error", record))
        self._app.store.run(ops.bury([_lease(job.id, job.lease_token) for job in bad], errors, now))
        return [job for job in jobs if job.id not in refused]

    def _refused(self, job: Job) -> str | None:
        if is_encrypted(job.args):
            return f"the args of job {job.id} cannot be decrypted"
        app = self._app
        if app.keyring is not None and not job.sealed:
            task = app.tasks.get(job.task) or app.tasks.get(app._aliases.get(job.task, ""))
            if task is None or not task.accept_clear:
                return (
                    f"the args of job {job.id} are not encrypted and task {job.task!r} does not accept_clear"
                )
        return None

    def heartbeat(self, job_id: int, lease_token: str, lease: float = 30.0) -> datetime:
        """Extend the lease to ``lease`` seconds from now; returns when it expires. `StaleLeaseError` if
        the job is no longer leased with this token (rescued, cancelled, finished)."""
        seconds = _lease_seconds(lease)
        held = self._held(job_id, lease_token)
        now = self._app.clock.now()
        kept = self._app.store.run(ops.heartbeat([_lease(held.id, lease_token)], now, seconds))
        if job_id not in kept:
            raise _stale(job_id)
        return now + timedelta(seconds=seconds)

    def complete(self, job_id: int, lease_token: str, result: Any = None) -> None:
        """Mark the job succeeded with ``result`` (JSON), settling its group and dependents in the same
        transaction; `StaleLeaseError` (nothing written) if the lease was lost."""
        held = self._held(job_id, lease_token)
        app = self._app
        result_json = None if result is None else dump_json(f"result of job {job_id}", result)
        if app.keyring is not None and result_json is not None:
            result_json = app.keyring.encrypt_json(result_json, "result", job_id, held.queue, held.task)
        now = app.clock.now()
        with app.store.transaction() as conn:
            done = app.store.run(ops.complete([_lease(job_id, lease_token)], [result_json], now), conn)
            if job_id not in done:
                raise _stale(job_id)
            self._settle(held, now, conn)

    def fail(
        self, job_id: int, lease_token: str, error: str, *, traceback: str | None = None,
        retry_in: float | None = None, retryable: bool = True,
    ) -> Failed:  # fmt: skip
        """Record a failed attempt: retried after ``retry_in`` seconds (default: the task's backoff, or the
        default policy for a task this app does not define), or `dead` when ``retryable`` is false or the
        attempts are spent. `StaleLeaseError` (nothing written) if the lease was lost."""
        delay = check_seconds("retry_in", retry_in)
        held = self._held(job_id, lease_token)
        app = self._app
        now = app.clock.now()
        record: dict[str, Any] = {
            "attempt": held.attempts, "error": str(error)[:MAX_ERROR],
            "traceback": None if traceback is None else str(traceback)[-MAX_TRACEBACK:],
            "worker": held.worker, "at": now.isoformat(),
        }  # fmt: skip
        if app.keyring is not None:
            record = seal_error(app.keyring, record, job_id, held.queue, held.task)
        text, lease = dump_json("error", record), _lease(job_id, lease_token)
        dead = not retryable or held.attempts >= held.max_attempts
        if not dead and delay is None:
            task = app.tasks.get(held.task) or app.tasks.get(app._aliases.get(held.task, ""))
            delay = (task.retry if task is not None else DEFAULT_BACKOFF).delay(held.attempts)
        run_at = None if dead else now + timedelta(seconds=delay or 0.0)
        with app.store.transaction() as conn:
            if dead:
                moved = app.store.run(ops.bury([lease], [text], now), conn)
            else:
                assert run_at is not None
                moved = app.store.run(ops.retry([lease], [run_at], [text]), conn)
            if job_id not in moved:
                raise _stale(job_id)
            if dead:
                self._settle(held, now, conn)
        return Failed(JobState.DEAD if dead else JobState.RETRYING, run_at)

    def release(self, job_id: int, lease_token: str) -> None:
        """Give the job back at once (a worker shutting down): queued again, the attempt not counted."""
        self._held(job_id, lease_token)
        released = self._app.store.run(ops.release([_lease(job_id, lease_token)], self._app.clock.now()))
        if job_id not in released:
            raise _stale(job_id)

    def _held(self, job_id: int, lease_token: str) -> ops.Held:
        """The job, if the acting principal may work it and it is running under this lease token."""
        token = _token(lease_token)
        app = self._app
        held = app.store.run(ops.lease_get(job_id))
        if held is None:  # finished (its lease is over) or never existed
            job = app.store.run(ops.job_get(job_id))
            if job is None:
                raise JobNotFoundError(f"no job with id {job_id}")
            app._check(Action.WORK, job.queue, job.task, job_id)
            raise _stale(job_id)
        app._check(Action.WORK, held.queue, held.task, job_id)
        if held.state is not JobState.RUNNING or held.lease_token != token:
            raise _stale(job_id)
        return held

    def _settle(self, held: ops.Held, now: datetime, conn: Any) -> None:
        """A finished job's group and dependents, in the transaction that finished it (as the completer)."""
        if held.linked:
            groups = [held.group_key] if held.group_key is not None else []
            self._app.store.run(dispatch.resolve([held.id], groups, now), conn)


def _token(value: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise InvalidOptionError(f"{value!r} is not a lease token") from None


def _lease(job_id: int, token: str | None) -> ops.Lease:
    return ops.Lease(job_id, _token(token or ""))


def _lease_seconds(lease: float) -> float:
    seconds = check_seconds("lease", lease, allow_zero=False)
    if seconds is None or not 1 <= seconds <= 86400:
        raise InvalidOptionError(f"lease must be 1 to 86400 seconds, got {lease!r}")
    return seconds


def _stale(job_id: int) -> StaleLeaseError:
    return StaleLeaseError(f"job {job_id} is no longer leased with this token")
