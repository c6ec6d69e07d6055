"""What the CLI's commands share: option types and opening the app."""

from __future__ import annotations

import os
from typing import Annotated

import typer

import pageq
from pageq.cli.output import err

AppRef = Annotated[
    str | None, typer.Option("--app", "-a", envvar="PAGEQ_APP", help="The app as module:attribute.")
]
Schema = Annotated[str | None, typer.Option("--schema", envvar="PAGEQ_SCHEMA", help="Postgres schema.")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
QueueFilter = Annotated[str | None, typer.Option("--queue", help="Only jobs of this queue.")]
TaskFilter = Annotated[str | None, typer.Option("--task", help="Only jobs of this task.")]
Limit = Annotated[int, typer.Option(min=1, max=10000, help="At most this many jobs.")]


def open_app(ref: str | None, schema: str | None, *, announce: bool = True) -> pageq.App:
    """The user's app (``--app``), or a bare App for commands that need no tasks."""
    app = (
        pageq.load_app(ref) if ref else pageq.App(schema=schema, token=os.environ.get("PAGEQ_TOKEN") or None)
    )
    if schema and ref:
        app.schema = schema
    if announce:
        err.print(
            f"[dim]database: {app.database.label}, schema {app.schema}[/dim]", highlight=False, soft_wrap=True
        )
    return app
