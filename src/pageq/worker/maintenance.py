"""Leader-only maintenance: one worker at a time rescues expired leases, promotes due jobs, prunes history."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from datetime import timedelta
from typing import TYPE_CHECKING

from pageq.errors import DatabaseError
from pageq.periodic import fire_due
from pageq.store import dispatch, ops, secops
from pageq.types import JobState

if TYPE_CHECKING:
    from pageq.worker.daemon import Worker

log = logging.getLogger("pageq.maintenance")
LEADER = "maintenance"
PRUNE_EVERY = 60.0
_SEAL_WARNED: set[str] = set()

# Rotation of the live-jobs partitions (see sql/migrations/0002_rotation.sql). Between two rotations dead
# tuples can pile up when a long transaction stops VACUUM, and every claim wades through them: ROTATE_JOBS
# bounds that pile. A rotation moves at most ROTATE_MAX_MOVE live jobs (a bigger backlog waits for the next
# try) and waits at most ROTATE_WAIT_MS for the partition's lock, which stalls claims meanwhile.
ROTATE_JOBS = 20_000
ROTATE_AGE = 60.0
ROTATE_MAX_MOVE = 10_000
ROTATE_WAIT_MS = 100


async def run(worker: Worker) -> None:
    """Try to lead every interval; while leading, run each maintenance step."""
    interval = worker.options.maintenance_interval
    last_prune = 0.0
    while True:
        try:
            now = worker.clock.now()
            leads = await worker.store.arun(ops.leader_acquire(LEADER, worker.id, now, interval * 3))
            if leads:
                await step(worker)
                if time.monotonic() - last_prune > PRUNE_EVERY:
                    last_prune = time.monotonic()
                    await prune(worker)
        except DatabaseError as exc:
            log.warning("maintenance failed: %s", exc)
        await asyncio.sleep(interval * random.uniform(0.8, 1.0))


async def step(worker: Worker) -> tuple[int, int]:
    """Rescue jobs whose lease expired and promote due ones; returns (retried, buried)."""
    now = worker.clock.now()
    retried, buried = await worker.store.arun(ops.rescue(now))
    if retried or buried:
        log.warning("rescued %d jobs with expired leases (%d dead)", retried, buried)
    await worker.store.arun(ops.promote(now))
    await rotate(worker)
    await history(worker)
    await worker.store.arun(dispatch.resolve_sweep(now))
    if worker.app.periodics:
        await fire_due(worker.app, worker.store, now)
    if await worker.store.arun(ops.stats_stale(worker.app.schema)):
        log.info("refreshing the statistics of the jobs table")
        await worker.store.arun(ops.analyze_jobs())
    await seal(worker)
    return retried, buried


async def rotate(worker: Worker) -> int | None:
    """Rotate the live-jobs partitions when due; returns the jobs moved (None: not rotated this time)."""
    op = ops.rotate(ROTATE_JOBS, ROTATE_AGE, ROTATE_MAX_MOVE, ROTATE_WAIT_MS)
    try:
        moved = await worker.store.arun(op)
    except DatabaseError as exc:  # the partition is busy (lock timeout): next time
        log.debug("rotation postponed: %s", exc)
        return None
    if moved is not None:
        log.debug("rotated the jobs partitions, %d live jobs moved", moved)
    return moved


async def history(worker: Worker) -> int:
    """Create the coming history partitions and drop those past the retention; returns the number dropped."""
    now = worker.clock.now()
    await worker.store.arun(ops.history_prepare(now))
    before = now - timedelta(seconds=worker.options.retention)
    try:
        dropped = await worker.store.arun(ops.history_drop(before, ROTATE_WAIT_MS))
    except DatabaseError as exc:  # the table is busy (lock timeout): next time
        log.debug("dropping old history postponed: %s", exc)
        return 0
    if dropped:
        log.info("dropped %d history partitions older than %s", dropped, before.isoformat())
    return dropped


async def seal(worker: Worker) -> None:
    """Seal the audit rows of ended transactions into the hash chain (a restricted role may not: skipped)."""
    try:
        await worker.store.arun(secops.audit_seal(worker.id))
    except DatabaseError as exc:
        if worker.id not in _SEAL_WARNED:
            log.warning("cannot seal the audit trail (%s); run the leader as the owner or an admin role", exc)
            _SEAL_WARNED.add(worker.id)


async def prune(worker: Worker) -> int:
    """Delete succeeded and cancelled jobs older than the retention; dead ones stay for the operator.

    Whole partitions go in `history`; this deletes what lies outside them (the default partition)."""
    before = worker.clock.now() - timedelta(seconds=worker.options.retention)
    total = 0
    for state in (JobState.SUCCEEDED, JobState.CANCELLED):
        while (deleted := await worker.store.arun(ops.prune(state, before))) > 0:
            total += deleted
    while await worker.store.arun(dispatch.prune_keys(worker.clock.now())) > 0:
        pass
    return total
