"""`pageq principals|tokens|acl|audit|keys` commands: security administration from the command line."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.table import Table

import pageq
from pageq.cli.output import emit_json, err, fail, out
from pageq.security.crypto import new_key

principals_cli = typer.Typer(
    help="Principals: the identities that tokens and grants belong to.", no_args_is_help=True
)
tokens_cli = typer.Typer(help="API tokens (shown once, stored only as a hash).", no_args_is_help=True)
acl_cli = typer.Typer(help="Grants: who may enqueue, work, read or manage which jobs.", no_args_is_help=True)
audit_cli = typer.Typer(help="The audit trail: list, verify, seal, granularity.", no_args_is_help=True)
keys_cli = typer.Typer(help="Encryption keys of job payloads (PAGEQ_KEYRING).", no_args_is_help=True)

Schema = Annotated[str | None, typer.Option("--schema", envvar="PAGEQ_SCHEMA", help="Postgres schema.")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


def _app(schema: str | None) -> pageq.App:
    """The app acting as the owner, or as the principal of ``PAGEQ_TOKEN`` when set."""
    app = pageq.App(schema=schema, token=os.environ.get("PAGEQ_TOKEN") or None)
    err.print(
        f"[dim]database: {app.database.label}, schema {app.schema}[/dim]", highlight=False, soft_wrap=True
    )
    return app


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*["-" if v is None else str(v) for v in row])
    out.print(table)


# ----- principals
@principals_cli.command("create")
def principals_create(
    name: str, note: Annotated[str | None, typer.Option()] = None, schema: Schema = None
) -> None:
    """Create a principal."""
    _app(schema).security.create_principal(name, note)
    out.print(f"created principal {name}")


@principals_cli.command("list")
def principals_list(schema: Schema = None, as_json: Json = False) -> None:
    """Principals with their live tokens and grants."""
    rows = _app(schema).security.principals()
    keys = ["name", "created_at", "disabled_at", "note", "tokens", "grants"]
    if as_json:
        emit_json([dict(zip(keys, row, strict=True)) for row in rows])
        return
    _table("principals", keys, [list(row) for row in rows])


@principals_cli.command("disable")
def principals_disable(name: str, schema: Schema = None) -> None:
    """Disable a principal: its tokens stop working within a second."""
    _app(schema).security.set_disabled(name, True)
    out.print(f"disabled principal {name}")


@principals_cli.command("enable")
def principals_enable(name: str, schema: Schema = None) -> None:
    """Enable a disabled principal again."""
    _app(schema).security.set_disabled(name, False)
    out.print(f"enabled principal {name}")


@principals_cli.command("delete")
def principals_delete(name: str, schema: Schema = None) -> None:
    """Delete a principal with its tokens and grants."""
    _app(schema).security.delete_principal(name)
    out.print(f"deleted principal {name}")


@principals_cli.command("db-login")
def principals_db_login(
    name: str,
    kind: Annotated[str, typer.Option(help="producer, worker or admin.")] = "worker",
    schema: Schema = None,
) -> None:
    """Create a Postgres login role for NAME (password from PAGEQ_DB_PASSWORD, or asked)."""
    password = os.environ.get("PAGEQ_DB_PASSWORD") or typer.prompt("password", hide_input=True)
    role = _app(schema).security.create_db_login(name, kind, password)
    out.print(f"database role {role} logs in as principal {name} ({kind})")


# ----- tokens
@tokens_cli.command("create")
def tokens_create(principal: str, schema: Schema = None, as_json: Json = False) -> None:
    """Create a token for PRINCIPAL and print it once (only its hash is stored)."""
    token_id, token = _app(schema).security.create_token(principal)
    if as_json:
        emit_json({"id": token_id, "principal": principal, "token": token})
        return
    err.print(f"token {token_id} for {principal} (shown once, keep it secret):")
    print(token)


@tokens_cli.command("list")
def tokens_list(
    principal: Annotated[str | None, typer.Option()] = None, schema: Schema = None, as_json: Json = False
) -> None:
    """Tokens (their id and a hint, never the secret)."""
    rows = _app(schema).security.tokens(principal)
    keys = ["id", "principal", "hint", "created_at", "revoked_at"]
    if as_json:
        emit_json([dict(zip(keys, row, strict=True)) for row in rows])
        return
    _table("tokens", keys, [list(row) for row in rows])


@tokens_cli.command("revoke")
def tokens_revoke(token_id: int, schema: Schema = None) -> None:
    """Revoke a token (effective within a second)."""
    _app(schema).security.revoke_token(token_id)
    out.print(f"revoked token {token_id}")


# ----- acl
@acl_cli.command("grant")
def acl_grant(
    principal: str,
    action: Annotated[str, typer.Argument(help="enqueue, work, read, manage or '*'.")],
    queue: Annotated[str, typer.Option(help="Queue pattern ('*' matches any run of characters).")] = "*",
    task: Annotated[str, typer.Option(help="Task-name pattern.")] = "*",
    deny: Annotated[bool, typer.Option("--deny", help="A deny rule (beats any allow).")] = False,
    schema: Schema = None,
) -> None:
    """Allow (or --deny) PRINCIPAL an ACTION on jobs whose queue and task match the patterns."""
    grant_id = _app(schema).security.grant(principal, action, queue=queue, task=task, allow=not deny)
    out.print(
        f"grant {grant_id}: {'deny' if deny else 'allow'} {principal} {action} queue={queue} task={task}"
    )


@acl_cli.command("revoke")
def acl_revoke(grant_id: int, schema: Schema = None) -> None:
    """Remove a grant by id."""
    _app(schema).security.revoke_grant(grant_id)
    out.print(f"removed grant {grant_id}")


@acl_cli.command("list")
def acl_list(principal: Annotated[str | None, typer.Argument()] = None, schema: Schema = None) -> None:
    """Grants, optionally of one principal."""
    rows = _app(schema).security.grants(principal)
    _table("grants", ["id", "principal", "rule"], [[g.id, g.principal, g.describe()] for g in rows])


@acl_cli.command("check")
def acl_check(
    principal: str,
    action: Annotated[str, typer.Argument(help="An action or operation (claim, complete, cancel, ...).")],
    task: str,
    queue: Annotated[str, typer.Option(help="The job's queue.")] = "default",
    schema: Schema = None,
    as_json: Json = False,
) -> None:
    """Explain whether PRINCIPAL may do ACTION on a job of TASK (exit 0 allowed, 1 denied)."""
    decision = _app(schema).security.explain(principal, action, task, queue)
    if as_json:
        emit_json(decision)
    else:
        verdict = "[green]allowed[/green]" if decision.allowed else "[red]denied[/red]"
        out.print(f"{verdict}: {decision.reason}", highlight=False, soft_wrap=True)
    raise SystemExit(0 if decision.allowed else 1)


# ----- audit
def _when(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        fail(f"{name} must be an ISO 8601 time, got {value!r}")
    return parsed if parsed.tzinfo else parsed.astimezone()


@audit_cli.command("list")
def audit_list(
    principal: Annotated[str | None, typer.Option()] = None,
    job: Annotated[int | None, typer.Option(help="Job id.")] = None,
    action: Annotated[str | None, typer.Option(help="Action, or a prefix such as 'token'.")] = None,
    decision: Annotated[str | None, typer.Option(help="allow or deny.")] = None,
    since: Annotated[str | None, typer.Option(help="ISO time.")] = None,
    until: Annotated[str | None, typer.Option(help="ISO time.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000)] = 100,
    schema: Schema = None,
    as_json: Json = False,
) -> None:
    """Audit rows, newest first."""
    rows = _app(schema).security.audit(
        principal=principal, job_id=job, action=action, decision=decision,
        since=_when(since, "--since"), until=_when(until, "--until"), limit=limit,
    )  # fmt: skip
    if as_json:
        emit_json(rows)
        return
    _table("audit", ["id", "at", "role", "principal", "action", "decision", "job", "task", "reason"],
           [[r.id, r.at.isoformat(timespec="seconds"), r.db_role, r.principal, r.action, r.decision, r.job_id,
             r.task, r.reason or (r.detail if r.detail else None)] for r in rows])  # fmt: skip


@audit_cli.command("verify")
def audit_verify(schema: Schema = None, as_json: Json = False) -> None:
    """Check the sealed hash chain against the rows; report the first altered, removed or inserted row."""
    report = _app(schema).security.verify_audit()
    if as_json:
        emit_json({**report.__dict__, "ok": report.ok})
    elif report.ok:
        out.print(f"ok: {report.seals} seals, {report.rows} rows verified; {report.unsealed} rows unsealed; "
                  f"head {report.head or '-'}")  # fmt: skip
    if report.finding is not None:
        fail(report.finding.message)


@audit_cli.command("seal")
def audit_seal(schema: Schema = None) -> None:
    """Seal the rows of ended transactions now (workers' leader does it every maintenance interval)."""
    sealed = _app(schema).security.seal_audit("cli")
    out.print(f"sealed {sealed[1]} rows as seal {sealed[0]}" if sealed else "nothing to seal")


@audit_cli.command("level")
def audit_level(
    level: Annotated[str | None, typer.Argument(help="off, actions or full.")] = None, schema: Schema = None
) -> None:
    """Show or set the audit granularity (off: security events only; actions; full: every transition)."""
    out.print(_app(schema).security.audit_level(level))


# ----- keys
@keys_cli.command("generate")
def keys_generate(key_id: Annotated[str, typer.Argument(help="The new key's id.")]) -> None:
    """Print a new keyring entry ID:KEY; put it first in PAGEQ_KEYRING to make it the active key."""
    print(f"{key_id}:{new_key()}")


@keys_cli.command("rotate")
def keys_rotate(
    batch: Annotated[int, typer.Option(min=1, max=10_000, help="Jobs per transaction.")] = 500,
    schema: Schema = None,
) -> None:
    """Re-encrypt every payload under the active key, in batches, while workers keep running."""
    counts = _app(schema).security.rotate_keys(batch)
    out.print(", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in counts.items()))
    if counts["undecryptable"]:
        fail(f"{counts['undecryptable']} jobs could not be decrypted with this keyring")
