"""Typed wrappers of the security queries (security.sql): principals, tokens, grants, audit, keys, roles."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pageq.security.acl import Action, Grant, like_pattern
from pageq.store.engine import Op, Rows


@dataclass(frozen=True)
class AuditRow:
    """One row of the audit trail."""

    id: int
    at: datetime
    db_role: str
    principal: str | None
    action: str
    decision: str
    reason: str | None
    job_id: int | None
    queue: str | None
    task: str | None
    detail: Any


@dataclass(frozen=True)
class Seal:
    """A checkpoint of the audit trail: the rows of transactions in [from_xid, to_xid), chained."""

    seq: int
    from_xid: int
    to_xid: int
    ids: list[int]
    hashes: bytes
    prev_digest: bytes
    digest: bytes


def _scalar(rows: Rows, _n: int) -> Any:
    return rows[0][0] if rows else None


def _ids(rows: Rows, _n: int) -> list[int]:
    return [row[0] for row in rows]


def _none(_rows: Rows, _n: int) -> None:
    return None


# ----- principals and tokens
def principal_create(name: str, note: str | None) -> Op[str | None]:
    return Op("principal_create", {"name": name, "note": note}, _scalar)


def principal_set_disabled(name: str, disabled: bool) -> Op[str | None]:
    return Op("principal_set_disabled", {"name": name, "disabled": disabled}, _scalar)


def principal_delete(name: str) -> Op[str | None]:
    return Op("principal_delete", {"name": name}, _scalar)


def principals_list() -> Op[list[tuple[Any, ...]]]:
    return Op("principals_list", {}, lambda rows, _n: list(rows))


def principal_active(name: str) -> Op[bool]:
    return Op("principal_active", {"name": name}, lambda rows, _n: bool(rows and rows[0][0]))


def token_create(token_hash: bytes, principal: str, hint: str) -> Op[int]:
    return Op("token_create", {"hash": token_hash, "principal": principal, "hint": hint}, _scalar)


def token_revoke(token_id: int) -> Op[list[int]]:
    return Op("token_revoke", {"id": token_id}, _ids)


def tokens_list(principal: str | None) -> Op[list[tuple[Any, ...]]]:
    return Op("tokens_list", {"principal": principal}, lambda rows, _n: list(rows))


def authenticate(token_hash: bytes) -> Op[str | None]:
    return Op("authenticate", {"hash": token_hash}, _scalar)


# ----- grants
def grant_add(grant: Grant) -> Op[int]:
    params = {
        "principal": grant.principal, "action": grant.action.value if grant.action else "*",
        "queue": grant.queue, "task": grant.task, "allow": grant.allow,
        "queue_like": like_pattern(grant.queue), "task_like": like_pattern(grant.task),
    }  # fmt: skip
    return Op("grant_add", params, _scalar)


def grant_remove(grant_id: int) -> Op[list[int]]:
    return Op("grant_remove", {"id": grant_id}, _ids)


def _grants(rows: Rows, _n: int) -> list[tuple[Grant, bool]]:
    return [
        (Grant(principal, None if action == "*" else Action(action), queue, task, allow, id_), active)
        for id_, principal, action, queue, task, allow, active in rows
    ]


def grants_list(principal: str | None) -> Op[list[tuple[Grant, bool]]]:
    """Grants with whether their principal is enabled."""
    return Op("grants_list", {"principal": principal}, _grants)


# ----- audit
def audit_record(
    action: str, *, principal: str | None, decision: str = "allow", reason: str | None = None,
    job_id: int | None = None, queue: str | None = None, task: str | None = None, detail: Any = None,
) -> Op[None]:  # fmt: skip
    params = {
        "principal": principal, "action": action, "decision": decision, "reason": reason, "job_id": job_id,
        "queue": queue, "task": task, "detail": None if detail is None else json.dumps(detail),
    }  # fmt: skip
    return Op("audit_record", params, _none)


def audit_level_get() -> Op[int]:
    return Op("audit_level_get", {}, lambda rows, _n: int(rows[0][0]))


def audit_level_set(level: int) -> Op[int]:
    return Op("audit_level_set", {"level": level}, lambda rows, _n: int(rows[0][0]))


def audit_list(
    principal: str | None, job_id: int | None, action: str | None, decision: str | None,
    since: datetime | None, until: datetime | None, limit: int, before_id: int | None = None,
) -> Op[list[AuditRow]]:  # fmt: skip
    params = {
        "principal": principal, "job_id": job_id, "action": action, "decision": decision,
        "since": since, "until": until, "limit": limit, "before_id": before_id,
    }  # fmt: skip
    return Op("audit_list", params, lambda rows, _n: [AuditRow(*row) for row in rows])


def audit_seal(holder: str) -> Op[tuple[int, int] | None]:
    return Op("audit_seal", {"holder": holder}, lambda rows, _n: (rows[0][0], rows[0][1]) if rows else None)


def audit_seals(from_seq: int, limit: int) -> Op[list[Seal]]:
    def decode(rows: Rows, _n: int) -> list[Seal]:
        return [Seal(r[0], r[1], r[2], list(r[3]), bytes(r[4]), bytes(r[5]), bytes(r[6])) for r in rows]

    return Op("audit_seals", {"from_seq": from_seq, "limit": limit}, decode)


def audit_hashes(lo: int, hi: int) -> Op[list[tuple[int, bytes]]]:
    return Op("audit_hashes", {"lo": lo, "hi": hi}, lambda rows, _n: [(r[0], bytes(r[1])) for r in rows])


def audit_unsealed() -> Op[int]:
    return Op("audit_unsealed", {}, lambda rows, _n: int(rows[0][0]))


# ----- keys
def encrypted_batch(table: str, after: int, active_key: str, limit: int) -> Op[list[tuple[Any, ...]]]:
    params = {"tbl": table, "after": after, "active": f"v1.{active_key}.%", "limit": limit}
    return Op("encrypted_batch", params, lambda rows, _n: list(rows))


def reencrypt(
    table: str, rows: Sequence[tuple[Any, ...]], new: Sequence[tuple[Any, Any, Any]]
) -> Op[list[int]]:
    """``rows``: (id, queue, task, args, result, errors) as read; ``new``: (args, result, errors)."""

    def text(value: Any) -> str | None:
        return None if value is None else json.dumps(value)

    params = {
        "tbl": table, "ids": [r[0] for r in rows],
        "old_args": [text(r[3]) for r in rows], "old_results": [text(r[4]) for r in rows],
        "old_errors": [text(r[5]) for r in rows],
        "args": [text(n[0]) for n in new], "results": [text(n[1]) for n in new],
        "errors": [text(n[2]) for n in new],
    }  # fmt: skip
    return Op("reencrypt", params, _ids)


def row_security_active() -> Op[bool]:
    return Op("row_security_active", {}, lambda rows, _n: bool(rows[0][0]))


# ----- database roles
def db_login_create(principal: str, kind: str, password: str) -> Op[str]:
    return Op("db_login_create", {"principal": principal, "kind": kind, "password": password}, _scalar)


def db_roles_list() -> Op[list[tuple[str, str, str]]]:
    return Op("db_roles_list", {}, lambda rows, _n: [(r[0], r[1], r[2]) for r in rows])


# ----- signed requests of the HTTP API
def nonce_use(key_id: str, nonce: str, expires_at: datetime, now: datetime) -> Op[bool]:
    """Whether the nonce is fresh (recorded now); False for a replay."""
    params = {"key_id": key_id, "nonce": nonce, "expires_at": expires_at, "now": now}
    return Op("nonce_use", params, lambda rows, _n: bool(rows))


def nonce_prune(now: datetime) -> Op[int]:
    return Op("nonce_prune", {"now": now}, lambda _rows, count: count)
