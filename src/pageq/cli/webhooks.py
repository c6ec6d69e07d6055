"""`pageq webhooks ...`: create, list, enable, disable, delete, rotate secrets, read delivery logs."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from pageq.cli.common import Json, Schema, open_app
from pageq.cli.output import emit_json, err, out, when
from pageq.webhooks import Webhook

webhooks_cli = typer.Typer(
    help="Webhooks: signed HTTP deliveries of job events (docs/webhooks.md).", no_args_is_help=True
)
WebhookId = Annotated[int, typer.Argument(min=1, help="The webhook's id.")]


def _table(hooks: list[Webhook]) -> Table:
    table = Table(title="webhooks")
    for column in ("id", "url", "events", "queue", "task", "enabled", "delivered", "failed", "secret"):
        table.add_column(column)
    for h in hooks:
        table.add_row(
            str(h.id), h.url, ",".join(h.events), h.queue, h.task, "yes" if h.enabled else "no",
            str(h.delivered), str(h.failed), h.secret_hint,
        )  # fmt: skip
    return table


@webhooks_cli.command("create")
def create(
    url: Annotated[str, typer.Argument(help="Where to POST events (http or https).")],
    events: Annotated[str, typer.Option(help="Comma-separated event types (job.dead, ...) or '*'.")] = "*",
    queue: Annotated[str, typer.Option(help="Only jobs of queues matching this glob.")] = "*",
    task: Annotated[str, typer.Option(help="Only jobs of tasks matching this glob.")] = "*",
    max_attempts: Annotated[int, typer.Option(min=1, max=1000, help="Attempts per delivery.")] = 16,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the receiver.")] = 10.0,
    description: Annotated[str | None, typer.Option()] = None,
    disabled: Annotated[bool, typer.Option("--disabled", help="Create it disabled.")] = False,
    schema: Schema = None,
    as_json: Json = False,
) -> None:
    """Subscribe URL to job events; prints the signing secret once (keep it secret)."""
    types = [e.strip() for e in events.split(",") if e.strip()]
    hook, secret = open_app(None, schema).webhooks.create(
        url, types, queue=queue, task=task, max_attempts=max_attempts, timeout=timeout,
        description=description, enabled=not disabled,
    )  # fmt: skip
    if as_json:
        emit_json({"webhook": hook, "secret": secret})
        return
    err.print(f"webhook {hook.id} created; its signing secret (shown once, keep it secret):")
    print(secret)


@webhooks_cli.command("list")
def list_(schema: Schema = None, as_json: Json = False) -> None:
    """Every webhook with its delivery counts (secrets are never shown again: a hint only)."""
    hooks = open_app(None, schema).webhooks.list()
    emit_json(hooks) if as_json else out.print(_table(hooks))


@webhooks_cli.command("enable")
def enable(webhook: WebhookId, schema: Schema = None) -> None:
    """Deliver again."""
    open_app(None, schema).webhooks.enable(webhook)
    out.print(f"enabled webhook {webhook}")


@webhooks_cli.command("disable")
def disable(webhook: WebhookId, schema: Schema = None) -> None:
    """Stop delivering (pending deliveries are skipped and logged)."""
    open_app(None, schema).webhooks.disable(webhook)
    out.print(f"disabled webhook {webhook}")


@webhooks_cli.command("delete")
def delete(
    webhook: WebhookId,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
    schema: Schema = None,
) -> None:
    """Delete a webhook and its delivery log."""
    if not yes and not typer.confirm(f"Delete webhook {webhook} and its delivery log?", default=False):
        raise typer.Exit(1)
    open_app(None, schema).webhooks.delete(webhook)
    out.print(f"deleted webhook {webhook}")


@webhooks_cli.command("rotate-secret")
def rotate_secret(
    webhook: WebhookId,
    keep_old: Annotated[
        float, typer.Option(min=0, help="Seconds the old secret keeps signing too (a second v1).")
    ] = 86400.0,
    schema: Schema = None,
    as_json: Json = False,
) -> None:
    """Give a webhook a new signing secret; prints it once."""
    secret = open_app(None, schema).webhooks.rotate_secret(webhook, keep_old=keep_old)
    if as_json:
        emit_json({"webhook": webhook, "secret": secret})
        return
    err.print(f"webhook {webhook}: new signing secret (shown once; the old one signs for {keep_old:g} s):")
    print(secret)


@webhooks_cli.command("deliveries")
def deliveries(
    webhook: WebhookId,
    limit: Annotated[int, typer.Option(min=1, max=10000, help="At most this many attempts.")] = 50,
    schema: Schema = None,
    as_json: Json = False,
) -> None:
    """A webhook's delivery attempts, newest first: outcome, HTTP status, latency, error."""
    found = open_app(None, schema).webhooks.deliveries(webhook, limit=limit)
    if as_json:
        emit_json(found)
        return
    table = Table(title=f"deliveries of webhook {webhook}")
    for column in ("at", "delivery", "event", "type", "attempt", "outcome", "status", "latency", "error"):
        table.add_column(column)
    for d in found:
        table.add_row(
            when(d.at), str(d.delivery), str(d.event), d.event_type, str(d.attempt), d.outcome,
            "-" if d.status is None else str(d.status),
            "-" if d.latency is None else f"{d.latency * 1000:.0f} ms", d.error or "",
        )  # fmt: skip
    out.print(table)
