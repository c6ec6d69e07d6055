"""Prometheus metrics of the served app at ``/metrics``: the statistics the caller may read (`pageq.metrics`),
in the text exposition format. Scrapers authenticate like any client (a bearer token with read grants)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from pageq import metrics
from pageq.http.problems import documented
from pageq.http.route import Acting, ApiRoute

router = APIRouter(route_class=ApiRoute, tags=["monitoring"], responses=documented(401, 403, 429, 503))


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Metrics."}},
)
def scrape(acting: Acting) -> Response:
    """Queue depth, throughput, wait and run times, workers and the system, as Prometheus metrics (only the
    queues and tasks the caller may read)."""
    body, content_type = metrics.render(acting)
    return Response(content=body, media_type=content_type)
