"""Request and response bodies of the API (they make its OpenAPI 3.1 document)."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

import pageq
from pageq.types import MAX_ATTEMPTS_RANGE, PRIORITY_RANGE

NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]{0,127}$"
TEN_YEARS = 10 * 365 * 86400.0
MAX_ID = 2**63 - 1

Name = Annotated[str, Field(pattern=NAME_PATTERN, max_length=128)]


def _iso(value: object) -> object:
    """A time must be written as RFC 3339 (a number is not a time, whatever pydantic would make of it)."""
    if isinstance(value, str) and not re.match(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}", value):
        raise ValueError("expected an RFC 3339 date-time with a time zone")
    if not isinstance(value, str | datetime):
        raise ValueError("expected an RFC 3339 date-time with a time zone")
    return value


Time = Annotated[AwareDatetime, BeforeValidator(_iso)]
"""A point in time, RFC 3339 with a time zone."""
JobId = Annotated[int, Field(ge=1, le=MAX_ID)]


class Strict(BaseModel):
    """A request body: unknown fields refused, no coercion (``true`` is not a number, ``"1"`` not an int)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class EnqueueRequest(Strict):
    """One job: its task, keyword arguments, and options that override the task's defaults."""

    task: Name
    args: dict[str, Any] = Field(default_factory=dict)
    queue: Name | None = None
    priority: Annotated[int, Field(ge=PRIORITY_RANGE[0], le=PRIORITY_RANGE[1])] | None = None
    delay: Annotated[float, Field(ge=0, le=TEN_YEARS)] | None = None
    run_at: Annotated[Time, Field(strict=False)] | None = None
    max_attempts: Annotated[int, Field(ge=MAX_ATTEMPTS_RANGE[0], le=MAX_ATTEMPTS_RANGE[1])] | None = None
    timeout: Annotated[float, Field(gt=0, le=TEN_YEARS)] | None = None

    def options(self) -> dict[str, Any]:
        fields = ("queue", "priority", "delay", "run_at", "max_attempts", "timeout")
        return {name: getattr(self, name) for name in fields if getattr(self, name) is not None}


class BatchRequest(Strict):
    jobs: Annotated[list[EnqueueRequest], Field(min_length=1, max_length=10_000)]


class Enqueued(BaseModel):
    id: int


class EnqueuedBatch(BaseModel):
    ids: list[int]


class AttemptOut(BaseModel):
    attempt: int
    error: str
    traceback: str | None
    worker: str | None
    at: str

    @classmethod
    def of(cls, e: pageq.Attempt) -> AttemptOut:
        return cls(attempt=e.attempt, error=e.error, traceback=e.traceback, worker=e.worker, at=e.at)


class JobOut(BaseModel):
    """A job as stored (never its lease token: only the worker holding it sees that)."""

    id: int
    task: str
    queue: str
    args: dict[str, Any]
    state: pageq.JobState
    priority: int
    attempts: int
    max_attempts: int
    run_at: datetime
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    worker: str | None
    result: Any
    errors: list[AttemptOut]
    timeout: float | None

    @classmethod
    def of(cls, job: pageq.Job) -> JobOut:
        return cls(
            id=job.id, task=job.task, queue=job.queue, args=job.args, state=job.state,
            priority=job.priority, attempts=job.attempts, max_attempts=job.max_attempts, run_at=job.run_at,
            created_at=job.created_at, started_at=job.started_at, finished_at=job.finished_at,
            worker=job.worker, result=job.result, errors=[AttemptOut.of(e) for e in job.errors],
            timeout=job.timeout,
        )  # fmt: skip


class JobList(BaseModel):
    """A page of jobs, newest first; ``next_cursor`` fetches the next page (null: this was the last)."""

    jobs: list[JobOut]
    next_cursor: str | None


class ClaimRequest(Strict):
    """Lease up to ``limit`` jobs of ``queues`` for ``lease`` seconds (``tasks``: only these task names)."""

    queues: Annotated[list[Name], Field(min_length=1, max_length=64)]
    limit: Annotated[int, Field(ge=1, le=1000)] = 10
    lease: Annotated[float, Field(ge=1, le=86400)] = 30.0
    tasks: Annotated[list[Name], Field(min_length=1, max_length=1000)] | None = None
    worker: Name = "remote"


class ClaimedJob(BaseModel):
    """A job leased to the caller: acknowledge it with its ``lease_token`` before ``lease_expires_at``."""

    id: int
    task: str
    queue: str
    args: dict[str, Any]
    priority: int
    attempts: int
    max_attempts: int
    run_at: datetime
    created_at: datetime
    timeout: float | None
    lease_token: UUID
    lease_expires_at: datetime


class Claimed(BaseModel):
    jobs: list[ClaimedJob]


class LeaseRequest(Strict):
    lease_token: Annotated[UUID, Field(strict=False)]


class HeartbeatRequest(LeaseRequest):
    lease: Annotated[float, Field(ge=1, le=86400)] = 30.0


class CompleteRequest(LeaseRequest):
    result: Any = None


class FailRequest(LeaseRequest):
    """A failed attempt: retried after ``retry_in`` seconds (default: the task's backoff), or dead when
    ``retryable`` is false or the attempts are spent."""

    error: Annotated[str, Field(min_length=1, max_length=10_000)]
    traceback: Annotated[str, Field(max_length=65_536)] | None = None
    retry_in: Annotated[float, Field(ge=0, le=TEN_YEARS)] | None = None
    retryable: bool = True


class Acknowledged(BaseModel):
    id: int
    state: pageq.JobState
    run_at: datetime | None = None
    lease_expires_at: datetime | None = None


class QueueOut(BaseModel):
    """A queue: jobs by state, the age of its oldest waiting job, recent throughput and its controls."""

    name: str
    counts: dict[str, int]
    oldest_queued_age: float | None
    completed_last_minute: int
    paused: bool
    concurrency: int | None
    rate_limit: int | None
    rate_period: float | None
    weight: int


class QueueList(BaseModel):
    queues: list[QueueOut]


class QueueControlOut(BaseModel):
    name: str
    paused: bool
    concurrency: int | None
    rate_limit: int | None
    rate_period: float | None
    weight: int

    @classmethod
    def of(cls, control: pageq.QueueControl) -> QueueControlOut:
        return cls(
            name=control.name, paused=control.paused, concurrency=control.concurrency,
            rate_limit=control.rate_limit, rate_period=control.rate_period, weight=control.weight,
        )  # fmt: skip


class QueueLimits(Strict):
    """Controls to change (absent: kept; null: no limit). ``rate_limit`` starts per ``rate_period`` s."""

    concurrency: Annotated[int, Field(ge=0, le=1_000_000)] | None = None
    rate_limit: Annotated[int, Field(ge=0, le=1_000_000)] | None = None
    rate_period: Annotated[float, Field(ge=0.001, le=86400 * 31)] = 1.0
    weight: Annotated[int, Field(ge=1, le=1000)] | None = None


class RequeueRequest(Strict):
    """Dead jobs to requeue: these ids, or those matching the filters (at most ``limit``)."""

    ids: Annotated[list[JobId], Field(min_length=1, max_length=10_000)] | None = None
    queue: Name | None = None
    task: Name | None = None
    limit: Annotated[int, Field(ge=1, le=10_000)] = 10_000


class Requeued(BaseModel):
    requeued: list[int]


class PurgeRequest(Strict):
    queue: Name | None = None
    task: Name | None = None
    older_than: Annotated[float, Field(ge=0, le=TEN_YEARS)] | None = None


class Purged(BaseModel):
    purged: int


class Health(BaseModel):
    status: str
