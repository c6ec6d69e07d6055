"""Job events: their types, their shape, and the stream of them that in-process listeners read.

Every event comes from an audit row (sql/migrations/0012_webhooks.sql builds it): webhooks get it through
delivery jobs (at least once), in-process listeners through NOTIFY on ``pageq_events_<schema>`` while they are
connected (at most once).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncGenerator, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pageq.errors import ConfigError, InvalidOptionError
from pageq.store import Listener, hookops
from pageq.types import JSON, JobState

if TYPE_CHECKING:
    from pageq.app import App
    from pageq.store import Store

log = logging.getLogger("pageq.events")

EVENT_ACTIONS: dict[str, tuple[str, ...]] = {
    "job.enqueued": ("enqueue",),
    "job.running": ("claim",),
    "job.succeeded": ("complete",),
    "job.retrying": ("retry", "rescue"),
    "job.dead": ("bury",),
    "job.cancelled": ("cancel",),
    "job.released": ("release",),
    "job.requeued": ("requeue", "run_now"),
}
"""Each event type and the audit actions it stands for (kept in step with ``event_type()`` in SQL)."""
EVENT_TYPES = tuple(EVENT_ACTIONS)
FULL_ONLY = frozenset({"claim", "complete", "retry", "rescue", "bury", "release"})
"""Actions the audit trail records only at its level ``full`` (the others from ``actions`` on)."""
LISTEN_TTL = 30.0
"""Seconds a listener's registration lasts without renewal (it renews every third of that)."""

Handler = Callable[["Event"], Any]


def check_types(types: str | Iterable[str]) -> list[str]:
    """Event types, ``*`` meaning all; sorted and unique. `InvalidOptionError` for an unknown one."""
    given = [types] if isinstance(types, str) else list(types)
    if not given or not all(isinstance(t, str) for t in given):
        raise InvalidOptionError(f"name at least one event type: {', '.join(EVENT_TYPES)} or '*'")
    if "*" in given:
        return ["*"]
    unknown = sorted(set(given) - set(EVENT_TYPES))
    if unknown:
        raise InvalidOptionError(f"unknown event types {unknown}: use {', '.join(EVENT_TYPES)} or '*'")
    return sorted(set(given))


def actions_for(types: Sequence[str]) -> list[str]:
    """The audit actions behind event types (checked with `check_types`)."""
    wanted = EVENT_TYPES if "*" in types else types
    return sorted({action for t in wanted for action in EVENT_ACTIONS[t]})


def level_needed(actions: Iterable[str]) -> str:
    """The audit level these actions need: ``full`` or ``actions``."""
    return "full" if FULL_ONLY.intersection(actions) else "actions"


@dataclass(frozen=True)
class Event:
    """A job's state transition, as webhooks receive it (the JSON body) and `App.on` handlers get it.

    ``previous`` is the state the job left when the action tells it (``None`` for an enqueue, a requeue, and
    the cancel of a job that was not running); for ``job.running`` it is ``queued`` on a first attempt and
    ``retrying`` on a later one. ``error`` (retrying, dead, cancelled) holds the reason and the first 1,000
    characters of the message, ``None`` when encrypted; ``result`` (succeeded) is left out (with
    ``result_omitted``) when encrypted or over 4 KiB. Nothing is ever decrypted for an event.
    """

    id: int
    type: str
    at: datetime
    job_id: int
    task: str
    queue: str
    state: JobState | None
    previous: JobState | None
    attempt: int | None
    max_attempts: int | None
    principal: str | None = None
    reason: str | None = None
    error: dict[str, Any] | None = None
    result: JSON = None
    result_omitted: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        job = data["job"]
        return cls(
            id=int(data["id"]), type=str(data["type"]), at=datetime.fromisoformat(data["at"]),
            job_id=int(job["id"]), task=str(job["task"]), queue=str(job["queue"]),
            state=_state(job.get("state")), previous=_state(job.get("previous")),
            attempt=job.get("attempt"), max_attempts=job.get("max_attempts"),
            principal=data.get("principal"), reason=data.get("reason"), error=data.get("error"),
            result=data.get("result"), result_omitted=data.get("result_omitted"),
        )  # fmt: skip


def _state(value: object) -> JobState | None:
    return JobState(value) if isinstance(value, str) else None


async def stream(app: App, store: Store, types: Sequence[str], ready: asyncio.Event | None = None
                 ) -> AsyncGenerator[Event, None]:  # fmt: skip
    """Events of ``types`` committed while the stream is open (LISTEN first, then the registration that makes
    the audit trigger announce them; the registration is renewed meanwhile and removed at the end)."""
    wanted = set(EVENT_TYPES if "*" in types else types)
    actions = actions_for(types)
    target = app.database.listen_target
    if target is None:
        raise ConfigError("events need LISTEN: behind a transaction pooler, give a direct DSN (listen_dsn=)")
    listener = Listener(target, app.schema, "events_channel")
    me = f"listener-{uuid.uuid4().hex[:12]}"
    await listener.connect()
    renewer: asyncio.Task[None] | None = None
    try:
        level = await _register(app, store, me, actions)
        if level < (2 if level_needed(actions) == "full" else 1):
            log.warning("the audit level is too low for %s: those events are not recorded", sorted(wanted))
        renewer = asyncio.create_task(_renew(app, store, me, actions))
        if ready is not None:
            ready.set()
        async for payload in listener.notifications():
            event = _decode(payload)
            if event is not None and event.type in wanted:
                yield event
    finally:
        if renewer is not None:
            renewer.cancel()
        await listener.close()
        with contextlib.suppress(Exception):
            await store.arun(hookops.listen(me, None, app.clock.now(), app.clock.now()))


async def _register(app: App, store: Store, me: str, actions: list[str]) -> int:
    now = app.clock.now()
    return await store.arun(hookops.listen(me, actions, now + timedelta(seconds=LISTEN_TTL), now))


async def _renew(app: App, store: Store, me: str, actions: list[str]) -> None:
    while True:
        await asyncio.sleep(LISTEN_TTL / 3)
        try:
            await _register(app, store, me, actions)
        except Exception as exc:  # the database is away: the next renewal tries again
            log.warning("could not renew the event listener: %s", exc)


def _decode(payload: str) -> Event | None:
    try:
        return Event.from_json(json.loads(payload))
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("ignored a malformed event: %s", exc)
        return None
