"""The remote-worker protocol: claim a batch of jobs with lease tokens, heartbeat, complete, fail,
release. A lost lease (rescued, cancelled, finished) answers 409 and changes nothing."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Path

import pageq
from pageq.http.models import (
    MAX_ID,
    Acknowledged,
    Claimed,
    ClaimedJob,
    ClaimRequest,
    CompleteRequest,
    FailRequest,
    HeartbeatRequest,
    LeaseRequest,
)
from pageq.http.problems import documented
from pageq.http.route import Acting, ApiRoute

router = APIRouter(
    route_class=ApiRoute, tags=["workers"], responses=documented(400, 401, 403, 413, 415, 422, 429, 503)
)
JobIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="The job's id.")]


@router.post("/v1/claims", response_model=Claimed)
def claim(request: ClaimRequest, acting: Acting) -> Claimed:
    """Lease up to ``limit`` runnable jobs of ``queues`` (in priority, then run_at, then id order)."""
    jobs = acting.leases.claim(
        request.queues, limit=request.limit, lease=request.lease, worker=request.worker, tasks=request.tasks
    )
    expires = acting.clock.now() + timedelta(seconds=request.lease)
    return Claimed(jobs=[_claimed(job, expires) for job in jobs])


def _claimed(job: pageq.Job, expires: datetime) -> ClaimedJob:
    assert job.lease_token is not None
    return ClaimedJob(
        id=job.id, task=job.task, queue=job.queue, args=job.args, priority=job.priority,
        attempts=job.attempts, max_attempts=job.max_attempts, run_at=job.run_at, created_at=job.created_at,
        timeout=job.timeout,
        lease_token=UUID(job.lease_token), lease_expires_at=expires,
    )  # fmt: skip


@router.post("/v1/jobs/{job_id}/heartbeat", response_model=Acknowledged, responses=documented(404, 409))
def heartbeat(job_id: JobIdPath, request: HeartbeatRequest, acting: Acting) -> Acknowledged:
    """Extend the lease of a job the caller holds to ``lease`` seconds from now."""
    expires = acting.leases.heartbeat(job_id, str(request.lease_token), request.lease)
    return Acknowledged(id=job_id, state=pageq.JobState.RUNNING, lease_expires_at=expires)


@router.post("/v1/jobs/{job_id}/complete", response_model=Acknowledged, responses=documented(404, 409))
def complete(job_id: JobIdPath, request: CompleteRequest, acting: Acting) -> Acknowledged:
    """The job succeeded with ``result``."""
    acting.leases.complete(job_id, str(request.lease_token), request.result)
    return Acknowledged(id=job_id, state=pageq.JobState.SUCCEEDED)


@router.post("/v1/jobs/{job_id}/fail", response_model=Acknowledged, responses=documented(404, 409))
def fail(job_id: JobIdPath, request: FailRequest, acting: Acting) -> Acknowledged:
    """The attempt failed: the job is retried (``retrying``, with its ``run_at``) or ``dead``."""
    outcome = acting.leases.fail(
        job_id, str(request.lease_token), request.error, traceback=request.traceback,
        retry_in=request.retry_in, retryable=request.retryable,
    )  # fmt: skip
    return Acknowledged(id=job_id, state=outcome.state, run_at=outcome.run_at)


@router.post("/v1/jobs/{job_id}/release", response_model=Acknowledged, responses=documented(404, 409))
def release(job_id: JobIdPath, request: LeaseRequest, acting: Acting) -> Acknowledged:
    """Give a held job back at once (a worker shutting down): queued again, the attempt not counted."""
    acting.leases.release(job_id, str(request.lease_token))
    return Acknowledged(id=job_id, state=pageq.JobState.QUEUED)
