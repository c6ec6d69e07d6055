"""The web dashboard that ``pageq serve`` serves at ``/`` (docs/dashboard.md): overview with live charts,
queues, jobs, one job with its attempts and audit timeline, the dead-letter queue, workers, the audit trail.

Server-rendered pages (Jinja2 templates in this package) with a small script of our own for the charts and
the live values (server-sent events); no asset comes from anywhere but this package. Not public API beyond
what `pageq.http.create_app` mounts.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from pageq.http.dashboard import actions, pages

STATIC = Path(__file__).parent / "static"


def install(api: FastAPI) -> None:
    """Serve the dashboard's pages, actions and assets from ``api``."""
    api.include_router(pages.router)
    api.include_router(actions.router)
    api.mount("/static", StaticFiles(directory=STATIC), name="dashboard-static")


__all__ = ["install"]
