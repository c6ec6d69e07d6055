"""Typed wrappers of the webhook and event queries (webhooks.sql)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pageq.store.engine import Op, Rows


@dataclass(frozen=True)
class NewWebhook:
    """What `webhook_create` stores (patterns with their LIKE forms; the secret as stored)."""

    id: int
    url: str
    events: list[str]
    actions: list[str]
    queue: str
    task: str
    queue_like: str
    task_like: str
    secret: Any
    hint: str
    max_attempts: int
    timeout: float
    description: str | None
    enabled: bool


@dataclass(frozen=True)
class Attempt:
    """One delivery attempt for the log."""

    webhook: int
    delivery: int
    event: int
    event_type: str
    attempt: int
    at: datetime
    outcome: str
    status: int | None = None
    latency: float | None = None
    error: str | None = None


def _scalar(rows: Rows, _n: int) -> Any:
    return rows[0][0] if rows else None


def _rows(rows: Rows, _n: int) -> list[tuple[Any, ...]]:
    return list(rows)


def next_id() -> Op[int]:
    return Op("webhook_next_id", {}, _scalar)


def create(hook: NewWebhook, now: datetime) -> Op[int]:
    params = {
        "id": hook.id, "url": hook.url, "events": hook.events, "actions": hook.actions,
        "queue": hook.queue, "task": hook.task, "queue_like": hook.queue_like, "task_like": hook.task_like,
        "secret": json.dumps(hook.secret), "hint": hook.hint, "max_attempts": hook.max_attempts,
        "timeout": hook.timeout, "description": hook.description, "enabled": hook.enabled, "now": now,
    }  # fmt: skip
    return Op("webhook_create", params, _scalar)


def set_enabled(webhook: int, enabled: bool, now: datetime) -> Op[bool]:
    return Op("webhook_set_enabled", {"id": webhook, "enabled": enabled, "now": now}, _scalar)


def delete(webhook: int, now: datetime) -> Op[bool]:
    return Op("webhook_delete", {"id": webhook, "now": now}, _scalar)


def rotate(webhook: int, secret: Any, hint: str, old_until: datetime, now: datetime) -> Op[bool]:
    params = {"id": webhook, "secret": json.dumps(secret), "hint": hint, "old_until": old_until, "now": now}
    return Op("webhook_rotate", params, _scalar)


def listed(webhook: int | None = None) -> Op[list[tuple[Any, ...]]]:
    """(id, url, events, queue, task, hint, enabled, max_attempts, timeout, description, created_at,
    updated_at, old_until, delivered, failed) of each webhook, by id."""
    return Op("webhooks_list", {"id": webhook}, _rows)


def active() -> Op[bool]:
    """Whether an enabled webhook or a waiting delivery exists."""
    return Op("webhooks_active", {}, lambda rows, _n: bool(rows[0][0]))


def target(webhook: int, now: datetime, event: tuple[int, int, str]) -> Op[tuple[Any, ...] | None]:
    """(url, enabled, timeout, secret, old secret or None, whether ``event`` (id, job id, type) is in the
    audit trail) of a webhook; None when it was deleted."""
    params = {"id": webhook, "now": now, "event": event[0], "job": event[1], "type": event[2]}
    return Op("webhook_target", params, lambda rows, _n: rows[0] if rows else None)


def secrets_sealed(active_key: str) -> Op[list[tuple[int, Any, Any]]]:
    """(id, secret, old secret) of webhooks with a secret encrypted under another key than ``active_key``."""
    return Op(
        "webhook_secrets_sealed", {"active": f"v1.{active_key}.%"}, lambda rows, _n: [tuple(r) for r in rows]
    )


def secrets_reseal(webhook: int, was: tuple[Any, Any], now: tuple[Any, Any]) -> Op[bool]:
    """Replace (secret, old secret) ``was`` by ``now``; False when they changed meanwhile."""
    params = {"id": webhook, "was": json.dumps(was[0]), "old_was": _json(was[1]),
              "secret": json.dumps(now[0]), "old_secret": _json(now[1])}  # fmt: skip
    return Op("webhook_secrets_reseal", params, lambda rows, _n: bool(rows))


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value)


def log(attempt: Attempt) -> Op[int]:
    params = {
        "webhook": attempt.webhook, "delivery": attempt.delivery, "event": attempt.event,
        "event_type": attempt.event_type, "attempt": attempt.attempt, "at": attempt.at,
        "outcome": attempt.outcome, "status": attempt.status, "latency": attempt.latency,
        "error": attempt.error,
    }  # fmt: skip
    return Op("webhook_log", params, lambda _rows, count: count)


def deliveries(webhook: int, limit: int, before_id: int | None = None) -> Op[list[tuple[Any, ...]]]:
    """(id, webhook, delivery, event, event_type, attempt, at, outcome, status, latency, error), newest
    first."""
    return Op("webhook_deliveries", {"webhook": webhook, "limit": limit, "before_id": before_id}, _rows)


def prune(before: datetime, limit: int = 10_000) -> Op[int]:
    return Op("webhook_deliveries_prune", {"before": before, "limit": limit}, lambda _rows, count: count)


def listen(listener: str, actions: Sequence[str] | None, expires: datetime, now: datetime) -> Op[int]:
    """Register or renew (``actions``) or remove (None) a listener; returns the audit level."""
    params = {"id": listener, "actions": None if actions is None else list(actions), "expires": expires,
              "now": now}  # fmt: skip
    return Op("events_listen", params, lambda rows, _n: int(rows[0][0]))


def sweep(now: datetime) -> Op[int]:
    return Op("events_sweep", {"now": now}, lambda rows, _n: int(rows[0][0]))


def routes() -> Op[tuple[list[str], list[str]]]:
    """(audit actions the trigger fires on, those it announces to listeners)."""
    return Op("event_routes", {}, lambda rows, _n: (list(rows[0][0]), list(rows[0][1])))
