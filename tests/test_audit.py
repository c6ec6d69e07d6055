"""The audit trail (plan item S7): transitions in their own transaction, append-only, a sealed chain."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

import pageq
from conftest import seal_all
from pageq.testing import drain


def sql(dsn: str, schema: str, text: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(text.replace("{s}", schema), params)
        return cur.fetchall() if cur.description else []


@pytest.fixture
def tasks(app: pageq.App) -> Iterator[pageq.App]:
    attempts: dict[int, int] = {}

    @app.task(max_attempts=2, retry=pageq.Backoff.constant(0))
    def flaky(ctx: pageq.Context, n: int) -> int:
        attempts[ctx.job.id] = attempts.get(ctx.job.id, 0) + 1
        if n % 3 == 0 and attempts[ctx.job.id] == 1:
            raise RuntimeError("first attempt fails")
        if n % 5 == 0:
            raise pageq.NonRetryableError("never works")
        return n

    yield app


async def test_full_level_records_every_transition_exactly_once(tasks: pageq.App) -> None:
    app = tasks
    ids = app.enqueue_many([app.get_task("flaky").job(n=n) for n in range(1, 31)])
    await drain(app, ["default"], poll_interval=0.05)
    rows = app.security.audit(limit=10_000)
    by_job: dict[int, list[str]] = {}
    for row in reversed(rows):
        if row.job_id is not None:
            by_job.setdefault(row.job_id, []).append(row.action)
    for n, job_id in zip(range(1, 31), ids, strict=True):
        job = app.get_job(job_id)
        want = ["enqueue", "claim"] + (["retry", "claim"] if n % 3 == 0 else [])
        want.append("bury" if n % 5 == 0 else "complete")
        assert by_job[job_id] == want, (n, job.state)


async def test_levels_off_and_actions(tasks: pageq.App) -> None:
    app = tasks
    app.security.audit_level("actions")
    first = app.enqueue("flaky", {"n": 1})
    await drain(app, ["default"], poll_interval=0.05)
    assert [r.action for r in app.security.audit(job_id=first)] == ["enqueue"]
    app.security.audit_level("off")
    second = app.enqueue("flaky", {"n": 1})
    await drain(app, ["default"], poll_interval=0.05)
    assert app.security.audit(job_id=second) == []
    assert [r.action for r in app.security.audit(action="audit")] == ["audit.level", "audit.level"]


def test_a_rolled_back_transaction_leaves_no_audit_row(tasks: pageq.App, dsn: str) -> None:
    app = tasks
    with psycopg.connect(dsn) as conn:
        job_id = app.get_task("flaky").enqueue(n=1, conn=conn)
        conn.rollback()
    assert app.security.audit(job_id=job_id) == []
    assert sql(dsn, app.schema, "SELECT count(*) FROM {s}.jobs") == [(0,)]


@pytest.mark.parametrize("statement", [
    "UPDATE {s}.audit SET reason = 'x'", "DELETE FROM {s}.audit", "TRUNCATE {s}.audit",
    "UPDATE {s}.audit_seals SET sealed_by = 'x'", "DELETE FROM {s}.audit_seals", "TRUNCATE {s}.audit_seals",
])  # fmt: skip
def test_the_trail_is_append_only_even_for_a_superuser(tasks: pageq.App, dsn: str, statement: str) -> None:
    app = tasks
    app.enqueue("flaky", {"n": 1})
    seal_all(app)
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        sql(dsn, app.schema, statement)


def test_owner_privileges_exclude_changing_the_trail(tasks: pageq.App, dsn: str) -> None:
    for table in ("audit", "audit_seals"):
        rows = sql(dsn, tasks.schema, """
            SELECT a.privilege_type FROM pg_class c, aclexplode(c.relacl) AS a
            WHERE c.oid = (%s || '.' || %s)::regclass AND a.grantee = c.relowner
            ORDER BY 1""", [tasks.schema, table])  # fmt: skip
        assert {r[0] for r in rows} & {"UPDATE", "DELETE", "TRUNCATE"} == set()
        assert "INSERT" in {r[0] for r in rows}


TAMPER = {
    "altered": "UPDATE {s}.audit SET task = 'other' WHERE id = %(id)s",
    "removed": "DELETE FROM {s}.audit WHERE id = %(id)s",
    "inserted": "INSERT INTO {s}.audit (xid, action) OVERRIDING SYSTEM VALUE "
    "SELECT xid, 'forged' FROM {s}.audit WHERE id = %(id)s",
}


@pytest.mark.parametrize("kind", sorted(TAMPER))
def test_verify_reports_the_first_tampered_row(tasks: pageq.App, dsn: str, kind: str) -> None:
    app = tasks
    for _ in range(3):  # three seals of 10 rows each
        app.enqueue_many([app.get_task("flaky").job(n=n) for n in range(10)])
        seal_all(app)
    assert app.security.verify_audit().ok
    ids = [r[0] for r in sql(dsn, app.schema, "SELECT id FROM {s}.audit ORDER BY id")]
    victim = ids[14]  # in the second seal
    with psycopg.connect(dsn, autocommit=True) as conn:  # a superuser gets around the triggers
        conn.execute(f"ALTER TABLE {app.schema}.audit DISABLE TRIGGER USER")
        conn.execute(TAMPER[kind].replace("{s}", app.schema), {"id": victim})
        conn.execute(f"ALTER TABLE {app.schema}.audit ENABLE TRIGGER USER")
    report = app.security.verify_audit()
    assert report.finding is not None and report.finding.kind == kind
    assert report.finding.seal == 2
    if kind == "inserted":
        assert report.finding.row_id == max(r[0] for r in sql(dsn, app.schema, "SELECT id FROM {s}.audit"))
    else:
        assert report.finding.row_id == victim


def test_a_forged_seal_breaks_the_chain(tasks: pageq.App, dsn: str) -> None:
    app = tasks
    for _ in range(2):
        app.enqueue("flaky", {"n": 1})
        seal_all(app)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE {app.schema}.audit_seals DISABLE TRIGGER USER")
        conn.execute(f"UPDATE {app.schema}.audit_seals SET digest = sha256('x') WHERE seq = 1")
    report = app.security.verify_audit()
    assert report.finding is not None and report.finding.kind == "seal" and report.finding.seal == 1


def test_concurrent_writers_and_sealing_never_fork_the_chain(tasks: pageq.App) -> None:
    app = tasks
    stop = threading.Event()

    def write() -> None:
        for _ in range(40):
            app.enqueue_many([app.get_task("flaky").job(n=n) for n in range(5)])

    def seal() -> None:
        while not stop.is_set():
            app.security.seal_audit("sealer")

    writers = [threading.Thread(target=write) for _ in range(8)]
    sealer = threading.Thread(target=seal)
    sealer.start()
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    stop.set()
    sealer.join()
    seal_all(app)
    report = app.security.verify_audit()
    assert report.ok and report.rows == 8 * 40 * 5 and report.unsealed == 0
