"""`app.webhooks`: create, list, enable, disable, delete webhooks, rotate their secrets, read their logs."""

from __future__ import annotations

import builtins
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from pageq.errors import DatabaseError, InvalidOptionError
from pageq.security.acl import Action, check_pattern, like_pattern
from pageq.security.crypto import DecryptError, Keyring
from pageq.security.ssrf import check_url
from pageq.security.webhook import hint, new_secret
from pageq.store import hookops
from pageq.types import check_int, check_seconds
from pageq.webhooks.deliver import SECRET_PURPOSE
from pageq.webhooks.events import actions_for, check_types
from pageq.webhooks.settings import QUEUE, TASK

if TYPE_CHECKING:
    from pageq.app import App
    from pageq.store import Store

MIN_SECRET = 24
BUSY_RETRIES = 20
"""Attempts at a change that must update the audit trigger while writers keep the table busy (1 s each)."""


@dataclass(frozen=True)
class Webhook:
    """A webhook subscription (never its secret: only a hint), with its delivery counts over the log."""

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


@dataclass(frozen=True)
class Delivery:
    """One delivery attempt in a webhook's log: ``outcome`` is delivered, failed, refused or skipped.
    ``delivery`` is the delivery's id (the ``Pageq-Delivery`` header, the same on every retry)."""

    id: int
    webhook: int
    delivery: int
    event: int
    event_type: str
    attempt: int
    at: datetime
    outcome: str
    status: int | None
    latency: float | None
    error: str | None


class Webhooks:
    """Webhook subscriptions of an app (``app.webhooks``); every call needs the ``manage`` grant on all jobs.

    Example::

        hook, secret = app.webhooks.create("https://example.com/hooks", ["job.dead"], queue="emails")
        app.webhooks.deliveries(hook.id)
    """

    def __init__(self, app: App) -> None:
        self._app = app

    @property
    def _store(self) -> Store:
        return self._app.store

    def _admin(self) -> None:
        guard = self._app.guard
        if guard is not None:
            guard.check(Action.MANAGE, "*", "*")

    def create(
        self, url: str, events: str | builtins.list[str] = "*", *, queue: str = "*", task: str = "*",
        secret: str | None = None, max_attempts: int = 16, timeout: float = 10.0,
        description: str | None = None, enabled: bool = True,
    ) -> tuple[Webhook, str]:  # fmt: skip
        """Subscribe ``url`` to ``events`` (types such as ``job.dead``, or ``*``) of jobs whose queue and task
        match the globs; returns the webhook and its signing secret (shown this once). Refused when the
        audit level does not record those events (``job.enqueued``, ``cancelled`` and ``requeued`` need
        ``actions``, the others ``full``, the default)."""
        self._admin()
        types = check_types(events)
        check_url(url)
        try:
            queue, task = check_pattern("queue", queue), check_pattern("task", task)
        except ValueError as exc:
            raise InvalidOptionError(str(exc)) from None
        secret = _secret(secret)
        check_int("max_attempts", max_attempts, (1, 1000))
        if check_seconds("timeout", timeout, allow_zero=False) is None or timeout > 300:
            raise InvalidOptionError(f"timeout must be above 0 and at most 300 seconds, got {timeout!r}")
        if description is not None and (not isinstance(description, str) or len(description) > 1000):
            raise InvalidOptionError("description must be a string of at most 1,000 characters")
        webhook = self._store.run(hookops.next_id())
        new = hookops.NewWebhook(
            webhook, url, types, actions_for(types), queue, task, like_pattern(queue), like_pattern(task),
            self._sealed(webhook, secret), hint(secret), max_attempts, float(timeout), description, enabled,
        )  # fmt: skip
        self._busy(lambda: self._store.run(hookops.create(new, self._app.clock.now())))
        return self.get(webhook), secret

    def _sealed(self, webhook: int, secret: str) -> Any:
        """The secret as stored: encrypted (bound to the webhook) when the app has a keyring."""
        ring = self._app.keyring
        return secret if ring is None else ring.encrypt(secret, SECRET_PURPOSE, webhook, QUEUE, TASK)

    def _busy(self, change: Any) -> Any:
        """Run a change that updates the audit trigger, trying again while writers hold the table."""
        for attempt in range(BUSY_RETRIES):
            try:
                return change()
            except DatabaseError as exc:
                if "lock timeout" not in str(exc) or attempt == BUSY_RETRIES - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))
        raise AssertionError("unreachable")

    def list(self) -> builtins.list[Webhook]:
        """Every webhook, by id."""
        self._admin()
        return [Webhook(*row) for row in self._store.run(hookops.listed())]

    def get(self, webhook: int) -> Webhook:
        """One webhook; `InvalidOptionError` when there is none with that id."""
        self._admin()
        rows = self._store.run(hookops.listed(_id(webhook)))
        if not rows:
            raise InvalidOptionError(f"no webhook with id {webhook}")
        return Webhook(*rows[0])

    def enable(self, webhook: int) -> Webhook:
        """Deliver again (refused when the audit level is too low for its events)."""
        return self._set_enabled(webhook, True)

    def disable(self, webhook: int) -> Webhook:
        """Stop delivering: no new delivery is made, pending ones are skipped (and logged)."""
        return self._set_enabled(webhook, False)

    def _set_enabled(self, webhook: int, enabled: bool) -> Webhook:
        self._admin()
        op = hookops.set_enabled(_id(webhook), enabled, self._app.clock.now())
        if not self._busy(lambda: self._store.run(op)):
            raise InvalidOptionError(f"no webhook with id {webhook}")
        return self.get(webhook)

    def delete(self, webhook: int) -> None:
        """Delete a webhook and its delivery log; pending deliveries do nothing."""
        self._admin()
        op = hookops.delete(_id(webhook), self._app.clock.now())
        if not self._busy(lambda: self._store.run(op)):
            raise InvalidOptionError(f"no webhook with id {webhook}")

    def rotate_secret(self, webhook: int, *, keep_old: float = 86400.0, secret: str | None = None) -> str:
        """A new signing secret (returned, shown once); deliveries carry a second signature made with the
        old one for ``keep_old`` seconds, so receivers can switch in their own time."""
        self._admin()
        keep = check_seconds("keep_old", keep_old, allow_zero=True) or 0.0
        secret = _secret(secret)
        now = self._app.clock.now()
        op = hookops.rotate(
            _id(webhook), self._sealed(webhook, secret), hint(secret), now + timedelta(seconds=keep), now
        )
        if not self._store.run(op):
            raise InvalidOptionError(f"no webhook with id {webhook}")
        return secret

    def deliveries(
        self, webhook: int, *, limit: int = 50, before_id: int | None = None
    ) -> builtins.list[Delivery]:
        """A webhook's delivery attempts, newest first (``before_id``: the last id of the previous page)."""
        self._admin()
        check_int("limit", limit, (1, 10_000))
        rows = self._store.run(hookops.deliveries(_id(webhook), limit, before_id))
        return [Delivery(*row) for row in rows]

    def reencrypt_secrets(self, ring: Keyring) -> tuple[int, int]:
        """Re-encrypt the secrets not under ``ring``'s active key (`Security.rotate_keys` calls it):
        (rewritten, undecryptable)."""
        rewritten = failed = 0
        for webhook, secret, old in self._store.run(hookops.secrets_sealed(ring.active)):
            try:
                new = tuple(
                    None if s is None else ring.reencrypt(s, SECRET_PURPOSE, webhook, QUEUE, TASK)
                    for s in (secret, old)
                )
            except DecryptError:
                failed += 1
                continue
            rewritten += self._store.run(hookops.secrets_reseal(webhook, (secret, old), (new[0], new[1])))
        return rewritten, failed

    def routes(self) -> tuple[builtins.list[str], builtins.list[str]]:
        """What the audit trigger fires on (audit actions), and which of those it announces to listeners."""
        self._admin()
        return self._store.run(hookops.routes())


def _id(webhook: object) -> int:
    return check_int("webhook id", webhook, (1, 2**63 - 1))


def _secret(secret: str | None) -> str:
    if secret is None:
        return new_secret()
    if (
        not isinstance(secret, str)
        or len(secret) < MIN_SECRET
        or len(secret) > 200
        or not secret.isprintable()
    ):
        raise InvalidOptionError(f"a webhook secret must be {MIN_SECRET} to 200 printable characters")
    return secret
