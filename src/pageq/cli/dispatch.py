"""`pageq queues ...` (run-time queue controls) and `pageq routes` (routing rules, explained)."""

from __future__ import annotations

import json
import re
from typing import Annotated

import typer
from rich.table import Table

import pageq
from pageq.cli.common import AppRef, Json, Schema, open_app
from pageq.cli.output import emit_json, fail, out

queues_cli = typer.Typer(
    help="Run-time queue controls, stored in the database: every worker follows them within a second.",
    no_args_is_help=True,
)
Name = Annotated[str, typer.Argument(metavar="QUEUE", help="Queue name.")]
_RATE = re.compile(r"^(\d+)/(\d*\.?\d*)\s*(s|sec|m|min|h|hour)?$")
_UNITS = {None: 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0}


def _show(controls: list[pageq.QueueControl], as_json: bool) -> None:
    if as_json:
        emit_json(controls)
        return
    table = Table(title="queue controls")
    for column in ("queue", "paused", "concurrency", "rate", "weight"):
        table.add_column(column)
    for c in controls:
        rate = "-" if c.rate_limit is None else f"{c.rate_limit} per {c.rate_period:g} s"
        concurrency = "-" if c.concurrency is None else str(c.concurrency)
        table.add_row(c.name, "yes" if c.paused else "no", concurrency, rate, str(c.weight))
    out.print(table)


@queues_cli.command("list")
def queues_list(schema: Schema = None, as_json: Json = False) -> None:
    """Queues that have controls."""
    _show(open_app(None, schema).queue_controls(), as_json)


@queues_cli.command("pause")
def queues_pause(name: Name, schema: Schema = None, as_json: Json = False) -> None:
    """Stop starting jobs of QUEUE (running jobs finish)."""
    _show([open_app(None, schema).pause_queue(name)], as_json)


@queues_cli.command("resume")
def queues_resume(name: Name, schema: Schema = None, as_json: Json = False) -> None:
    """Start jobs of QUEUE again."""
    _show([open_app(None, schema).resume_queue(name)], as_json)


@queues_cli.command("limit")
def queues_limit(
    name: Name,
    concurrency: Annotated[str, typer.Argument(help="Running jobs across all workers, or 'none'.")],
    schema: Schema = None,
    as_json: Json = False,
) -> None:
    """At most CONCURRENCY running jobs of QUEUE across all workers."""
    value = None if concurrency.lower() == "none" else _int(concurrency, "concurrency")
    _show([open_app(None, schema).limit_queue(name, value)], as_json)


@queues_cli.command("rate")
def queues_rate(
    name: Name,
    rate: Annotated[str, typer.Argument(help="Starts per period: 50/s, 100/10s, 6/min, 1000/h; or 'none'.")],
    schema: Schema = None,
    as_json: Json = False,
) -> None:
    """At most RATE job starts of QUEUE, cluster-wide."""
    app = open_app(None, schema)
    if rate.lower() == "none":
        _show([app.rate_limit_queue(name, None)], as_json)
        return
    match = _RATE.match(rate.strip().lower())
    if not match:
        fail(f"rate {rate!r} is not N/PERIOD (e.g. 50/s, 100/10s, 6/min)")
    count, amount, unit = match.groups()
    period = (float(amount) if amount not in ("", ".") else 1.0) * _UNITS[unit]
    _show([app.rate_limit_queue(name, int(count), per=period)], as_json)


@queues_cli.command("weight")
def queues_weight(
    name: Name,
    weight: Annotated[int, typer.Argument(min=1, max=1000, help="Share of claims (default 1).")],
    schema: Schema = None,
    as_json: Json = False,
) -> None:
    """The share of QUEUE in the claims of workers that serve several queues."""
    _show([open_app(None, schema).weight_queue(name, weight)], as_json)


def _int(text: str, what: str) -> int:
    if not text.isdigit():
        fail(f"{what} must be a non-negative integer or 'none', got {text!r}")
    return int(text)


def _publish(app: pageq.App, as_json: bool) -> None:
    written, replaced = app.publish_routes()
    if as_json:
        emit_json({"tasks_written": written, "rules_written": replaced})
        return
    out.print(f"published: {written} task rows changed, {replaced} routing rules written", highlight=False)


def routes(
    task: Annotated[str | None, typer.Argument(help="Explain where a job of this task would go.")] = None,
    args: Annotated[str, typer.Option("--args", help="The job's arguments as a JSON object.")] = "{}",
    app_ref: AppRef = None,
    publish: Annotated[
        bool, typer.Option("--publish", help="Write the app's tasks and rules to the database (SQL API).")
    ] = False,
    schema: Schema = None,
    as_json: Json = False,
) -> None:
    """Show the routing rules in order; with TASK, explain which rule decides its queue and priority."""
    if app_ref is None:
        fail("routes needs the app that defines them: --app module:attribute or PAGEQ_APP")
    app = open_app(app_ref, schema, announce=False)
    if publish:
        _publish(app, as_json)
        return
    if task is None:
        rules = [{"rule": i + 1, "when": r.describe(), "queue": r.queue, "priority": r.priority}
                 for i, r in enumerate(app.router.rules)]  # fmt: skip
        if as_json:
            emit_json(rules)
            return
        table = Table(title="routing rules (first match wins)")
        for column in ("rule", "when", "queue", "priority"):
            table.add_column(column)
        for rule in rules:
            table.add_row(*(("-" if v is None else str(v)) for v in rule.values()))
        out.print(table if rules else "no routing rules: every task uses its own queue and priority")
        return
    try:
        parsed = json.loads(args)
    except json.JSONDecodeError as exc:
        fail(f"--args is not valid JSON: {exc}")
    if not isinstance(parsed, dict):
        fail("--args must be a JSON object")
    decision = app.explain_route(task, parsed)
    trace = [{"rule": i + 1, "when": r.describe(), "matched": why is None, "why_not": why}
             for i, (r, why) in enumerate(decision.trace)]  # fmt: skip
    if as_json:
        emit_json({"queue": decision.queue, "priority": decision.priority,
                   "rule": None if decision.rule is None else decision.rule + 1, "trace": trace})  # fmt: skip
        return
    for step in trace:
        verdict = "matches" if step["matched"] else f"no: {step['why_not']}"
        out.print(f"rule {step['rule']} ({step['when']}): {verdict}", highlight=False)
    source = "the task's own options" if decision.rule is None else f"rule {decision.rule + 1}"
    out.print(f"{task} -> queue {decision.queue!r}, priority {decision.priority} ({source})", highlight=False)
