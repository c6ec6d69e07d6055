"""docs/integrations/sqlalchemy.md and fastapi.md followed step by step against the test database, and the
integrations' edges (a wrong driver, the dependency outside its lifespan)."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

import pageq
from docs_helpers import follow


@pytest.fixture
def tables_schema(dsn: str, schema: str) -> Iterator[str]:
    """A schema of its own for the page's tables (tests share the database): PGOPTIONS puts it first."""
    name = f"{schema}_tables"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    yield name
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {name} CASCADE")


def _succeeded(app: pageq.App, queue: str) -> bool:
    jobs = app.list_jobs(queue=queue)
    return bool(jobs) and all(job.state is pageq.JobState.SUCCEEDED for job in jobs)


def test_the_sqlalchemy_page_leads_to_a_working_worker(
    app: pageq.App, dsn: str, env: dict[str, str], tables_schema: str, tmp_path: Path
) -> None:
    env = env | {"DATABASE_URL": dsn, "PGOPTIONS": f"-c search_path={tables_schema}"}
    follow("integrations/sqlalchemy.md", tmp_path, env, lambda: _succeeded(app, "emails"))
    jobs = app.list_jobs(queue="emails", limit=10)
    assert sorted(job.args["order_id"] for job in jobs) == [1, 2000]  # not 1000: rolled back
    assert {job.result for job in jobs if job.state is pageq.JobState.SUCCEEDED} == {"receipt for order 1"}


def test_the_fastapi_page_leads_to_a_working_worker(
    app: pageq.App, dsn: str, env: dict[str, str], tmp_path: Path
) -> None:
    outputs = follow("integrations/fastapi.md", tmp_path, env | {"DATABASE_URL": dsn},
                     lambda: _succeeded(app, "emails"))  # fmt: skip
    assert "{'state': 'queued'}" in outputs[0]
    assert "welcome mail sent to grace@example.com" in outputs[1]


def test_sqlalchemy_refuses_another_driver(app: pageq.App) -> None:
    sqlalchemy = pytest.importorskip("sqlalchemy")
    from sqlalchemy.orm import Session

    from pageq.contrib.sqlalchemy import enqueue

    task = app.task(lambda: None, name="noop")
    engine = sqlalchemy.create_engine("sqlite://")
    with Session(engine) as session, pytest.raises(pageq.ConfigError, match=r"postgresql\+psycopg"):
        enqueue(session, task)


def test_the_fastapi_dependency_needs_the_lifespan(app: pageq.App) -> None:
    from pageq.contrib.fastapi import Pageq

    with pytest.raises(pageq.ConfigError, match="lifespan"):
        Pageq(app)()


def test_the_testing_page_runs(dsn: str, env: dict[str, str], tmp_path: Path) -> None:
    env = {k: v for k, v in env.items() if k != "PAGEQ_SCHEMA"} | {"PAGEQ_DSN": dsn}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # the page needs pytest alone; the plugins load slowly
    outputs = follow("integrations/testing.md", tmp_path, env, lambda: True, worker=False)
    assert "3 passed" in outputs[-1]


@pytest.mark.parametrize("module_name", ["pageq.contrib.sqlalchemy", "pageq.contrib.fastapi"])
def test_integrations_have_docstrings(module_name: str) -> None:
    """(pageq.contrib.django is left out: looking at its module-level `settings` would need Django set up.)"""
    from test_public_api import defined_here, own_doc

    module = importlib.import_module(module_name)
    assert own_doc(module) and defined_here(module)
    for name in defined_here(module):
        assert own_doc(getattr(module, name)), f"{module_name}.{name} has no docstring"
        assert name in module.__all__
