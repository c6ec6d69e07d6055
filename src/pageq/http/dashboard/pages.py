"""The pages: overview, queues, jobs, one job, the dead-letter queue, workers, the audit trail; and the data
behind them (the chart series as JSON, the live values as server-sent events). Every read goes through the
app acting as the viewer, so each page shows only what the viewer's grants let it read."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse

import pageq
from pageq.http.dashboard import live, render
from pageq.http.dashboard.route import PageRoute
from pageq.http.dashboard.session import LoginRequired, Viewer, viewer
from pageq.http.models import MAX_ID, NAME_PATTERN
from pageq.stats import SHOWN_STATES
from pageq.types import check_name

router = APIRouter(route_class=PageRoute, include_in_schema=False)

Name = Annotated[str | None, Query(max_length=128)]  # a form's "any" sends it empty: see _name
Cursor = Annotated[int | None, Query(ge=1, le=MAX_ID)]
PageSize = Annotated[int, Query(ge=1, le=500)]
FMT = {name: render.env.filters[name] for name in ("age", "duration", "size", "rate")}
STREAM_INTERVAL = 1.0


def _now(who: Viewer) -> tuple[live.Now, dict[str, str]]:
    now = live.read(who.app)
    return now, live.values(now, FMT)


@router.get("/", response_class=HTMLResponse)
def overview(request: Request) -> HTMLResponse:
    who = viewer(request)
    now, values = _now(who)
    return render.page(request, "overview.html", who, now=now, values=values, queue=None)


@router.get("/queues", response_class=HTMLResponse)
def queues(request: Request) -> HTMLResponse:
    who = viewer(request)
    now, values = _now(who)
    names = sorted({q.queue for q in now.queues} | set(now.controls))
    summaries = {q.queue: q for q in now.queues}
    manage = {name: who.app.can("manage", name) for name in names}
    return render.page(
        request, "queues.html", who, now=now, values=values, names=names, summaries=summaries,
        manage=manage,
    )  # fmt: skip


@router.get("/queues/{name}", response_class=HTMLResponse)
def queue(request: Request, name: Annotated[str, Path(pattern=NAME_PATTERN, max_length=128)]) -> HTMLResponse:
    who = viewer(request)
    now, values = _now(who)
    summary = next((q for q in now.queues if q.queue == name), None)
    control = now.controls.get(name)
    if summary is None and control is None:
        raise pageq.JobNotFoundError(f"no queue {name!r} (or you may not read it)")
    return render.page(
        request, "queue.html", who, now=now, values=values, name=name, summary=summary,
        control=control or pageq.QueueControl(name), manage=who.app.can("manage", name),
        whole=who.app.can("read", name),
    )  # fmt: skip


@router.get("/jobs", response_class=HTMLResponse)
def jobs(
    request: Request,
    state: Annotated[list[pageq.JobState] | None, Query()] = None,
    queue: Name = None,
    task: Name = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
    order: Literal["newest", "oldest"] = "newest",
    before: Cursor = None,
    after: Cursor = None,
    limit: PageSize = 50,
) -> HTMLResponse:
    who = viewer(request)
    queue, task = _name("queue", queue), _name("task", task)
    search = q.strip() if q and q.strip() else None
    page = who.app.page_jobs(
        state, queue=queue, task=task, search=search, order=order, before_id=before, after_id=after,
        limit=limit,
    )  # fmt: skip
    filters = {"state": [s.value for s in state or []], "queue": queue, "task": task, "q": search,
               "order": order, "limit": limit}  # fmt: skip
    return render.page(
        request, "jobs.html", who, page=page, filters=filters, states=[s.value for s in pageq.JobState],
        queue_names=_queue_names(who), task_names=sorted(who.app.tasks), paged=bool(before or after),
    )  # fmt: skip


def _name(kind: str, value: str | None) -> str | None:
    return check_name(kind, value) if value else None


def _queue_names(who: Viewer) -> list[str]:
    return sorted({q.queue for q in who.app.stats.queues()} | {c.name for c in who.app.queue_controls()})


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job(request: Request, job_id: Annotated[int, Path(ge=1, le=MAX_ID)]) -> HTMLResponse:
    """One job (the viewer must be allowed to read it: then its arguments and result are shown too)."""
    who = viewer(request)
    found = who.app.get_job(job_id)
    return render.page(
        request, "job.html", who, job=found, events=who.app.job_events(job_id),
        manage=who.app.can("manage", found.queue, found.task),
    )  # fmt: skip


@router.get("/dead", response_class=HTMLResponse)
def dead(
    request: Request, queue: Name = None, task: Name = None, before: Cursor = None, limit: PageSize = 50
) -> HTMLResponse:
    who = viewer(request)
    queue, task = _name("queue", queue), _name("task", task)
    page = who.app.page_jobs(pageq.JobState.DEAD, queue=queue, task=task, before_id=before, limit=limit)
    now, values = _now(who)
    total = sum(
        m.dead for q in now.queues for m in q.tasks if queue in (None, q.queue) and task in (None, m.task)
    )
    return render.page(
        request, "dead.html", who, page=page, filters={"queue": queue, "task": task, "limit": limit},
        total=total, values=values, queue_names=_queue_names(who), task_names=sorted(who.app.tasks),
        manage=who.app.can("manage", queue or "*", task or "*"),
    )  # fmt: skip


@router.get("/workers", response_class=HTMLResponse)
def workers(request: Request) -> HTMLResponse:
    who = viewer(request)
    now, values = _now(who)
    return render.page(request, "workers.html", who, now=now, values=values)


@router.get("/audit", response_class=HTMLResponse)
def audit(
    request: Request,
    principal: Annotated[str | None, Query(max_length=128)] = None,
    action: Annotated[str | None, Query(max_length=64)] = None,
    job: Annotated[str | None, Query(max_length=20)] = None,
    decision: Annotated[str | None, Query(max_length=8)] = None,
    before: Cursor = None,
    limit: PageSize = 100,
) -> HTMLResponse:
    """The audit trail (needs ``manage`` on everything, as `app.security.audit` does), newest first."""
    who = viewer(request)
    job_id = _id("job", job)
    if decision not in (None, "", "allow", "deny"):
        raise pageq.InvalidOptionError("decision must be allow or deny")
    rows = who.app.security.audit(
        principal=principal or None, action=action or None, job_id=job_id, decision=decision or None,
        before_id=before, limit=limit,
    )  # fmt: skip
    filters = {
        "principal": principal or "", "action": action or "", "job": job_id, "decision": decision or "",
        "limit": limit,
    }  # fmt: skip
    more = rows[-1].id if len(rows) == limit else None
    return render.page(request, "audit.html", who, rows=rows, filters=filters, more=more)


def _id(name: str, text: str | None) -> int | None:
    if not text:
        return None
    if not text.isdigit() or not 1 <= int(text) <= MAX_ID:
        raise pageq.InvalidOptionError(f"{name} must be a job id")
    return int(text)


@router.get("/series")
def series(
    request: Request, minutes: Annotated[int, Query(ge=5, le=1440)] = 60, queue: Name = None
) -> JSONResponse:
    """The chart data of the overview and queue pages: the rolled-up minutes, one array per line."""
    who = viewer(request)
    points = who.app.stats.series(minutes, queue=_name("queue", queue))
    return JSONResponse(_columns(points, minutes), headers={"Cache-Control": "no-store"})


def _columns(points: list[pageq.MinuteStats], minutes: int) -> dict[str, Any]:
    data: dict[str, Any] = {"minutes": minutes, "t": [p.minute.timestamp() for p in points]}
    for name in ("enqueued", "succeeded", "failed", "dead", "cancelled"):
        data[name] = [getattr(p.counts, name) for p in points]
    for kind in ("wait", "run"):
        for pct in ("p50", "p95", "p99"):
            data[f"{kind}_{pct}"] = [
                None if p.latency is None else getattr(getattr(p.latency, kind), pct) for p in points
            ]
    data["depth"] = {
        s.value: [None if p.jobs is None else p.jobs.get(s, 0) for p in points] for s in SHOWN_STATES
    }
    return data


@router.get("/events")
async def events(request: Request) -> StreamingResponse:
    """Server-sent events: the live values every second, until the session ends."""
    await run_in_threadpool(viewer, request)

    async def current() -> pageq.App | None:
        if await request.is_disconnected():
            return None
        try:
            return (await run_in_threadpool(lambda: viewer(request, limited=False))).app
        except LoginRequired:
            return None

    return StreamingResponse(
        live.stream(current, STREAM_INTERVAL, FMT), media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )  # fmt: skip
