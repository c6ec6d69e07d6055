"""Jobs: enqueue one or a batch (``Idempotency-Key`` honoured), get, list, cancel, requeue; and the
dead-letter queue."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path, Query, Response

import pageq
from pageq.http.models import (
    MAX_ID,
    NAME_PATTERN,
    BatchRequest,
    Enqueued,
    EnqueuedBatch,
    EnqueueRequest,
    JobList,
    JobOut,
    Purged,
    PurgeRequest,
    Requeued,
    RequeueRequest,
    Time,
)
from pageq.http.problems import Problem, documented
from pageq.http.route import Acting, ApiRoute, ServedApp

router = APIRouter(
    route_class=ApiRoute, tags=["jobs"], responses=documented(400, 401, 403, 413, 415, 429, 503)
)

JobIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="The job's id.")]
NameQuery = Annotated[str | None, Query(pattern=NAME_PATTERN, max_length=128)]
Cursor = Annotated[str | None, Query(pattern=r"^[1-9][0-9]{0,17}$", description="next_cursor of a page.")]
Limit = Annotated[int, Query(ge=1, le=1000)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key", pattern=r"^[!-~]{1,128}$",
        description="Retrying a request with the same key returns the jobs the first one made.",
    ),
]  # fmt: skip


def _keyed(acting: pageq.App, key: str | None, index: int | None) -> dict[str, Any]:
    """The enqueue option of an Idempotency-Key, scoped to the caller's principal (and a batch's row)."""
    if key is None:
        return {}
    scoped = f"http:{acting.principal}:{key}" + ("" if index is None else f":{index}")
    return {"idempotency_key": scoped}


def _location(response: Response, job_id: int) -> None:
    response.headers["Location"] = f"/v1/jobs/{job_id}"


@router.post("/v1/jobs", status_code=201, response_model=Enqueued, responses=documented(409, 422))
def enqueue(
    job: EnqueueRequest, acting: Acting, response: Response, idempotency_key: IdempotencyKey = None
) -> Enqueued:
    """Enqueue one job of a task the served app defines."""
    options = {**job.options(), **_keyed(acting, idempotency_key, None)}
    job_id = acting.enqueue(job.task, job.args, **options)
    _location(response, job_id)
    return Enqueued(id=job_id)


@router.post("/v1/jobs/batch", status_code=201, response_model=EnqueuedBatch, responses=documented(409, 422))
def enqueue_batch(
    batch: BatchRequest, acting: Acting, served: ServedApp, idempotency_key: IdempotencyKey = None
) -> EnqueuedBatch:
    """Enqueue many jobs in one transaction: all of them or none."""
    if len(batch.jobs) > served.settings.max_batch:
        raise Problem(413, "too_large", f"a batch may hold at most {served.settings.max_batch} jobs")
    specs = []
    for index, job in enumerate(batch.jobs):
        options = {**job.options(), **_keyed(acting, idempotency_key, index)}
        try:
            specs.append(acting.job(job.task, job.args, **options))
        except (pageq.UnknownTaskError, pageq.InvalidOptionError, pageq.SerializationError) as exc:
            raise type(exc)(f"jobs[{index}]: {exc}") from None
    return EnqueuedBatch(ids=acting.enqueue_many(specs))


@router.get("/v1/jobs", response_model=JobList)
def list_jobs(
    acting: Acting,
    state: Annotated[list[pageq.JobState] | None, Query()] = None,
    queue: NameQuery = None,
    task: NameQuery = None,
    created_after: Annotated[Time | None, Query()] = None,
    created_before: Annotated[Time | None, Query()] = None,
    cursor: Cursor = None,
    limit: Limit = 50,
) -> JobList:
    """Jobs newest first, filtered by state (repeatable), queue, task and creation time."""
    page = acting.page_jobs(
        state, queue=queue, task=task, since=created_after, until=created_before,
        before_id=int(cursor) if cursor else None, limit=limit,
    )  # fmt: skip
    return _page(page)


def _page(page: pageq.JobPage) -> JobList:
    more = None if page.next_before_id is None else str(page.next_before_id)
    return JobList(jobs=[JobOut.of(job) for job in page.jobs], next_cursor=more)


@router.get("/v1/jobs/{job_id}", response_model=JobOut, responses=documented(404))
def get_job(job_id: JobIdPath, acting: Acting) -> JobOut:
    """One job, live or finished, with its arguments, result and failed attempts."""
    return JobOut.of(acting.get_job(job_id))


@router.post("/v1/jobs/{job_id}/cancel", response_model=JobOut, responses=documented(404, 409))
def cancel_job(job_id: JobIdPath, acting: Acting) -> JobOut:
    """Cancel a job that has not finished (a running one's worker is told to stop)."""
    return JobOut.of(acting.cancel(job_id))


@router.post("/v1/jobs/{job_id}/requeue", response_model=JobOut, responses=documented(404, 409))
def requeue_job(job_id: JobIdPath, acting: Acting) -> JobOut:
    """Run a job again now: a dead or cancelled one is requeued, a waiting one made due."""
    return JobOut.of(acting.retry(job_id))


@router.get("/v1/dlq", response_model=JobList, tags=["dead-letter queue"])
def list_dead(
    acting: Acting, queue: NameQuery = None, task: NameQuery = None, cursor: Cursor = None, limit: Limit = 50
) -> JobList:
    """The dead-letter queue: dead jobs, newest first."""
    page = acting.page_jobs(
        pageq.JobState.DEAD, queue=queue, task=task, before_id=int(cursor) if cursor else None, limit=limit
    )
    return _page(page)


@router.post(
    "/v1/dlq/requeue", response_model=Requeued, tags=["dead-letter queue"], responses=documented(404)
)
def requeue_dead(request: RequeueRequest, acting: Acting) -> Requeued:
    """Put dead jobs (the given ids, or those matching the filters) back in their queues."""
    ids = acting.requeue_dead(request.ids, queue=request.queue, task=request.task, limit=request.limit)
    return Requeued(requeued=ids)


@router.post("/v1/dlq/purge", response_model=Purged, tags=["dead-letter queue"])
def purge_dead(request: PurgeRequest, acting: Acting) -> Purged:
    """Delete dead jobs for good (those matching the filters)."""
    return Purged(
        purged=acting.purge_dead(queue=request.queue, task=request.task, older_than=request.older_than)
    )
