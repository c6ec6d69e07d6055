"""Acting as a principal: authentication, access decisions (cached at most `TTL` seconds), denials audited.

Also `Security`, the administration of principals, tokens, grants, the audit trail, keys and database
roles (``app.security``). Not public API beyond what `pageq.App` exposes.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pageq.errors import AccessDeniedError, AuthenticationError, InvalidOptionError
from pageq.security import chain
from pageq.security.acl import Action, Decision, Grant, check_pattern, check_principal, decide
from pageq.security.crypto import Keyring, is_encrypted
from pageq.security.tokens import new_token, token_hash, token_hint
from pageq.store import Store, secops

if TYPE_CHECKING:
    from pageq.app import App

TTL = 0.5
"""Seconds a principal's authentication and grants are reused: a revocation takes effect within 1 s."""

LEVELS = {"off": 0, "actions": 1, "full": 2}


@dataclass
class Guard:
    """The acting principal of an `App`: checks each operation against its grants (refreshed every `TTL`)."""

    store: Store
    principal: str
    token: str | None = field(default=None, repr=False)
    _grants: list[Grant] = field(default_factory=list, repr=False)
    _active: bool = field(default=False, repr=False)
    _fetched: float = field(default=-1e9, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _workable: tuple[Any, list[str]] | None = field(default=None, repr=False)

    def _refresh(self) -> None:
        with self._lock:
            if time.monotonic() - self._fetched < TTL:
                return
            if self.token is not None:
                active = self.store.run(secops.authenticate(token_hash(self.token))) == self.principal
            else:
                active = self.store.run(secops.principal_active(self.principal))
            grants = self.store.run(secops.grants_list(self.principal))
            self._active, self._grants = active, [g for g, _ in grants]
            self._fetched = time.monotonic()

    def decide(self, action: Action | str, queue: str, task: str) -> Decision:
        self._refresh()
        return decide(self.principal, self._grants, action, queue, task, active=self._active)

    def check(self, action: Action | str, queue: str, task: str, *, job_id: int | None = None) -> Decision:
        """The decision, or `AccessDeniedError` after recording the denied attempt in the audit trail."""
        decision = self.decide(action, queue, task)
        if not decision.allowed:
            self.store.run(secops.audit_record(
                str(action), principal=self.principal, decision="deny", reason=decision.reason,
                job_id=job_id, queue=_storable(queue), task=_storable(task),
            ))  # fmt: skip
            raise AccessDeniedError(
                f"{self.principal!r} may not {action} {task!r} in queue {queue!r}: {decision.reason}"
            )
        return decision

    def workable(self, queues: Sequence[str], tasks: Iterable[str]) -> list[str]:
        """The task names this principal may work in every one of ``queues`` (what its worker claims)."""
        self._refresh()
        key = (tuple(queues), tuple(tasks), self._fetched)
        if self._workable is None or self._workable[0] != key:
            allowed = [t for t in key[1] if all(self.decide(Action.WORK, q, t).allowed for q in queues)]
            self._workable = (key, allowed)
        return self._workable[1]


def _storable(text: str) -> str:
    """Text PostgreSQL can store (a NUL character, as in a hostile task name, is written escaped)."""
    return text.replace("\x00", "\\x00")


class Tokens:
    """Token to principal, each answer (a refusal too) reused at most `TTL` seconds: what a server that sees
    a token on every request calls, so that a revocation takes effect within a second."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._seen: dict[bytes, tuple[str | None, float]] = {}
        self._lock = threading.Lock()

    def principal(self, token: str) -> str:
        """The principal of ``token``; `AuthenticationError` when unknown, revoked or disabled."""
        key = token_hash(token)
        now = time.monotonic()
        with self._lock:
            hit = self._seen.get(key)
        if hit is None or now - hit[1] >= TTL:
            hit = (self._store.run(secops.authenticate(key)), now)
            with self._lock:
                if len(self._seen) >= 10_000:
                    self._seen.clear()
                self._seen[key] = hit
        if hit[0] is None:
            raise AuthenticationError("invalid, revoked or disabled token")
        return hit[0]


def authenticate(store: Store, token: str) -> str:
    """The principal of a token; `AuthenticationError` when unknown, revoked or disabled."""
    with store.connect() as conn:
        who = store.run(secops.authenticate(token_hash(token)), conn)
    if who is None:
        raise AuthenticationError("invalid, revoked or disabled token")
    return who


@dataclass(frozen=True)
class VerifyReport:
    """The result of `Security.verify_audit`."""

    seals: int
    rows: int
    unsealed: int
    head: str | None
    finding: chain.Finding | None

    @property
    def ok(self) -> bool:
        return self.finding is None


class Security:
    """Administration: principals, tokens, grants, audit trail, keys and database roles (``app.security``).

    Example::

        app.security.create_principal("mailer")
        token = app.security.create_token("mailer")        # shown once; only its hash is stored
        app.security.grant("mailer", "enqueue", task="email.*")
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

    # ----- principals and tokens
    def create_principal(self, name: str, note: str | None = None) -> str:
        self._admin()
        check_principal(name)
        if self._store.run(secops.principal_active(name)) or any(r[0] == name for r in self.principals()):
            raise InvalidOptionError(f"principal {name!r} already exists")
        self._store.run(secops.principal_create(name, note))
        return name

    def principals(self) -> list[tuple[Any, ...]]:
        """(name, created_at, disabled_at, note, live tokens, grants) of every principal."""
        self._admin()
        return self._store.run(secops.principals_list())

    def set_disabled(self, name: str, disabled: bool = True) -> None:
        self._admin()
        if self._store.run(secops.principal_set_disabled(name, disabled)) is None:
            raise InvalidOptionError(f"no principal {name!r}")

    def delete_principal(self, name: str) -> None:
        self._admin()
        if self._store.run(secops.principal_delete(name)) is None:
            raise InvalidOptionError(f"no principal {name!r}")

    def create_token(self, principal: str) -> tuple[int, str]:
        """A new token for ``principal``: (its id, the token). The token is not stored and not shown again."""
        self._admin()
        if not any(r[0] == principal for r in self.principals()):
            raise InvalidOptionError(f"no principal {principal!r}")
        token = new_token()
        token_id = self._store.run(secops.token_create(token_hash(token), principal, token_hint(token)))
        return token_id, token

    def revoke_token(self, token_id: int) -> None:
        self._admin()
        if not self._store.run(secops.token_revoke(token_id)):
            raise InvalidOptionError(f"no live token with id {token_id}")

    def tokens(self, principal: str | None = None) -> list[tuple[Any, ...]]:
        """(id, principal, hint, created_at, revoked_at) of tokens."""
        self._admin()
        return self._store.run(secops.tokens_list(principal))

    # ----- grants
    def grant(
        self, principal: str, action: str, *, queue: str = "*", task: str = "*", allow: bool = True
    ) -> int:
        """Allow (or with ``allow=False`` deny) ``action`` (enqueue, work, read, manage or ``*``)."""
        self._admin()
        act = None if action == "*" else Action(action) if action in Action.__members__.values() else None
        if action != "*" and act is None:
            raise InvalidOptionError(f"unknown action {action!r}: use enqueue, work, read, manage or '*'")
        try:
            rule = Grant(check_principal(principal), act, check_pattern("queue", queue),
                         check_pattern("task", task), allow)  # fmt: skip
        except ValueError as exc:
            raise InvalidOptionError(str(exc)) from None
        if not any(r[0] == principal for r in self.principals()):
            raise InvalidOptionError(f"no principal {principal!r}")
        return self._store.run(secops.grant_add(rule))

    def revoke_grant(self, grant_id: int) -> None:
        self._admin()
        if not self._store.run(secops.grant_remove(grant_id)):
            raise InvalidOptionError(f"no grant with id {grant_id}")

    def grants(self, principal: str | None = None) -> list[Grant]:
        self._admin()
        return [g for g, _ in self._store.run(secops.grants_list(principal))]

    def explain(self, principal: str, action: str, task: str, queue: str = "default") -> Decision:
        """The decision for ``principal`` doing ``action`` on a job of ``task`` in ``queue``, and why."""
        self._admin()
        rows = self._store.run(secops.grants_list(principal))
        active = self._store.run(secops.principal_active(principal))
        try:
            return decide(principal, [g for g, _ in rows], action, queue, task, active=active)
        except ValueError as exc:
            raise InvalidOptionError(str(exc)) from None

    # ----- audit
    def audit_level(self, level: str | None = None) -> str:
        """The audit granularity (off, actions, full); with ``level``, set it first (an audited change)."""
        self._admin()
        if level is not None:
            if level not in LEVELS:
                raise InvalidOptionError(f"audit level must be one of {sorted(LEVELS)}, got {level!r}")
            self._store.run(secops.audit_level_set(LEVELS[level]))
        current = self._store.run(secops.audit_level_get())
        return next(name for name, value in LEVELS.items() if value == current)

    def audit(self, **filters: Any) -> list[secops.AuditRow]:
        """Audit rows, newest first: filters ``principal``, ``job_id``, ``action`` (or a prefix such as
        ``token``), ``decision``, ``since``, ``until``, ``before_id`` (the next page: rows older than that
        id), ``limit`` (100)."""
        self._admin()
        keys = ("principal", "job_id", "action", "decision", "since", "until", "before_id")
        unknown = set(filters) - {*keys, "limit"}
        if unknown:
            raise InvalidOptionError(f"unknown audit filters {sorted(unknown)}")
        found = {k: filters.get(k) for k in keys}
        return self._store.run(secops.audit_list(**found, limit=int(filters.get("limit") or 100)))

    def seal_audit(self, holder: str = "manual") -> tuple[int, int] | None:
        """Seal the rows of ended transactions into the next checkpoint: (seq, rows) or None if none."""
        return self._store.run(secops.audit_seal(holder))

    def verify_audit(self) -> VerifyReport:
        """Recompute the sealed chain and compare it with the current rows; reports the first problem."""
        self._admin()
        store, seals, head = self._store, [], None

        def walk() -> Iterable[tuple[chain.SealLike, list[tuple[int, bytes]]]]:
            nonlocal head
            after = 1
            while batch := store.run(secops.audit_seals(after, 200)):
                for seal in batch:
                    seals.append(seal.seq)
                    head = seal.digest.hex()
                    yield seal, store.run(secops.audit_hashes(seal.from_xid, seal.to_xid))
                after = batch[-1].seq + 1

        checked, rows, finding = chain.verify(walk())
        unsealed = store.run(secops.audit_unsealed())
        return VerifyReport(checked, rows, unsealed, head, finding)

    # ----- keys
    def rotate_keys(self, batch: int = 500, keyring: Keyring | None = None) -> dict[str, int]:
        """Re-encrypt every value not under the active key (webhook secrets too), in batches, while workers
        keep running."""
        self._admin()
        ring = keyring or self._app.keyring
        if ring is None:
            raise InvalidOptionError("no keyring configured: set PAGEQ_KEYRING or PAGEQ_KEYRING_FILE")
        counts = {"rewritten": 0, "changed_meanwhile": 0, "undecryptable": 0}
        for table in ("jobs", "finished_jobs"):
            after = 0
            while rows := self._store.run(secops.encrypted_batch(table, after, ring.active, batch)):
                after = rows[-1][0]
                todo, new = [], []
                for row in rows:
                    try:
                        new.append(_reencrypted(ring, row))
                        todo.append(row)
                    except Exception:  # a DecryptError: reported, left as it is
                        counts["undecryptable"] += 1
                done = self._store.run(secops.reencrypt(table, todo, new)) if todo else []
                counts["rewritten"] += len(done)
                counts["changed_meanwhile"] += len(todo) - len(done)
        rewritten, undecryptable = self._app.webhooks.reencrypt_secrets(ring)  # their signing secrets
        counts["rewritten"] += rewritten
        counts["undecryptable"] += undecryptable
        self._store.run(secops.audit_record(
            "keys.rotate", principal=self._app.principal, detail={"active": ring.active, **counts}
        ))  # fmt: skip
        return counts

    # ----- signed requests (the HTTP API)
    def use_nonce(self, key_id: str, nonce: str, ttl: float) -> bool:
        """Record the nonce of a signed request for ``ttl`` seconds: True if fresh, False for a replay.
        Expired nonces are forgotten now and then."""
        now = self._app.clock.now()
        fresh = self._store.run(secops.nonce_use(key_id, nonce, now + timedelta(seconds=ttl), now))
        if secrets.randbelow(100) == 0:
            self._store.run(secops.nonce_prune(now))
        return fresh

    # ----- database roles
    def create_db_login(self, principal: str, kind: str, password: str) -> str:
        """A Postgres login role for ``principal`` in the ``<schema>_<kind>`` group (producer, worker,
        admin): row-level security applies that principal's grants to it. Needs CREATEROLE."""
        self._admin()
        if kind not in ("producer", "worker", "admin"):
            raise InvalidOptionError(f"kind must be producer, worker or admin, got {kind!r}")
        check_principal(principal)
        return self._store.run(secops.db_login_create(principal, kind, password))

    def db_logins(self) -> list[tuple[str, str, str]]:
        self._admin()
        return self._store.run(secops.db_roles_list())


def _reencrypted(ring: Keyring, row: tuple[Any, ...]) -> tuple[Any, Any, Any]:
    job_id, queue, task, args, result, errors = row
    new_errors = [
        _reencrypt_error(ring, item, job_id, queue, task) if is_encrypted(item) else item for item in errors
    ]
    return (
        ring.reencrypt(args, "args", job_id, queue, task),
        ring.reencrypt(result, "result", job_id, queue, task),
        new_errors,
    )


def _reencrypt_error(
    ring: Keyring, item: dict[str, Any], job_id: int, queue: str, task: str
) -> dict[str, Any]:
    sealed = ring.reencrypt(item, f"error.{item.get('attempt')}", job_id, queue, task)
    return {**item, **sealed}


__all__ = ["Guard", "Security", "Tokens", "VerifyReport", "authenticate"]
