"""The HTTP API: ``pageq serve module:app``, or `create_app` for any ASGI server.

Example::

    from pageq.http import create_app
    from myapp.tasks import app

    api = create_app(app)          # an ASGI app: uvicorn myapp.api:api
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.requests import Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

import pageq
from pageq.http import dashboard, health, jobs, problems, queues, scrape, webhooks, work
from pageq.http.auth import Authenticator
from pageq.http.dashboard.headers import NONCE_KEY, RELAXED_STYLES_KEY, SecurityHeaders
from pageq.http.route import Served
from pageq.http.settings import Settings
from pageq.security.signing import SCHEME

STATIC = Path(fastapi_offline.__file__).parent / "static"  # Swagger UI, shipped in the wheel: no CDN
DESCRIPTION = """Enqueue, inspect and work pageq jobs over HTTP. Every operation but the health checks needs
credentials: a bearer token (`pageq tokens create`) or a signed request (`PQ-HMAC-SHA256`, see
docs/http-api.md); the caller's grants decide what it may do. Errors are RFC 9457 problem details."""


def create_app(app: pageq.App, settings: Settings | None = None) -> FastAPI:
    """An ASGI application serving ``app`` over HTTP (OpenAPI 3.1 at ``/openapi.json``, docs at ``/docs``)
    and its web dashboard at ``/`` (docs/dashboard.md)."""
    settings = settings or Settings.from_env()
    api = _API(
        title="pageq", version=pageq.__version__, description=DESCRIPTION, docs_url=None, redoc_url=None
    )
    api.state.pageq = Served(app, settings, Authenticator(app, settings))
    problems.install(api)
    for module in (jobs, work, queues, webhooks, scrape, health):
        api.include_router(module.router)
    api.mount("/docs/static", StaticFiles(directory=STATIC), name="docs-static")

    @api.get("/docs", include_in_schema=False)
    def docs(request: Request) -> HTMLResponse:
        page = get_swagger_ui_html(
            openapi_url="/openapi.json", title="pageq API",
            swagger_js_url="/docs/static/swagger-ui-bundle.js", swagger_css_url="/docs/static/swagger-ui.css",
            swagger_favicon_url="/docs/static/favicon.png",
            swagger_ui_parameters={"validatorUrl": None},  # no badge fetched from the online validator
        )  # fmt: skip
        setattr(request.state, RELAXED_STYLES_KEY, True)  # the bundle styles elements inline
        nonce = getattr(request.state, NONCE_KEY)
        html = bytes(page.body).decode().replace("<script", f'<script nonce="{nonce}"')
        return HTMLResponse(html)

    dashboard.install(api)
    api.add_middleware(SecurityHeaders)
    return api


class _API(FastAPI):
    def openapi(self) -> dict[str, Any]:
        if self.openapi_schema is None:
            self.openapi_schema = _document(self)
        return self.openapi_schema


def _document(api: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with the problem schema and the two ways to authenticate."""
    document = get_openapi(
        title=api.title, version=api.version, description=api.description, routes=api.routes
    )
    components = document.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    schemas["ProblemBody"] = problems.ProblemBody.model_json_schema(
        ref_template="#/components/schemas/{model}"
    )
    components["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "A token from `pageq tokens create`."},
        "signature": {
            "type": "apiKey", "in": "header", "name": "Authorization",
            "description": f"`{SCHEME} key=...,ts=...,nonce=...,sig=...` (docs/http-api.md).",
        },
    }  # fmt: skip
    document["security"] = [{"bearer": []}, {"signature": []}]
    return document


__all__ = ["Settings", "create_app"]
