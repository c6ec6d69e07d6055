"""RFC 9457 problem details: every error the API answers is ``application/problem+json``."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

import pageq

log = logging.getLogger("pageq.http")
MEDIA_TYPE = "application/problem+json"


class Problem(Exception):
    """An error answered as problem details: status, a machine-readable code, a one-line detail."""

    def __init__(
        self, status: int, code: str, detail: str, *, headers: dict[str, str] | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:  # fmt: skip
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail
        self.headers, self.errors = headers or {}, errors


class ProblemBody(BaseModel):
    """RFC 9457 problem details, with pageq's ``code`` and, for a malformed request, ``errors``."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    code: str
    errors: list[dict[str, Any]] | None = None


def response(problem: Problem, instance: str | None) -> JSONResponse:
    body = ProblemBody(
        title=HTTPStatus(problem.status).phrase, status=problem.status, detail=problem.detail,
        instance=instance, code=problem.code, errors=problem.errors,
    )  # fmt: skip
    return JSONResponse(
        body.model_dump(exclude_none=True), problem.status, headers=problem.headers, media_type=MEDIA_TYPE
    )


BEARER = {"WWW-Authenticate": 'Bearer realm="pageq"'}

_MAPPED: list[tuple[type[Exception], int, str]] = [
    (pageq.AuthenticationError, 401, "unauthenticated"),
    (pageq.AccessDeniedError, 403, "forbidden"),
    (pageq.JobNotFoundError, 404, "not_found"),
    (pageq.StaleLeaseError, 409, "stale_lease"),
    (pageq.InvalidStateError, 409, "invalid_state"),
    (pageq.DuplicateJobError, 409, "duplicate"),
    (pageq.UnknownTaskError, 422, "unknown_task"),
    (pageq.InvalidOptionError, 422, "invalid"),
    (pageq.SerializationError, 400, "malformed"),
    (pageq.MigrationError, 503, "not_ready"),
    (pageq.DatabaseError, 503, "unavailable"),
]


def from_error(exc: Exception) -> Problem:
    """The problem a pageq error stands for."""
    if isinstance(exc, Problem):
        return exc
    for kind, status, code in _MAPPED:
        if isinstance(exc, kind):
            detail = str(exc)
            if isinstance(exc, pageq.UnknownTaskError):
                detail = detail.split(": registered tasks are", 1)[0]  # not the list of registered tasks
            if isinstance(exc, pageq.DatabaseError | pageq.MigrationError):
                log.warning("%s", exc)
                detail = "the database is unavailable" if status == 503 else detail
            headers = BEARER if status == 401 else None
            return Problem(status, code, detail, headers=headers)
    log.exception("unexpected error", exc_info=exc)
    return Problem(500, "internal", "internal error")


def _validation(exc: RequestValidationError) -> Problem:
    """A request that does not match the schema: 400, listing where (never echoing the input)."""
    errors = [
        {"loc": [str(part) for part in error.get("loc", ())], "msg": str(error.get("msg", "")),
         "type": str(error.get("type", ""))}
        for error in exc.errors()[:20]
    ]  # fmt: skip
    return Problem(400, "malformed", "the request does not match the API schema", errors=errors)


def install(api: FastAPI) -> None:
    """Answer every failure with problem details."""

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        return response(from_error(exc), request.url.path)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return response(_validation(exc), request.url.path)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        status = exc.status_code
        code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(status).phrase
        return response(Problem(status, code, detail, headers=dict(exc.headers or {})), request.url.path)

    api.add_exception_handler(RequestValidationError, on_validation)
    api.add_exception_handler(HTTPException, on_http)
    api.add_exception_handler(Problem, on_problem)
    api.add_exception_handler(pageq.PageqError, on_problem)
    api.add_exception_handler(Exception, on_problem)  # a bug: 500, logged, still problem details


def documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for these error statuses."""
    return {
        status: {
            "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/ProblemBody"}}},
            "description": HTTPStatus(status).phrase,
        }
        for status in statuses
    }
