"""Queues: jobs by state with recent activity, and their controls (pause, resume, limits)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

import pageq
from pageq.http.models import NAME_PATTERN, QueueControlOut, QueueLimits, QueueList, QueueOut
from pageq.http.problems import Problem, documented
from pageq.http.route import Acting, ApiRoute

router = APIRouter(
    route_class=ApiRoute, tags=["queues"], responses=documented(400, 401, 403, 413, 415, 422, 429, 503)
)
QueueName = Annotated[str, Path(pattern=NAME_PATTERN, max_length=128, description="The queue's name.")]


def _queues(acting: pageq.App) -> list[QueueOut]:
    stats = {s.queue: s for s in acting.queue_stats()}
    controls = {c.name: c for c in acting.queue_controls()}
    found = []
    for name in sorted({*stats, *controls}):
        stat, control = stats.get(name), controls.get(name) or pageq.QueueControl(name)
        found.append(QueueOut(
            name=name, counts={state.value: n for state, n in stat.counts.items()} if stat else {},
            oldest_queued_age=stat.oldest_queued_age if stat else None,
            completed_last_minute=stat.completed_last_minute if stat else 0, paused=control.paused,
            concurrency=control.concurrency, rate_limit=control.rate_limit, rate_period=control.rate_period,
            weight=control.weight,
        ))  # fmt: skip
    return found


@router.get("/v1/queues", response_model=QueueList)
def list_queues(acting: Acting) -> QueueList:
    """Every queue the caller may read: jobs by state, oldest waiting job, throughput, controls."""
    return QueueList(queues=_queues(acting))


@router.get("/v1/queues/{name}", response_model=QueueOut, responses=documented(404))
def get_queue(name: QueueName, acting: Acting) -> QueueOut:
    """One queue (404 if it has no jobs and no controls, or the caller may not read it)."""
    found = [q for q in _queues(acting) if q.name == name]
    if not found:
        raise Problem(404, "not_found", f"no queue {name!r}")
    return found[0]


@router.post("/v1/queues/{name}/pause", response_model=QueueControlOut)
def pause_queue(name: QueueName, acting: Acting) -> QueueControlOut:
    """Stop every worker from starting jobs of the queue (running ones finish)."""
    return QueueControlOut.of(acting.pause_queue(name))


@router.post("/v1/queues/{name}/resume", response_model=QueueControlOut)
def resume_queue(name: QueueName, acting: Acting) -> QueueControlOut:
    """Let workers start jobs of the queue again."""
    return QueueControlOut.of(acting.resume_queue(name))


@router.patch("/v1/queues/{name}", response_model=QueueControlOut)
def limit_queue(name: QueueName, limits: QueueLimits, acting: Acting) -> QueueControlOut:
    """Change the queue's limits in one write: concurrency, rate (rate_limit per rate_period s), weight."""
    given = limits.model_fields_set
    changes: dict[str, object] = {}
    if "concurrency" in given:
        changes["concurrency"] = limits.concurrency
    if "rate_limit" in given:
        changes["rate"] = None if limits.rate_limit is None else (limits.rate_limit, limits.rate_period)
    if "weight" in given and limits.weight is not None:
        changes["weight"] = limits.weight
    return QueueControlOut.of(acting.control_queue(name, **changes))
