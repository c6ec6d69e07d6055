"""Typed wrappers of the dispatcher's named queries (sql/queries/dispatch.sql): see `ops` for the pattern."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from pageq.security.crypto import Keyring, reveal
from pageq.store.engine import Op, Rows
from pageq.store.ops import NO_SUSPECT, Insert, _claimed, _count, _ids
from pageq.types import JSON, Job, JobState, QueueControl


@dataclass(frozen=True, slots=True)
class Special:
    """The dispatcher's columns of a batch of jobs, parallel to an `Insert`."""

    unique_keys: list[str | None]
    unique_states: list[str | None]  # comma-separated states
    unique_windows: list[float | None]
    on_conflicts: list[str]
    group_keys: list[str | None]
    afters: list[str | None]  # comma-separated parent ids
    on_failures: list[str]


def enqueue_special(batch: Insert, special: Special, now: datetime) -> Op[list[int]]:
    """Ids in order; a job whose unique key was held (``ignore``) gets the holder's id."""
    params = {
        "tasks": batch.tasks, "queues": batch.queues, "args": batch.args,
        "priorities": batch.priorities, "run_ats": batch.run_ats,
        "max_attempts": batch.max_attempts, "timeouts": batch.timeouts,
        "unique_keys": special.unique_keys, "unique_states": special.unique_states,
        "unique_windows": special.unique_windows, "on_conflicts": special.on_conflicts,
        "group_keys": special.group_keys, "afters": special.afters, "on_failures": special.on_failures,
        "now": now, "ids": batch.ids,
    }  # fmt: skip
    return Op("enqueue_special", params, _ids)


def queues_lock(queues: Sequence[str]) -> Op[list[int]]:
    return Op("queues_lock", {"queues": list(queues)}, _count_rows)


def _count_rows(rows: Rows, _count: int) -> list[int]:
    return [len(rows)]


def claim_controlled(
    queues: Sequence[str], limit: int, now: datetime, lease: float, worker: str,
    tasks: Sequence[str] | None = None, keyring: Keyring | None = None, suspect: int = NO_SUSPECT,
) -> Op[list[Job]]:  # fmt: skip
    params = {
        "queues": list(queues), "limit": limit, "now": now, "lease": lease, "worker": worker,
        "tasks": None if tasks is None else list(tasks), "suspect": suspect,
    }  # fmt: skip
    return Op("claim_controlled", params, _claimed(keyring))


def _control(row: tuple[Any, ...]) -> QueueControl:
    name, paused, concurrency, rate_limit, rate_period, weight = row[:6]
    return QueueControl(name, paused, concurrency, rate_limit, rate_period, weight)


def _controls(rows: Rows, _count: int) -> list[QueueControl]:
    return [_control(row) for row in rows]


@dataclass(frozen=True)
class WorkerLoad:
    """What a worker publishes about itself besides its running jobs (for `App.stats.workers`)."""

    processed: int = 0
    failed: int = 0
    rss_bytes: int | None = None


def worker_refresh(
    worker_id: str, running: int, queues: Sequence[str], now: datetime, load: WorkerLoad | None = None
) -> Op[list[QueueControl]]:
    """Without ``load``, the published counts and memory stay as they are."""
    given = load is not None
    load = load or WorkerLoad()
    params = {
        "id": worker_id, "running": running, "queues": list(queues), "now": now, "load": given,
        "processed": load.processed, "failed": load.failed, "rss": load.rss_bytes,
    }  # fmt: skip
    return Op("worker_refresh", params, _controls)


UNSET: Any = object()


def queue_control_set(
    name: str, channel: str, now: datetime, *, paused: bool | None = None, concurrency: Any = UNSET,
    rate: Any = UNSET, weight: int | None = None,
) -> Op[list[QueueControl]]:  # fmt: skip
    """Change what is given; ``concurrency`` and ``rate`` ((limit, period) or None) may be set to None."""
    rate_limit, rate_period = (None, None) if rate is UNSET or rate is None else rate
    params = {
        "name": name, "channel": channel, "now": now, "paused": paused, "weight": weight,
        "set_concurrency": concurrency is not UNSET,
        "concurrency": None if concurrency is UNSET else concurrency,
        "set_rate": rate is not UNSET, "rate_limit": rate_limit, "rate_period": rate_period,
    }  # fmt: skip
    return Op("queue_control_set", params, _controls)


def queue_controls() -> Op[list[QueueControl]]:
    return Op("queue_controls", {}, _controls)


def resolve(ids: Sequence[int], groups: Sequence[str], now: datetime) -> Op[int]:
    return Op("resolve", {"ids": list(ids), "groups": list(groups), "now": now}, _first_int)


def _first_int(rows: Rows, _count: int) -> int:
    return int(rows[0][0]) if rows and rows[0][0] is not None else 0


@dataclass(frozen=True, slots=True)
class Cursors:
    """Where the leader's pages of sweeps and cleanups resume (None: at the start)."""

    parent: int | None = None
    group: str | None = None
    key: int | None = None
    child: int | None = None


def watch_expired(now: datetime) -> Op[int]:
    return Op("watch_expired", {"now": now}, _count)


def resolve_sweep(now: datetime, cursors: Cursors = Cursors(), limit: int = 500) -> Op[tuple[Cursors, int]]:
    """The next cursors and how many jobs were cancelled."""
    params = {"now": now, "parent_after": cursors.parent, "group_after": cursors.group, "limit": limit}

    def decode(rows: Rows, _n: int) -> tuple[Cursors, int]:
        parent, group, cancelled = rows[0]
        return replace(cursors, parent=parent, group=group), int(cancelled)

    return Op("resolve_sweep", params, decode)


def jobs_cancel(
    now: datetime, *, ids: Sequence[int] | None = None, states: Sequence[JobState] | None = None,
    queue: str | None = None, task: str | None = None, limit: int = 10_000,
) -> Op[list[int]]:  # fmt: skip
    params = {
        "now": now, "ids": list(ids) if ids is not None else None,
        "states": [s.value for s in states] if states else None,
        "queue": queue, "task": task, "limit": limit,
    }  # fmt: skip
    return Op("jobs_cancel", params, _ids)


def parent_results(
    job_id: int, keyring: Keyring | None = None
) -> Op[list[tuple[int, JobState, JSON, str | None]]]:
    """(id, state, result, last error unless it succeeded) of each parent, decrypted where ``keyring`` can
    (else left as their envelope)."""

    def decode(rows: Rows, _n: int) -> list[tuple[int, JobState, JSON, str | None]]:
        return [_parent(keyring, row) for row in rows]

    return Op("parent_results", {"id": job_id}, decode)


def _parent(keyring: Keyring | None, row: tuple[Any, ...]) -> tuple[int, JobState, JSON, str | None]:
    job_id, state, result, queue, task, last = row
    state = JobState(state) if state else JobState.SUCCEEDED  # pruned from the history: it had succeeded
    _args, result, errors = reveal(keyring, job_id, queue, task, None, result, [last] if last else [])
    error = None
    if state is not JobState.SUCCEEDED and errors and isinstance(errors[0], dict):
        error = errors[0].get("error")
    return int(job_id), state, result, error


def periodic_lock(name: str, initial: datetime) -> Op[datetime]:
    return Op("periodic_lock", {"name": name, "initial": initial}, lambda rows, _n: rows[0][0])


def periodic_set(name: str, tick: datetime) -> Op[int]:
    return Op("periodic_set", {"name": name, "tick": tick}, _count)


def prune_keys(now: datetime, limit: int = 5000) -> Op[int]:
    """Delete unique keys past their window, at most ``limit``; returns how many."""
    return Op("prune_keys", {"now": now, "limit": limit}, _count)


def prune_orphans(cursors: Cursors, limit: int = 5000) -> Op[tuple[Cursors, int]]:
    """One page of the cleanup of unique keys and dependencies of finished jobs: the next cursors and how
    many rows were deleted."""
    params = {"key_after": cursors.key or 0, "child_after": cursors.child or 0, "limit": limit}

    def decode(rows: Rows, _n: int) -> tuple[Cursors, int]:
        key, child, deleted = rows[0]
        return replace(cursors, key=key, child=child), int(deleted)

    return Op("prune_orphans", params, decode)
