"""The SQL API (docs/sql-api.md, migration 0011): SQL enqueues and Python works, Python enqueues and SQL
works, the rules of the Python API (routing, unique and idempotency keys, groups, retries, grants, audit,
keys)."""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

import pageq
from pageq.routing import glob_regex
from pageq.security.crypto import Keyring, new_key
from pageq.store import sqlapi
from pageq.testing import drain

PASSWORD = "sql-api-test-password"


def sql(app: pageq.App, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """One statement on a new autocommit session (``{s}`` is the schema)."""
    with psycopg.connect(app.database.dsn, autocommit=True) as conn:
        cur = conn.execute(query.replace("{s}", app.schema), params)
        return cur.fetchall() if cur.description else []


def raises(app: pageq.App, sqlstate: str, query: str, *params: Any) -> str:
    with pytest.raises(psycopg.Error) as caught:
        sql(app, query, *params)
    assert caught.value.sqlstate == sqlstate, caught.value
    return str(caught.value)


@pytest.fixture
def mail(app: pageq.App) -> Iterator[pageq.App]:
    """The app of docs/sql-api.md with what its handlers received, its tasks and rules published."""
    app.received = []  # type: ignore[attr-defined]

    @app.task(queue="emails", max_attempts=3, retry=pageq.Backoff.exponential(base=2.0, cap=600))
    def send_email(to: str, subject: str = "hello") -> dict[str, str]:
        app.received.append(to)  # type: ignore[attr-defined]
        return {"sent": to}

    @app.task(queue="images", aliases=["thumbnail"])
    def resize(path: str, width: int, **extra: Any) -> None: ...

    app.route("send_email", args={"to": "ceo@example.com"}, queue="vip", priority=10)
    assert app.publish_routes() == (3, 1)
    yield app


def test_published_functions_are_the_named_queries(app: pageq.App) -> None:
    """Each q_<name> holds its named query's current text; migrate remakes them when the text changes."""
    bodies = dict(sql(app, "SELECT proname, prosrc FROM pg_proc WHERE pronamespace = %s::regnamespace "
                           "AND proname LIKE 'q\\_%%'", app.schema))  # fmt: skip
    assert sorted(bodies) == sorted(f"q_{name}" for name in sqlapi.PUBLISHED)
    for name in sqlapi.PUBLISHED:
        want = sqlapi.positional(app.store.queries[name]).text.strip().rstrip(";")
        assert bodies[f"q_{name}"].strip() == want
    assert app.migration_status().sql_api_current
    sql(app, "UPDATE {s}.sql_api SET digest = 'made from older queries'")
    sql(app, "DROP FUNCTION {s}.q_heartbeat")
    assert not app.migration_status().sql_api_current
    assert app.migrate() == []
    assert app.migration_status().sql_api_current
    assert sql(app, "SELECT count(*) FROM pg_proc WHERE proname = 'q_heartbeat' "
                    "AND pronamespace = %s::regnamespace", app.schema) == [(1,)]  # fmt: skip


async def test_sql_enqueues_and_the_python_worker_works(mail: pageq.App) -> None:
    app = mail
    one = sql(app, "SELECT {s}.enqueue('send_email', '{\"to\": \"ada@example.com\"}')")[0][0]
    vip = sql(app, "SELECT {s}.enqueue('send_email', '{\"to\": \"ceo@example.com\"}')")[0][0]
    jobs = [
        {"task": "send_email", "args": {"to": "k@example.com"}, "idempotency_key": "k"},
        {"task": "send_email", "args": {"to": "u@example.com"}, "unique_key": "u"},
        {"task": "send_email", "args": {"to": "u2@example.com"}, "unique_key": "u"},  # held: u's id
        {"task": "send_email", "args": {"to": "k@example.com"}, "idempotency_key": "k"},  # the same job
        {"task": "thumbnail", "args": {"path": "a", "width": 1, "dpi": 2}, "group_key": "g", "priority": 3},
        {"task": "send_email", "args": {"to": "after@example.com"}, "after": [one]},
        {"task": "send_email", "args": {"to": "later@example.com"}, "delay": 3600},
    ]
    ids = [r[0] for r in sql(app, "SELECT id FROM {s}.enqueue_many(%s)", json.dumps(jobs))]
    assert ids[2] == ids[1] and ids[3] == ids[0] and len(set(ids)) == 5
    again = sql(app, "SELECT {s}.enqueue('send_email', '{\"to\": \"x\"}', idempotency_key => 'k')")[0][0]
    assert again == ids[0]
    rows = sql(app, "SELECT id, task, queue, priority, state, max_attempts FROM {s}.jobs ORDER BY id")
    assert [r[1:] for r in rows] == [
        ("send_email", "emails", 0, "queued", 3), ("send_email", "vip", 10, "queued", 3),
        ("send_email", "emails", 0, "queued", 3), ("send_email", "emails", 0, "queued", 3),
        ("resize", "images", 3, "queued", 5), ("send_email", "emails", 0, "blocked", 3),
        ("send_email", "emails", 0, "scheduled", 3),
    ]  # fmt: skip
    await drain(app, ["emails", "vip", "images"], poll_interval=0.05)
    assert sorted(app.received) == sorted(  # type: ignore[attr-defined]
        ["ada@example.com", "ceo@example.com", "k@example.com", "u@example.com", "after@example.com"]
    )
    assert app.get_job(vip).result == {"sent": "ceo@example.com"}
    assert app.get_job(ids[-1]).state is pageq.JobState.SCHEDULED
    enqueued = sql(app, "SELECT job_id, db_role FROM {s}.audit WHERE action = 'enqueue' ORDER BY job_id")
    assert [r[0] for r in enqueued] == [r[0] for r in rows] and {r[1] for r in enqueued} == {"postgres"}


async def test_python_enqueues_and_sql_works(mail: pageq.App) -> None:
    app = mail
    send = app.get_task("send_email")
    first, second, third = (send.enqueue(to=f"{n}@example.com") for n in range(3))
    claimed = sql(
        app, "SELECT id, task, args, attempts, lease_token FROM {s}.claim('{emails}', max_jobs => 2)"
    )
    assert [(r[0], r[1], r[2], r[3]) for r in claimed] == [
        (first, "send_email", {"to": "0@example.com"}, 1), (second, "send_email", {"to": "1@example.com"}, 1)
    ]  # fmt: skip
    (_, token1), (_, token2) = ((r[0], r[4]) for r in claimed)
    assert sql(app, "SELECT {s}.heartbeat(%s, %s, 120) > now() + interval '100 s'", first, token1) == [
        (True,)
    ]
    with psycopg.connect(app.database.dsn) as conn:  # the work's own write and the completion: one commit
        conn.execute("CREATE TEMP TABLE effects (id bigint)")
        conn.execute("INSERT INTO effects VALUES (%s)", [first])
        conn.execute(f"SELECT {app.schema}.complete(%s, %s, '{{\"ok\": 1}}')", [first, token1])
    assert app.get_job(first).state is pageq.JobState.SUCCEEDED and app.get_job(first).result == {"ok": 1}
    stale = raises(app, "55000", "SELECT {s}.complete(%s, %s)", first, token1)
    assert "not running under this lease token" in stale
    assert sql(app, "SELECT {s}.fail(%s, %s, 'Boom: 451')", second, token2) == [("retrying",)]
    job = app.get_job(second)
    assert job.state is pageq.JobState.RETRYING and job.errors[0].error == "Boom: 451"
    delay = (job.run_at - datetime.fromisoformat(job.errors[0].at)).total_seconds()
    assert 1.8 <= delay <= 2.2  # the published backoff after 1 attempt: 2 ** 1 seconds, +- 10 %
    raises(app, "55000", "SELECT {s}.heartbeat(%s, %s)", second, token2)
    sql(app, "UPDATE {s}.jobs SET run_at = created_at, attempts = 2 WHERE id = %s", second)
    (again,) = sql(app, "SELECT id, lease_token FROM {s}.claim('{emails}', tasks => '{send_email}')")
    assert again[0] == second
    assert sql(app, "SELECT {s}.fail(%s, %s, 'still down', traceback => 'tb')", *again) == [("dead",)]
    dead = app.get_job(second)
    assert dead.state is pageq.JobState.DEAD and [e.error for e in dead.errors] == ["Boom: 451", "still down"]
    (t3,) = sql(app, "SELECT id, lease_token FROM {s}.claim('{emails}')")
    assert sql(app, "SELECT {s}.release(%s, %s)", *t3) == [("queued",)]
    assert app.get_job(third).attempts == 0
    (t3,) = sql(app, "SELECT id, lease_token FROM {s}.claim('{emails}')")
    assert sql(app, "SELECT {s}.fail(%s, %s, 'x', retry_in => 0, retryable => false)", *t3) == [("dead",)]
    assert sql(app, "SELECT {s}.cancel(%s)", send.enqueue(to="c", delay=60)) == [("cancelled",)]
    raises(app, "55000", "SELECT {s}.cancel(%s)", first)
    raises(app, "P0002", "SELECT {s}.cancel(123456789)")
    actions = [r[0] for r in sql(app, "SELECT action FROM {s}.audit WHERE job_id = %s ORDER BY id", second)]
    assert actions == ["enqueue", "claim", "retry", "claim", "bury"]


def test_bad_input_is_refused_and_writes_nothing(mail: pageq.App) -> None:
    app = mail
    resize = 'SELECT {s}.enqueue(\'resize\', \'{"path": "a", "width": 1}\''
    cases = [
        ("SELECT {s}.enqueue('nope')", "unknown task"),
        ("SELECT {s}.enqueue('send_email', '{}')", "needs the arguments to"),
        ("SELECT {s}.enqueue('send_email', '{\"to\": 1, \"cc\": 2}')", "takes no arguments cc"),
        ("SELECT {s}.enqueue('send_email', '[1]')", "args must be a JSON object"),
        (resize + ", priority => 99999)", "priority"),
        (resize + ", queue => 'bad queue; drop')", "queue"),
        (resize + ", delay => 1, run_at => now())", "not both"),
        (resize + ", on_conflict => 'x')", "on_conflict"),
        ("SELECT {s}.enqueue_many('{\"task\": \"resize\"}')", "JSON array"),
        ("SELECT {s}.enqueue_many('[{\"task\": \"resize\", \"args\": {}, \"colour\": 1}]')", "unknown keys"),
        ("SELECT * FROM {s}.claim('{}')", "1 to 100 queues"),
        ("SELECT * FROM {s}.claim('{emails}', max_jobs => 0)", "max_jobs"),
        ("SELECT * FROM {s}.claim('{emails}', worker => '')", "worker must be"),
    ]  # fmt: skip
    for query, message in cases:
        assert message in raises(app, "22023", query), query
    app.route("resize", when=lambda args: True, queue="big")
    app.publish_routes()
    refused = raises(app, "22023", 'SELECT {s}.enqueue(\'resize\', \'{"path": "a", "width": 1}\')')
    assert "predicate <lambda> is Python code" in refused
    assert sql(app, resize + ", queue => 'big', priority => 1)")[0][0] > 0
    raises(app, "P0002", "SELECT {s}.enqueue('send_email', '{\"to\": \"a\"}', after => '{987654}')")
    first = "SELECT {s}.enqueue('send_email', '{\"to\": \"a\"}', unique_key => 'k', on_conflict => 'raise')"
    holder = sql(app, first)[0][0]
    assert f"held by job {holder}" in raises(app, "23505", first)
    assert sql(app, "SELECT count(*) FROM {s}.jobs") == [(2,)]


def test_routing_globs_match_as_in_python(app: pageq.App) -> None:
    patterns = ["reports.*", "email.?end", "a[bc]d", "a[!b]c", "x[", "x[]]y", "a-b.c:d", "[a-z]*"]
    names = ["reports.daily", "reports", "email.send", "abd", "aed", "axc", "x[", "x]y", "a-b.c:d", "Zz"]
    pairs = [(n, p) for p in patterns for n in names]
    got = sql(app, "SELECT n ~ r FROM unnest(%s::text[], %s::text[]) AS u(n, r)",
              [n for n, _ in pairs], [glob_regex(p) for _, p in pairs])  # fmt: skip
    assert [g[0] for g in got] == [fnmatch.fnmatchcase(n, p) for n, p in pairs]


def connect_as(app: pageq.App, role: str) -> psycopg.Connection[Any]:
    """A session as the role: logging in when the server lets it, else SET ROLE (same privileges)."""
    try:
        return psycopg.connect(make_conninfo(app.database.dsn, user=role, password=PASSWORD), autocommit=True)
    except psycopg.OperationalError:
        conn = psycopg.connect(app.database.dsn, autocommit=True)
        conn.execute(f'SET ROLE "{role}"')
        return conn


def test_restricted_roles_use_the_functions_for_their_grants_only(mail: pageq.App) -> None:
    app, sec, s = mail, mail.security, mail.schema
    sec.create_principal("shop")
    sec.grant("shop", "enqueue", task="send_email")
    sec.create_principal("mailer")
    sec.grant("mailer", "work", task="send_email")
    producer = sec.create_db_login("shop", "producer", PASSWORD)
    worker = sec.create_db_login("mailer", "worker", PASSWORD)
    resize = app.get_task("resize").enqueue(path="p", width=1, queue="emails")
    with connect_as(app, producer) as conn:
        job = conn.execute(f"SELECT {s}.enqueue('send_email', '{{\"to\": \"a\"}}')").fetchone()
        assert job is not None
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="may not enqueue task resize"):
            conn.execute(f'SELECT {s}.enqueue(\'resize\', \'{{"path": "a", "width": 1}}\')')
        with pytest.raises(psycopg.errors.InsufficientPrivilege):  # producers may not work jobs
            conn.execute(f"SELECT * FROM {s}.claim('{{emails}}')")
    with connect_as(app, worker) as conn:
        claimed = conn.execute(f"SELECT id, lease_token FROM {s}.claim('{{emails}}', 10)").fetchall()
        assert [r[0] for r in claimed] == [job[0]]  # row-level security: not the resize job
        assert conn.execute(f"SELECT {s}.complete(%s, %s)", claimed[0]).fetchone() == ("succeeded",)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="may not cancel"):
            conn.execute(f"SELECT {s}.cancel(%s)", [app.get_task("send_email").enqueue(to="b")])
        with pytest.raises(psycopg.Error) as hidden:  # the resize job is invisible to it
            conn.execute(f"SELECT {s}.cancel(%s)", [resize])
        assert hidden.value.sqlstate == "P0002"
        mine = app.get_task("send_email").enqueue(to="c")
        for column, value in (
            ("args", "'{}'"),
            ("priority", "9"),
            ("task", "'resize'"),
            ("max_attempts", "99"),
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):  # only the state columns
                conn.execute(f"UPDATE {s}.jobs SET {column} = {value} WHERE id = %s", [mine])
        assert conn.execute(f"UPDATE {s}.jobs SET run_at = now() WHERE id = %s", [mine]).rowcount == 1
    public = sql(app, "SELECT count(*) FROM pg_proc p WHERE p.pronamespace = %s::regnamespace "
                      "AND (p.proname LIKE 'q\\_%%' OR p.proname IN ('enqueue', 'claim', 'fail')) "
                      "AND has_function_privilege('public', p.oid, 'EXECUTE')", s)  # fmt: skip
    assert public == [(0,)]
    roles = sql(app, "SELECT action, db_role FROM {s}.audit WHERE job_id = %s ORDER BY id", job[0])
    assert roles == [("enqueue", producer), ("claim", worker), ("complete", worker)]


async def test_keyring_workers_and_clear_arguments(app: pageq.App) -> None:
    ring = Keyring.parse(f"k1:{new_key()}")
    keyed = pageq.App(app.database.dsn, schema=app.schema, keyring=ring)
    ran: list[str] = []

    @keyed.task
    def secret(card: str) -> str:
        ran.append(card)
        return card

    @keyed.task(accept_clear=True)
    def public(card: str) -> str:
        ran.append(card)
        return card

    try:
        keyed.publish_routes()
        refused = raises(app, "22023", "SELECT {s}.enqueue('secret', '{\"card\": \"1\"}')")
        assert "decrypt its arguments and refuse clear ones" in refused
        clear = sql(app, "SELECT {s}.enqueue('public', '{\"card\": \"2\"}')")[0][0]
        app.task(name="secret")(lambda card: None)  # a keyless producer still writes a clear job
        smuggled = app.enqueue("secret", {"card": "3"})
        encrypted = keyed.get_task("secret").enqueue(card="4")
        await drain(keyed, ["default"], poll_interval=0.05)
        assert ran == ["2", "4"]
        assert keyed.get_job(clear).result == "2" and app.get_job(clear).result != "2"  # stored encrypted
        lost = app.get_job(smuggled)
        assert lost.state is pageq.JobState.DEAD and "not encrypted" in lost.errors[-1].error
        assert sql(
            app, "SELECT errors -> -1 ->> 'reason' FROM {s}.finished_jobs WHERE id = %s", smuggled
        ) == [("decrypt_failed",)]
        assert keyed.get_job(encrypted).state is pageq.JobState.SUCCEEDED
        other = keyed.get_task("secret").enqueue(card="5")
        assert sql(app, "SELECT * FROM {s}.claim('{default}')") == []  # a SQL worker cannot decrypt it
        assert sql(
            app, "SELECT state, errors -> -1 ->> 'reason' FROM {s}.finished_jobs WHERE id = %s", other
        ) == [("dead", "decrypt_failed")]
    finally:
        keyed.close()
