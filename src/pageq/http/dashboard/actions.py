"""What the dashboard changes: log in and out; pause, resume and limit a queue; cancel, retry a job; requeue
and purge dead jobs. Each is a form POST that must come from a page of this origin (``Sec-Fetch-Site``) and
carry the session's CSRF token; the ids it acts on come from the path (or, for a selection of dead jobs,
the form), never from the query string. The app acting as the viewer checks the ``manage`` grant and the
store audits the change; then the browser is sent back (303) with a one-line message."""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Annotated, TypeVar

from fastapi import APIRouter, Path
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

import pageq
from pageq.http.dashboard import render, session
from pageq.http.dashboard.route import PageRoute
from pageq.http.dashboard.session import Forbidden, Viewer
from pageq.http.models import MAX_ID, NAME_PATTERN
from pageq.http.route import Served
from pageq.types import check_name

router = APIRouter(route_class=PageRoute, include_in_schema=False)
QueueName = Annotated[str, Path(pattern=NAME_PATTERN, max_length=128)]
JobId = Annotated[int, Path(ge=1, le=MAX_ID)]
T = TypeVar("T")
Fields = dict[str, list[str]]


# ----- session
@router.get("/login", response_class=Response)
def login_page(request: Request, next: str | None = None) -> Response:
    nonce = session.login_nonce(request)
    response = render.page(
        request, "login.html", None, next=session.local_path(next), error=None, login=nonce
    )
    session.set_login_nonce(response, request, nonce)
    return response


@router.post("/login", response_class=Response)
async def login(request: Request) -> Response:
    session.same_origin(request)
    fields = await session.form(request)
    expected = request.cookies.get(session.LOGIN_COOKIE, "")
    if not expected or not hmac.compare_digest(_one(fields, "login").encode(), expected.encode()):
        raise Forbidden("missing or wrong login form token (reload the login page)")
    token, target = _one(fields, "token").strip(), session.local_path(_one(fields, "next"))
    served: Served = request.app.state.pageq
    try:
        await run_in_threadpool(served.auth.bearer, token)
    except pageq.AuthenticationError:
        return render.page(
            request, "login.html", None, 401, next=target, error="invalid or revoked token", login=expected
        )
    response = RedirectResponse(_base(request) + target, status_code=303)
    session.set_session(response, request, token)
    response.delete_cookie(session.LOGIN_COOKIE, path="/", httponly=True, samesite="strict")
    return response


@router.post("/logout", response_class=Response)
async def logout(request: Request) -> Response:
    await _checked(request)
    response = RedirectResponse(_base(request) + "/login", status_code=303)
    session.clear_session(response, request)
    return response


# ----- queues
@router.post("/queues/{name}/pause", response_class=Response)
async def pause(request: Request, name: QueueName) -> Response:
    who, _ = await _checked(request)
    await _run(who.app.pause_queue, name)
    return _back(request, f"/queues/{name}", f"queue {name} paused: workers start none of its jobs")


@router.post("/queues/{name}/resume", response_class=Response)
async def resume(request: Request, name: QueueName) -> Response:
    who, _ = await _checked(request)
    await _run(who.app.resume_queue, name)
    return _back(request, f"/queues/{name}", f"queue {name} resumed")


@router.post("/queues/{name}/limits", response_class=Response)
async def limits(request: Request, name: QueueName) -> Response:
    who, fields = await _checked(request)
    rate, weight = _number(fields, "rate_limit", int), _number(fields, "weight", int)
    changes = {
        "concurrency": _number(fields, "concurrency", int),
        "rate": None if rate is None else (rate, _number(fields, "rate_period", float) or 1.0),
        "weight": 1 if weight is None else weight,
    }
    control = await _run(lambda: who.app.control_queue(name, **changes))
    unlimited = "unlimited"
    rate_text = unlimited if control.rate_limit is None else f"{control.rate_limit}/{control.rate_period:g} s"
    concurrency = unlimited if control.concurrency is None else control.concurrency
    shown = f"concurrency {concurrency}, rate {rate_text}, weight {control.weight}"
    return _back(request, f"/queues/{name}", f"queue {name} limits: {shown}")


# ----- jobs
@router.post("/jobs/{job_id}/cancel", response_class=Response)
async def cancel(request: Request, job_id: JobId) -> Response:
    who, _ = await _checked(request)
    job = await _run(who.app.cancel, job_id)
    return _back(request, f"/jobs/{job_id}", f"job {job_id} {job.state.value}")


@router.post("/jobs/{job_id}/retry", response_class=Response)
async def retry(request: Request, job_id: JobId) -> Response:
    who, _ = await _checked(request)
    job = await _run(who.app.retry, job_id)
    return _back(request, f"/jobs/{job_id}", f"job {job_id} {job.state.value} again")


# ----- the dead-letter queue
@router.post("/dead/requeue", response_class=Response)
async def requeue_dead(request: Request) -> Response:
    who, fields = await _checked(request)
    ids, queue, task = _selection(fields)
    done = await _run(lambda: who.app.requeue_dead(ids, queue=queue, task=task))
    return _back(request, "/dead", f"requeued {len(done)} dead job{'s' if len(done) != 1 else ''}")


@router.post("/dead/purge", response_class=Response)
async def purge_dead(request: Request) -> Response:
    who, fields = await _checked(request)
    ids, queue, task = _selection(fields)
    count = await _run(lambda: who.app.purge_dead(ids, queue=queue, task=task))
    return _back(request, "/dead", f"purged {count} dead job{'s' if count != 1 else ''}")


# ----- helpers
async def _checked(request: Request) -> tuple[Viewer, Fields]:
    """The viewer of a state-changing request that passed both CSRF checks, and its form."""
    session.same_origin(request)
    who = await run_in_threadpool(session.viewer, request)
    fields = await session.form(request)
    session.check_csrf(fields, who.csrf)
    return who, fields


async def _run(call: Callable[..., T], *args: object) -> T:
    return await run_in_threadpool(call, *args)


def _one(fields: Fields, name: str) -> str:
    values = fields.get(name) or [""]
    return values[0]


def _number(fields: Fields, name: str, kind: Callable[[str], T]) -> T | None:
    text = _one(fields, name).strip()
    if not text:
        return None
    try:
        return kind(text)
    except ValueError:
        raise pageq.InvalidOptionError(f"{name} must be a number, got {text[:20]!r}") from None


def _selection(fields: Fields) -> tuple[list[int] | None, str | None, str | None]:
    """The dead jobs a form names: the ticked ids (``all`` unticked), or all those matching its filters."""
    if _one(fields, "all") == "1":
        queue, task = _one(fields, "queue") or None, _one(fields, "task") or None
        for kind, value in (("queue", queue), ("task", task)):
            if value is not None:
                check_name(kind, value)
        return None, queue, task
    try:
        ids = sorted({int(value) for value in fields.get("id", [])})
    except ValueError:
        raise pageq.InvalidOptionError("job ids must be numbers") from None
    if not ids:
        raise pageq.InvalidOptionError("no job selected")
    if len(ids) > 1000 or not all(1 <= i <= MAX_ID for i in ids):
        raise pageq.InvalidOptionError("select 1 to 1000 valid job ids")
    return ids, None, None


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", ""))


def _back(request: Request, path: str, message: str) -> Response:
    response = RedirectResponse(_base(request) + path, status_code=303)
    session.flash(response, request, message)
    return response
