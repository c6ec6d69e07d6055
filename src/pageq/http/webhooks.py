"""Webhooks: create, list, get, enable, disable, delete, rotate secrets, delivery logs. Every operation needs
the ``manage`` grant on all jobs (a webhook can see every job's events)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Literal, TypeVar

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field

import pageq
from pageq.http.models import MAX_ID, TEN_YEARS, Strict
from pageq.http.problems import Problem, documented
from pageq.http.route import Acting, ApiRoute
from pageq.webhooks import Delivery, Webhook

router = APIRouter(
    route_class=ApiRoute, tags=["webhooks"], responses=documented(400, 401, 403, 413, 415, 422, 429, 503)
)
T = TypeVar("T")
WebhookIdPath = Annotated[int, Path(ge=1, le=MAX_ID, description="The webhook's id.")]
EventType = Literal[
    "*", "job.enqueued", "job.running", "job.succeeded", "job.retrying", "job.dead", "job.cancelled",
    "job.released", "job.requeued",
]  # fmt: skip
Pattern = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:*\-]{1,128}$", description="A glob ('*' any run).")]


def _all() -> list[EventType]:
    return ["*"]


class WebhookIn(Strict):
    """A new webhook: where to POST which events of which jobs."""

    url: Annotated[str, Field(min_length=8, max_length=2048, description="http:// or https:// URL.")]
    events: Annotated[list[EventType], Field(min_length=1, max_length=16)] = Field(default_factory=_all)
    queue: Pattern = "*"
    task: Pattern = "*"
    max_attempts: Annotated[int, Field(ge=1, le=1000)] = 16
    timeout: Annotated[float, Field(gt=0, le=300)] = 10.0
    description: Annotated[str, Field(max_length=1000)] | None = None
    enabled: bool = True


class WebhookOut(BaseModel):
    """A webhook (its secret never: a hint), with delivery counts over its log."""

    id: int
    url: str
    events: list[str]
    queue: str
    task: str
    secret_hint: str
    enabled: bool
    max_attempts: int
    timeout: float
    description: str | None
    created_at: datetime
    updated_at: datetime
    old_secret_until: datetime | None
    delivered: int
    failed: int

    @classmethod
    def of(cls, hook: Webhook) -> WebhookOut:
        return cls(**{name: getattr(hook, name) for name in cls.model_fields})


class WebhookCreated(BaseModel):
    """The new webhook and its signing secret, shown this once."""

    webhook: WebhookOut
    secret: str


class WebhookList(BaseModel):
    webhooks: list[WebhookOut]


class RotateRequest(Strict):
    keep_old: Annotated[float, Field(ge=0, le=TEN_YEARS, description="Seconds the old secret signs too.")] = (
        86400.0
    )


class Secret(BaseModel):
    """A webhook's new signing secret, shown this once."""

    webhook: int
    secret: str


class DeliveryOut(BaseModel):
    """One delivery attempt: outcome delivered, failed, refused (address guard) or skipped (disabled)."""

    id: int
    delivery: int
    event: int
    event_type: str
    attempt: int
    at: datetime
    outcome: str
    status: int | None
    latency: float | None
    error: str | None

    @classmethod
    def of(cls, item: Delivery) -> DeliveryOut:
        return cls(**{name: getattr(item, name) for name in cls.model_fields})


class DeliveryList(BaseModel):
    deliveries: list[DeliveryOut]
    next_before_id: int | None = Field(description="Pass as before_id for older attempts (null: no more).")


def _found(call: Callable[[], T], webhook: int) -> T:
    """``call``, with "no webhook" answered 404 (not the 422 of other invalid options)."""
    try:
        return call()
    except pageq.InvalidOptionError as exc:
        if str(exc) == f"no webhook with id {webhook}":
            raise Problem(404, "not_found", str(exc)) from None
        raise


@router.post("/v1/webhooks", status_code=201, response_model=WebhookCreated)
def create_webhook(body: WebhookIn, acting: Acting, response: Response) -> WebhookCreated:
    """Subscribe a URL to job events; the answer holds the signing secret, shown this once."""
    hook, secret = acting.webhooks.create(
        body.url, list(body.events), queue=body.queue, task=body.task, max_attempts=body.max_attempts,
        timeout=body.timeout, description=body.description, enabled=body.enabled,
    )  # fmt: skip
    response.headers["Location"] = f"/v1/webhooks/{hook.id}"
    return WebhookCreated(webhook=WebhookOut.of(hook), secret=secret)


@router.get("/v1/webhooks", response_model=WebhookList)
def list_webhooks(acting: Acting) -> WebhookList:
    """Every webhook, by id."""
    return WebhookList(webhooks=[WebhookOut.of(h) for h in acting.webhooks.list()])


@router.get("/v1/webhooks/{webhook_id}", response_model=WebhookOut, responses=documented(404))
def get_webhook(webhook_id: WebhookIdPath, acting: Acting) -> WebhookOut:
    """One webhook."""
    return WebhookOut.of(_found(lambda: acting.webhooks.get(webhook_id), webhook_id))


@router.post("/v1/webhooks/{webhook_id}/enable", response_model=WebhookOut, responses=documented(404))
def enable_webhook(webhook_id: WebhookIdPath, acting: Acting) -> WebhookOut:
    """Deliver again (422 when the audit level does not record its events)."""
    return WebhookOut.of(_found(lambda: acting.webhooks.enable(webhook_id), webhook_id))


@router.post("/v1/webhooks/{webhook_id}/disable", response_model=WebhookOut, responses=documented(404))
def disable_webhook(webhook_id: WebhookIdPath, acting: Acting) -> WebhookOut:
    """Stop delivering (pending deliveries are skipped and logged)."""
    return WebhookOut.of(_found(lambda: acting.webhooks.disable(webhook_id), webhook_id))


@router.delete(
    "/v1/webhooks/{webhook_id}", status_code=204, response_class=Response, responses=documented(404)
)
def delete_webhook(webhook_id: WebhookIdPath, acting: Acting) -> Response:
    """Delete a webhook and its delivery log."""
    _found(lambda: acting.webhooks.delete(webhook_id), webhook_id)
    return Response(status_code=204)


@router.post("/v1/webhooks/{webhook_id}/rotate-secret", response_model=Secret, responses=documented(404))
def rotate_secret(webhook_id: WebhookIdPath, acting: Acting, body: RotateRequest | None = None) -> Secret:
    """A new signing secret, shown this once; the old one adds a second signature for ``keep_old`` s."""
    keep = (body or RotateRequest()).keep_old
    secret = _found(lambda: acting.webhooks.rotate_secret(webhook_id, keep_old=keep), webhook_id)
    return Secret(webhook=webhook_id, secret=secret)


@router.get("/v1/webhooks/{webhook_id}/deliveries", response_model=DeliveryList, responses=documented(404))
def list_deliveries(
    webhook_id: WebhookIdPath, acting: Acting, limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    before_id: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> DeliveryList:  # fmt: skip
    """A webhook's delivery attempts, newest first; 404 when there is no such webhook."""
    _found(lambda: acting.webhooks.get(webhook_id), webhook_id)
    found = acting.webhooks.deliveries(webhook_id, limit=limit, before_id=before_id)
    more = found[-1].id if len(found) == limit else None
    return DeliveryList(deliveries=[DeliveryOut.of(d) for d in found], next_before_id=more)
