"""The route class of the dashboard's pages and actions: whatever goes wrong is an HTML page with the right
status (a problem+json body would be no use to a person), and a missing or dead session goes to the login
page."""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

import pageq
from pageq.http.dashboard import render
from pageq.http.dashboard.session import Forbidden, LoginRequired, login_url
from pageq.http.problems import Problem

log = logging.getLogger("pageq.http")

_STATUS: list[tuple[type[Exception], int]] = [
    (Forbidden, 403),
    (pageq.AccessDeniedError, 403),
    (pageq.JobNotFoundError, 404),
    (pageq.InvalidStateError, 409),
    (pageq.InvalidOptionError, 400),
    (RequestValidationError, 400),
    (pageq.DatabaseError, 503),
    (pageq.MigrationError, 503),
]


class PageRoute(APIRoute):
    """A dashboard page or action."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired:
                target = login_url(request) if request.method == "GET" else _base(request) + "/login"
                return RedirectResponse(target, status_code=303)
            except Problem as exc:  # the rate limit
                return error(request, exc.status, exc.detail, exc.headers)
            except Exception as exc:
                return error(request, *_described(exc))

        return run


def _base(request: Request) -> str:
    return str(request.scope.get("root_path", ""))


def _described(exc: Exception) -> tuple[int, str]:
    for kind, status in _STATUS:
        if isinstance(exc, kind):
            if status == 503:
                log.warning("%s", exc)
                return status, "the database is unavailable"
            if isinstance(exc, RequestValidationError):
                return status, "the request is not valid: " + "; ".join(_where(e) for e in exc.errors()[:5])
            return status, str(exc)
    log.exception("unexpected error", exc_info=exc)
    return 500, "internal error"


def _where(error: Any) -> str:
    loc = ".".join(str(part) for part in error.get("loc", ()) if part not in ("query", "path"))
    return f"{loc}: {error.get('msg', '')}"


def error(
    request: Request, status: int, detail: str, headers: dict[str, str] | None = None
) -> Response:  # fmt: skip
    response = render.page(request, "error.html", None, status, code=status, detail=detail)
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response
