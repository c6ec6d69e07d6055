"""Each example of examples/ runs with its one command (docs/examples.md) and reaches its summary."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import pageq
from docs_helpers import blocks, commands

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def example_env(app: pageq.App, dsn: str, env: dict[str, str], schema: str) -> Iterator[dict[str, str]]:
    """The test's database and schema; the schemas the examples add beside it are dropped after."""
    yield env | {"PYTHONPATH": str(ROOT)}
    with psycopg.connect(dsn, autocommit=True) as conn:
        for suffix in ("books", "media"):
            conn.execute(f"DROP SCHEMA IF EXISTS {schema}_{suffix} CASCADE")


def example(env: dict[str, str], module: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, f"{module} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_the_page_names_each_example() -> None:
    documented = commands("examples.md")
    for module in ("examples.orders", "examples.transcode", "examples.ledger"):
        assert f"python -m {module}" in documented


def test_orders(example_env: dict[str, str]) -> None:
    out = example(example_env, "examples.orders")
    assert "summary: 5 shipped, 1 not fulfilled, 6 customers notified, 2 payments retried" in out
    assert "order 4 could not be fulfilled" in out


def test_transcode_in_processes_with_heartbeats(example_env: dict[str, str]) -> None:
    out = example(example_env, "examples.transcode", "--videos", "2", "--frames", "200", "--lease", "1")
    assert "summary: 2/2 transcoded" in out
    assert "each ran once: True" in out
    assert "clip-1.mov 100%  clip-2.mov 100%" in out


def test_ledger_books_each_transfer_once(example_env: dict[str, str]) -> None:
    out = example(example_env, "examples.ledger", "--batches", "3", "--size", "50")
    assert "'balanced': True" in out and "'booked_twice': 0" in out and "'booked': 150" in out
    trail = out.split("audit trail of batch job")[1]
    assert [line.split()[1] for line in trail.splitlines()[1:]] == [
        "enqueue", "claim", "retry", "claim", "complete",
    ]  # fmt: skip


def test_an_example_on_the_embedded_database(env: dict[str, str], tmp_path: Path) -> None:
    """No DSN: the example starts the embedded server (in PAGEQ_HOME), as for a new user."""
    local = {k: v for k, v in env.items() if k not in ("PAGEQ_DSN", "DATABASE_URL", "PAGEQ_SCHEMA")}
    local |= {"PAGEQ_HOME": str(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
    try:
        assert "summary: 3 shipped" in example(local, "examples.orders", "--orders", "3")
    finally:
        subprocess.run(
            [sys.executable, "-m", "pageq", "db", "stop"], env=local, capture_output=True, timeout=60
        )


def test_the_examples_page_snippets_run(example_env: dict[str, str]) -> None:
    for body in blocks("examples.md"):
        done = subprocess.run(
            [sys.executable, "-"], input=body, cwd=ROOT, env=example_env, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, f"{body}\n{done.stdout}\n{done.stderr}"
