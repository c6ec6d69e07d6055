"""The route class of every API operation: body within the limit, then credentials, then strict JSON, in
that order, so that an oversized body is refused before any database work and a caller without credentials
gets 401 whatever the body."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi._compat import is_scalar_field
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.types import Message

import pageq
from pageq.http import body
from pageq.http.auth import Authenticator
from pageq.http.problems import Problem
from pageq.http.settings import Settings


@dataclass(frozen=True)
class Served:
    """What the routes share: the served app, the settings and the authenticator."""

    app: pageq.App
    settings: Settings
    auth: Authenticator


class ApiRoute(APIRoute):
    """An operation that needs credentials."""

    authenticated = True

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        authenticated = self.authenticated
        scalars = {f.alias for f in self.dependant.query_params if is_scalar_field(f)}

        async def run(request: Request) -> Response:
            served: Served = request.app.state.pageq
            raw = await body.read(request, served.settings.max_body)
            if authenticated:
                request.state.acting = await run_in_threadpool(served.auth.acting, request, raw)
            repeated = sorted({k for k in request.query_params if k in scalars} & _repeated(request))
            if repeated:  # a scalar given twice: refused, not silently the last one
                raise Problem(400, "malformed", f"query parameter {repeated[0]!r} given more than once")
            if raw:
                body.parse(request.headers.get("content-type"), raw, served.settings.max_depth)
            return await handler(Request(request.scope, _replay(raw)))

        return run


class PublicRoute(ApiRoute):
    """An operation anyone may call (health checks)."""

    authenticated = False


def _repeated(request: Request) -> set[str]:
    keys = [k for k, _ in request.query_params.multi_items()]
    return {k for k in keys if keys.count(k) > 1}


def _replay(raw: bytes) -> Callable[[], Awaitable[Message]]:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": raw, "more_body": False}

    return receive


def _acting(request: Request) -> pageq.App:
    acting: pageq.App = request.state.acting
    return acting


def _served(request: Request) -> Served:
    served: Served = request.app.state.pageq
    return served


Acting = Annotated[pageq.App, Depends(_acting)]
"""The served app acting as the caller's principal: every action checked and audited under its name."""

ServedApp = Annotated[Served, Depends(_served)]
