"""Database-level access control (plan item S3, raw SQL): a restricted role touches 0 rows of other tasks."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

import pageq
from pageq.testing import drain

PASSWORD = "rls-test-password"


@pytest.fixture
def restricted(app: pageq.App, dsn: str) -> Iterator[tuple[str, str]]:
    """A worker login role whose principal may work email.send only; its DSN."""
    sec = app.security
    sec.create_principal("mailer")
    sec.grant("mailer", "work", task="email.send")
    role = sec.create_db_login("mailer", "worker", PASSWORD)
    yield role, make_conninfo(dsn, user=role, password=PASSWORD)


def connect_as(dsn: str, role_dsn: str, role: str) -> psycopg.Connection[Any]:
    """A session as the role: logging in when the server lets it, else SET ROLE (same privileges)."""
    try:
        return psycopg.connect(role_dsn, autocommit=True)
    except psycopg.OperationalError:
        conn = psycopg.connect(dsn, autocommit=True)
        conn.execute(f'SET ROLE "{role}"')
        return conn


def seed(app: pageq.App) -> tuple[list[int], list[int]]:
    for name in ("email.send", "sms.send"):
        app.task(name=name)(lambda: None)
    email = [app.enqueue("email.send") for _ in range(3)]
    sms = [app.enqueue("sms.send") for _ in range(3)]
    return email, sms


def test_raw_sql_as_the_worker_role_touches_no_other_task(
    app: pageq.App, dsn: str, restricted: tuple[str, str]
) -> None:
    role, role_dsn = restricted
    email, sms = seed(app)
    s = app.schema
    with connect_as(dsn, role_dsn, role) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (role,)
        seen = [r[0] for r in conn.execute(f"SELECT id FROM {s}.jobs ORDER BY id").fetchall()]
        assert seen == email
        locked = conn.execute(
            f"SELECT id FROM {s}.jobs WHERE task <> 'email.send' FOR UPDATE SKIP LOCKED"
        ).fetchall()
        assert locked == []
        assert conn.execute(f"UPDATE {s}.jobs SET run_at = now() WHERE task = 'sms.send'").rowcount == 0
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # workers write only the state columns
            conn.execute(f"UPDATE {s}.jobs SET priority = 9 WHERE task = 'email.send'")
        assert conn.execute(f"UPDATE {s}.jobs SET state = 'queued' WHERE id = ANY(%s)", [sms]).rowcount == 0
        assert conn.execute(f"DELETE FROM {s}.jobs WHERE task = 'sms.send'").rowcount == 0
        assert conn.execute(f"SELECT count(*) FROM {s}.finished_jobs").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # moving a job into another task
            conn.execute(f"UPDATE {s}.jobs SET task = 'sms.send' WHERE id = %s", [email[0]])
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # no enqueue grant
            conn.execute(f"""INSERT INTO {s}.jobs (task, queue, args, state, run_at, max_attempts, created_at)
                             VALUES ('sms.send', 'default', '{{}}', 'queued', now(), 1, now())""")
        for table in ("tokens", "grants", "principals", "db_roles", "audit", "audit_seals"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT * FROM {s}.{table}")
        for statement in (f"UPDATE {s}.audit SET reason = 'x'", f"DELETE FROM {s}.audit",
                          f"TRUNCATE {s}.audit"):  # fmt: skip
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # cannot write in another role's name
            conn.execute(f"INSERT INTO {s}.audit (db_role, action) VALUES ('postgres', 'forged')")
    with psycopg.connect(dsn) as admin:
        flags = admin.execute(
            "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = %s", [role]
        ).fetchone()
        owner = admin.execute(
            "SELECT tableowner FROM pg_tables WHERE schemaname = %s AND tablename = 'jobs'", [s]
        ).fetchone()
        secured = admin.execute(
            "SELECT relname, relforcerowsecurity FROM pg_class WHERE relnamespace = %s::regnamespace "
            "AND relrowsecurity ORDER BY 1", [s],
        ).fetchall()  # fmt: skip
    assert flags == (False, False) and owner != (role,)
    assert secured == [("audit", True), ("finished_jobs", False), ("jobs", False), ("queues", False)]
    assert {app.get_job(i).state for i in sms} == {pageq.JobState.QUEUED}
    assert {app.get_job(i).priority for i in sms} == {0}


async def test_a_worker_running_as_the_role_runs_only_its_tasks(
    app: pageq.App, dsn: str, restricted: tuple[str, str]
) -> None:
    role, role_dsn = restricted
    try:
        psycopg.connect(role_dsn).close()
    except psycopg.OperationalError:
        pytest.skip("the test server does not let the role log in with a password")
    email, sms = seed(app)
    ran: list[str] = []
    worker_app = pageq.App(role_dsn, schema=app.schema)
    for name in ("email.send", "sms.send"):
        worker_app.task(name=name)(lambda name=name: ran.append(name))
    try:
        await drain(worker_app, ["default"], poll_interval=0.05)  # as the role it sees only email.send
    finally:
        worker_app.close()
    assert ran == ["email.send"] * 3
    assert {app.get_job(i).state for i in email} == {pageq.JobState.SUCCEEDED}
    assert {app.get_job(i).state for i in sms} == {pageq.JobState.QUEUED}
    claims = app.security.audit(action="claim")
    assert {r.db_role for r in claims} == {role} and len(claims) == 3


def test_dsn_of_the_role_has_its_password_only_in_the_dsn(restricted: tuple[str, str]) -> None:
    _role, role_dsn = restricted
    assert conninfo_to_dict(role_dsn)["password"] == PASSWORD
    assert PASSWORD not in pageq.config.mask(role_dsn)


def test_a_producer_role_enqueues_big_batches_without_copy(
    app: pageq.App, dsn: str, restricted: tuple[str, str]
) -> None:
    app.security.create_principal("shop")
    app.security.grant("shop", "enqueue", task="email.*")
    role = app.security.create_db_login("shop", "producer", PASSWORD)
    role_dsn = make_conninfo(dsn, user=role, password=PASSWORD)
    try:
        psycopg.connect(role_dsn).close()
    except psycopg.OperationalError:
        pytest.skip("the test server does not let the role log in with a password")
    producer = pageq.App(role_dsn, schema=app.schema)
    producer.task(name="email.send")(lambda: None)
    producer.task(name="sms.send")(lambda: None)
    try:
        ids = producer.enqueue_many([producer.get_task("email.send").job() for _ in range(300)])  # COPY size
        assert len(ids) == 300
        with pytest.raises(pageq.DatabaseError, match="row-level security"):
            producer.enqueue_many([producer.get_task("sms.send").job() for _ in range(300)])
    finally:
        producer.close()
    assert len(app.list_jobs(limit=1000)) == 300


async def test_a_non_superuser_owner_enqueues_with_copy_and_works(app: pageq.App, dsn: str) -> None:
    """The owner is not exempt from row-level security by being a superuser (as in the other tests)."""
    owner = f"{app.schema}_owner"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE ROLE "{owner}" LOGIN PASSWORD %s'.replace("%s", f"'{PASSWORD}'"))
        database = conn.execute("SELECT current_database()").fetchone()
        assert database is not None
        conn.execute(f'GRANT CREATE ON DATABASE "{database[0]}" TO "{owner}"')
    owned = pageq.App(make_conninfo(dsn, user=owner, password=PASSWORD), schema=f"{app.schema}_o")
    try:
        try:
            owned.migrate()
        except pageq.DatabaseError:
            pytest.skip("the test server does not let the role log in with a password")
        ran: list[int] = []
        owned.task(name="n")(lambda i: ran.append(i))
        owned.enqueue_many([owned.get_task("n").job(i=i) for i in range(300)])  # the COPY path
        await drain(owned, ["default"], poll_interval=0.05)
        assert sorted(ran) == list(range(300))
        assert len(owned.security.audit(action="complete", limit=1000)) == 300
    finally:
        owned.drop_schema()
        owned.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'REVOKE CREATE ON DATABASE "{database[0]}" FROM "{owner}"')
            conn.execute(f'DROP ROLE "{owner}"')
