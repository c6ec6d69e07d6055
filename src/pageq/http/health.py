"""Health checks for load balancers and orchestrators: no credentials needed, nothing revealed."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from pageq.http.models import Health
from pageq.http.problems import Problem, documented
from pageq.http.route import PublicRoute, ServedApp

router = APIRouter(route_class=PublicRoute, tags=["health"])
PUBLIC: dict[str, Any] = {"security": []}


@router.get("/healthz", response_model=Health, openapi_extra=PUBLIC)
def healthz() -> Health:
    """The server process answers."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, openapi_extra=PUBLIC, responses=documented(503))
def readyz(served: ServedApp) -> Health:
    """The database answers and its schema is up to date."""
    if not served.app.migration_status().up_to_date:
        raise Problem(503, "not_ready", "the database schema needs migrations")
    return Health(status="ready")
