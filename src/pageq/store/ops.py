"""Typed wrappers of each named query: build an `Op` (sans-I/O) that `Store.run` or `Store.arun` executes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pageq.security.crypto import DecryptError, Keyring, is_encrypted, reveal
from pageq.store.engine import Copy, Rows
from pageq.store.engine import Op as Op
from pageq.types import Attempt, Job, JobSpec, JobState


@dataclass(frozen=True, slots=True)
class Insert:
    """Parallel arrays of a batch of jobs to insert."""

    tasks: list[str]
    queues: list[str]
    args: list[str]
    priorities: list[int]
    run_ats: list[datetime]
    max_attempts: list[int]
    timeouts: list[float | None]
    ids: list[int] | None = None  # reserved ids (encrypted arguments are bound to them), else the sequence's


@dataclass(frozen=True, slots=True)
class Lease:
    """A job id with the lease token its claim returned (a UUID, kept as text)."""

    id: int
    token: str


def _ids(rows: Rows, _count: int) -> list[int]:
    return [row[0] for row in rows]


def _count(_rows: Rows, count: int) -> int:
    return count


def _first(rows: Rows, _count: int) -> tuple[Any, ...] | None:
    return rows[0] if rows else None


def _attempts(raw: list[dict[str, Any]]) -> list[Attempt]:
    return [
        Attempt(
            attempt=int(item.get("attempt", 0)),
            error=str(item.get("error", "")),
            traceback=item.get("traceback"),
            worker=item.get("worker"),
            at=str(item.get("at", "")),
        )
        for item in raw
    ]


def job_from_row(row: tuple[Any, ...], keyring: Keyring | None = None) -> Job:
    """A row in the column order of admin.sql (encrypted values decrypted where ``keyring`` can)."""
    (id_, task, queue, args, state, priority, attempts, max_attempts, run_at, created_at,
     started_at, finished_at, worker, result, errors, timeout, token) = row  # fmt: skip
    if keyring is not None:
        args, result, errors = reveal(keyring, id_, queue, task, args, result, errors)
    return Job(
        id=id_, task=task, queue=queue, args=args, state=JobState(state), priority=priority,
        attempts=attempts, max_attempts=max_attempts, run_at=run_at, created_at=created_at,
        started_at=started_at, finished_at=finished_at, worker=worker, result=result,
        errors=_attempts(errors), timeout=timeout, lease_token=str(token) if token else None,
    )  # fmt: skip


def claimed_from_row(row: tuple[Any, ...], keyring: Keyring | None = None) -> Job:
    """A row of the `claim` query; encrypted arguments decrypted when ``keyring`` can (else left as they
    are: the worker then sends the job to `dead` with reason ``decrypt_failed``)."""
    (id_, task, queue, args, priority, attempts, max_attempts, run_at, created_at, timeout, token,
     group_key, linked) = row  # fmt: skip
    sealed = is_encrypted(args)
    if keyring is not None and sealed:
        with contextlib.suppress(DecryptError):
            args = keyring.decrypt(args, "args", id_, queue, task)
    return Job(
        id=id_, task=task, queue=queue, args=args, state=JobState.RUNNING, priority=priority,
        attempts=attempts, max_attempts=max_attempts, run_at=run_at, created_at=created_at,
        timeout=timeout, lease_token=token, group_key=group_key, linked=linked, sealed=sealed,
    )  # fmt: skip


def _jobs(keyring: Keyring | None) -> Callable[[Rows, int], list[Job]]:
    return lambda rows, _count: [job_from_row(row, keyring) for row in rows]


def _job(keyring: Keyring | None) -> Callable[[Rows, int], Job | None]:
    return lambda rows, _count: job_from_row(rows[0], keyring) if rows else None


def _claimed(keyring: Keyring | None) -> Callable[[Rows, int], list[Job]]:
    return lambda rows, _count: [claimed_from_row(row, keyring) for row in rows]


# ----- hot path
def enqueue(batch: Insert, now: datetime, channel: str, notify: Sequence[str]) -> Op[list[int]]:
    params = {
        "tasks": batch.tasks, "queues": batch.queues, "args": batch.args,
        "priorities": batch.priorities, "run_ats": batch.run_ats,
        "max_attempts": batch.max_attempts, "timeouts": batch.timeouts,
        "now": now, "channel": channel, "notify": list(notify), "ids": batch.ids,
    }  # fmt: skip
    return Op("enqueue", params, _ids)


def reserve_ids(n: int) -> Op[list[int]]:
    """Ids for ``n`` jobs about to be written (so that their encrypted arguments can name them)."""
    return Op("reserve_ids", {"n": n}, _ids)


def idempotency_take(keys: Sequence[str | None], now: datetime) -> Op[list[tuple[int, bool]]]:
    """Per row (None: no key): (id to write the job under, True), or (the id its key names already, False).
    Run in the transaction that then writes the taken rows' jobs under those ids."""
    return Op(
        "idempotency_take",
        {"keys": list(keys), "now": now},
        lambda rows, _n: [(int(row[0]), bool(row[1])) for row in rows],
    )


def idempotency_relink(keys: Sequence[str], ids: Sequence[int]) -> Op[int]:
    return Op("idempotency_relink", {"keys": list(keys), "ids": list(ids)}, _count)


BACKSLASH, ESCAPED = "\\", "\\\\"
UNPREPARED = False
"""Batch acknowledgements are planned anew each time: the plan depends on the batch and on dead tuples,
and a server-cached generic plan was measured 25-40x slower (bench: 170 ms vs 4-7 ms per 1000 jobs)."""

COPY_THRESHOLD = 200
"""Batches at least this big are inserted with COPY (three statements); smaller ones with one INSERT."""


COPY_CHUNK = 2000
"""Rows per chunk of COPY data: the server inserts one chunk while Python builds the next."""


def enqueue_copy(
    specs: Sequence[JobSpec],
    now: datetime,
    channel: str,
    notify: Sequence[str],
    keyring: Keyring | None = None,
) -> Op[list[int]]:
    """The same insert as `enqueue`, through the COPY protocol (faster for big batches); with ``keyring``,
    the arguments are encrypted as the rows are built, bound to the ids the COPY reserved."""
    created = now.isoformat()

    def chunks(reserved: Rows) -> Iterator[str]:
        times: dict[datetime, str] = {now: created}
        for start in range(0, len(specs), COPY_CHUNK):
            lines = []
            for (id_, slot), spec in zip(
                reserved[start : start + COPY_CHUNK], specs[start : start + COPY_CHUNK], strict=True
            ):
                run_at = spec.run_at or (now + timedelta(seconds=spec.delay) if spec.delay else now)
                # names are [A-Za-z0-9_.:-] and JSON text is ASCII without control characters (json escapes
                # them): only the backslashes of JSON escapes need escaping for COPY's text format
                at = times.get(run_at) or times.setdefault(run_at, run_at.isoformat())
                state = "scheduled" if run_at > now else "queued"
                limit = "\\N" if spec.timeout is None else repr(float(spec.timeout))
                args = (
                    spec.args_json
                    if keyring is None
                    else keyring.encrypt_json(spec.args_json, "args", id_, spec.queue, spec.task)
                )  # bound to the id just reserved
                payload = args.replace(BACKSLASH, ESCAPED)
                lines.append(
                    f"{id_}\t{slot}\t{spec.task}\t{spec.queue}\t{payload}\t{state}\t{spec.priority}\t{at}\t"
                    f"{spec.max_attempts}\t{limit}\t{created}\n"
                )
            yield "".join(lines)

    step = Copy("reserve_ids", "copy_jobs", len(specs), chunks)
    params = {
        "channel": channel, "queues": list(notify),
        "copied_queues": [spec.queue for spec in specs], "copied_tasks": [spec.task for spec in specs],
    }  # fmt: skip
    return Op("notify", params, _ids, step)


NO_SUSPECT = 2**31 - 1
"""`claim`'s ``suspect`` when no job is suspected (a crash count no job reaches)."""


def claim(
    queues: Sequence[str], limit: int, now: datetime, lease: float, worker: str,
    tasks: Sequence[str] | None = None, keyring: Keyring | None = None, suspect: int = NO_SUSPECT,
) -> Op[list[Job]]:  # fmt: skip
    """``tasks``: only jobs of these task names (a worker acting as a principal), None for any; only jobs
    that crashed their workers fewer than ``suspect`` times (the others run alone: `claim_suspect`)."""
    params = {
        "queues": list(queues), "limit": limit, "now": now, "lease": lease, "worker": worker,
        "tasks": None if tasks is None else list(tasks), "suspect": suspect,
    }  # fmt: skip
    return Op("claim", params, _claimed(keyring))


def claim_suspect(
    queues: Sequence[str], now: datetime, lease: float, worker: str, suspect: int,
    tasks: Sequence[str] | None = None, keyring: Keyring | None = None,
) -> Op[list[Job]]:  # fmt: skip
    params = {
        "queues": list(queues), "now": now, "lease": lease, "worker": worker, "suspect": suspect,
        "tasks": None if tasks is None else list(tasks),
    }  # fmt: skip
    return Op("claim_suspect", params, _claimed(keyring))


def suspects_waiting(
    queues: Sequence[str], now: datetime, suspect: int, tasks: Sequence[str] | None = None
) -> Op[bool]:
    params = {
        "queues": list(queues),
        "now": now,
        "suspect": suspect,
        "tasks": None if tasks is None else list(tasks),
    }
    return Op("suspects_waiting", params, lambda rows, _n: bool(rows and rows[0][0]))


def complete(leases: Sequence[Lease], results: Sequence[str | None], now: datetime) -> Op[list[int]]:
    params = {
        "ids": [lease.id for lease in leases], "tokens": [lease.token for lease in leases],
        "results": list(results), "now": now,
    }  # fmt: skip
    return Op("complete", params, _ids, prepare=UNPREPARED)


def retry(leases: Sequence[Lease], run_ats: Sequence[datetime], errors: Sequence[str]) -> Op[list[int]]:
    params = {
        "ids": [lease.id for lease in leases], "tokens": [lease.token for lease in leases],
        "run_ats": list(run_ats), "errors": list(errors),
    }  # fmt: skip
    return Op("retry", params, _ids, prepare=UNPREPARED)


def bury(leases: Sequence[Lease], errors: Sequence[str], now: datetime) -> Op[list[int]]:
    params = {
        "ids": [lease.id for lease in leases], "tokens": [lease.token for lease in leases],
        "errors": list(errors), "now": now,
    }  # fmt: skip
    return Op("bury", params, _ids, prepare=UNPREPARED)


def set_result(lease: Lease, result: str) -> Op[int]:
    return Op("set_result", {"id": lease.id, "token": lease.token, "result": result}, _count)


def heartbeat(leases: Sequence[Lease], now: datetime, lease: float) -> Op[list[int]]:
    params = {
        "ids": [item.id for item in leases], "tokens": [item.token for item in leases],
        "now": now, "lease": lease,
    }  # fmt: skip
    return Op("heartbeat", params, _ids, prepare=UNPREPARED)


def release(leases: Sequence[Lease], now: datetime) -> Op[list[int]]:
    params = {
        "ids": [item.id for item in leases],
        "tokens": [item.token for item in leases],
        "now": now,
    }
    return Op("release", params, _ids, prepare=UNPREPARED)


# ----- maintenance
@dataclass(frozen=True)
class Lead:
    """An attempt to take or renew a leadership: whether we hold it, whether the attempt took its advisory
    lock (the previous holder's session was gone), and the server's clock (epoch seconds) when it did."""

    held: bool
    locked: bool = False
    at: float = 0.0


def leader_acquire(
    name: str, holder: str, now: datetime, ttl: float, *, try_lock: bool = False, idle: float = 60.0
) -> Op[Lead]:
    params = {"name": name, "holder": holder, "now": now, "ttl": ttl, "try_lock": try_lock,
              "idle_ms": str(max(1, int(idle * 1000)))}  # fmt: skip

    def decode(rows: Rows, _n: int) -> Lead:
        return Lead(True, bool(rows[0][1]), float(rows[0][2])) if rows else Lead(False)

    return Op("leader_acquire", params, decode)


def leader_unlock(name: str) -> Op[bool]:
    return Op("leader_unlock", {"name": name}, lambda rows, _n: bool(rows and rows[0][0]))


def leader_release(name: str, holder: str) -> Op[int]:
    return Op("leader_release", {"name": name, "holder": holder}, _count)


CRASH_LIMIT = 3
"""A job whose worker vanished this many times while running it is buried (reason ``worker_crash``)."""


def rescue(now: datetime, limit: int = 1000, crash_limit: int = CRASH_LIMIT) -> Op[tuple[int, int]]:
    def decode(rows: Rows, _n: int) -> tuple[int, int]:
        return (int(rows[0][0]), int(rows[0][1]))

    return Op("rescue", {"now": now, "limit": limit, "crash_limit": crash_limit}, decode)


def durability_settings() -> Op[tuple[str, str]]:
    return Op("durability_settings", {}, lambda rows, _n: (str(rows[0][0]), str(rows[0][1])))


def stats_stale(schema: str, floor: int = 5000) -> Op[bool]:
    return Op("stats_stale", {"schema": schema, "floor": floor}, lambda rows, _n: bool(rows and rows[0][0]))


def analyze_jobs() -> Op[int]:
    return Op("analyze_jobs", {}, _count)


def rotate(min_jobs: int, max_age: float, max_move: int, wait_ms: int) -> Op[int | None]:
    params = {"min_jobs": min_jobs, "max_age": max_age, "max_move": max_move, "wait": f"{wait_ms}ms"}
    return Op("rotate", params, lambda rows, _n: rows[0][0] if rows else None)


def history_set_period(seconds: float) -> Op[int]:
    return Op("history_set_period", {"seconds": seconds}, _count)


def history_prepare(now: datetime, ahead: int = 2) -> Op[int]:
    return Op("history_prepare", {"now": now, "ahead": ahead}, lambda rows, _n: int(rows[0][0]))


def history_drop(before: datetime, wait_ms: int) -> Op[int]:
    return Op("history_drop", {"before": before, "wait": f"{wait_ms}ms"}, lambda rows, _n: int(rows[0][0]))


def promote(now: datetime, limit: int = 5000) -> Op[int]:
    return Op("promote", {"now": now, "limit": limit}, _count)


def prune(state: JobState, before: datetime, limit: int = 5000) -> Op[int]:
    return Op("prune", {"state": state.value, "before": before, "limit": limit}, _count)


def worker_register(
    worker_id: str, host: str, pid: int, queues: Sequence[str], concurrency: int, now: datetime
) -> Op[int]:
    params = {
        "id": worker_id, "host": host, "pid": pid, "queues": list(queues),
        "concurrency": concurrency, "now": now,
    }  # fmt: skip
    return Op("worker_register", params, _count)


def worker_deregister(worker_id: str, stale_before: datetime) -> Op[int]:
    return Op("worker_deregister", {"id": worker_id, "stale_before": stale_before}, _count)


# ----- admin
def job_get(job_id: int, keyring: Keyring | None = None) -> Op[Job | None]:
    return Op("job_get", {"id": job_id}, _job(keyring))


def jobs_list(
    states: Sequence[JobState] | None, queue: str | None, task: str | None, limit: int,
    keyring: Keyring | None = None, *, before_id: int | None = None, since: datetime | None = None,
    until: datetime | None = None, search: str | None = None, after_id: int | None = None,
    oldest: bool = False,
) -> Op[list[Job]]:  # fmt: skip
    """Newest first (``oldest``: oldest first). ``since`` / ``until``: creation time in [since, until);
    ``before_id`` (``after_id`` when oldest first): where the next page starts; ``search``: the id, or a part
    of the task, worker, arguments or errors (in any case)."""
    params = {
        "states": [s.value for s in states] if states else None,
        "queue": queue, "task": task, "limit": limit, "since": since, "until": until, "search": search,
    }  # fmt: skip
    if oldest:
        return Op("jobs_list_oldest", {**params, "after_id": after_id}, _jobs(keyring))
    return Op("jobs_list", {**params, "before_id": before_id}, _jobs(keyring))


@dataclass(frozen=True, slots=True)
class Held:
    """A live job as `lease_get` reads it: what an acknowledgement from outside the daemon needs."""

    id: int
    task: str
    queue: str
    state: JobState
    attempts: int
    max_attempts: int
    lease_token: str | None
    worker: str | None
    group_key: str | None
    linked: bool


def lease_get(job_id: int) -> Op[Held | None]:
    def decode(rows: Rows, _n: int) -> Held | None:
        if not rows:
            return None
        id_, task, queue, state, attempts, max_attempts, token, worker, group_key, linked = rows[0]
        return Held(
            id_, task, queue, JobState(state), attempts, max_attempts, token, worker, group_key, linked
        )

    return Op("lease_get", {"id": job_id}, decode)


def job_cancel(job_id: int, now: datetime) -> Op[list[int]]:
    return Op("job_cancel", {"id": job_id, "now": now}, _ids)


def job_requeue(ids: Sequence[int], now: datetime) -> Op[list[int]]:
    return Op("job_requeue", {"ids": list(ids), "now": now}, _ids)


def job_run_now(job_id: int, now: datetime) -> Op[list[int]]:
    return Op("job_run_now", {"id": job_id, "now": now}, _ids)


def dlq_ids(queue: str | None, task: str | None, limit: int) -> Op[list[int]]:
    return Op("dlq_ids", {"queue": queue, "task": task, "limit": limit}, _ids)


def dlq_purge(
    queue: str | None, task: str | None, before: datetime | None, ids: Sequence[int] | None = None
) -> Op[int]:
    params = {"queue": queue, "task": task, "before": before, "ids": None if ids is None else list(ids)}
    return Op("dlq_purge", params, lambda rows, _n: int(rows[0][0]))


def queue_counts() -> Op[list[tuple[str, str, int]]]:
    return Op("queue_counts", {}, lambda rows, _n: [(r[0], r[1], int(r[2])) for r in rows])


def queue_activity(now: datetime, since: datetime) -> Op[list[tuple[str, float | None, int]]]:
    return Op(
        "queue_activity", {"now": now, "since": since},
        lambda rows, _n: [(r[0], r[1], int(r[2])) for r in rows],
    )  # fmt: skip


def timings(since: datetime) -> Op[tuple[Any, ...] | None]:
    return Op("timings", {"since": since}, _first)


def workers_list() -> Op[list[tuple[Any, ...]]]:
    return Op("workers_list", {}, lambda rows, _n: list(rows))


def history_summary(since: datetime) -> Op[dict[str, tuple[int, int]]]:
    return Op(
        "history_summary", {"since": since}, lambda rows, _n: {r[0]: (int(r[1]), int(r[2])) for r in rows}
    )
