"""The dispatcher under issue 6's security: audit rows, grants, encryption and database roles."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

import pageq
from pageq import JobState
from pageq.periodic import fire_due
from pageq.security.crypto import Keyring, new_key
from pageq.testing import drain

PASSWORD = "dispatch-rls-password"
SECRET = "card-4111-1111"


def sql(app: pageq.App, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(app.database.dsn, autocommit=True) as conn:
        return conn.execute(query.replace("{s}", app.schema), params).fetchall()


def audited(app: pageq.App, action: str) -> list[tuple[Any, ...]]:
    return sql(app, "SELECT job_id, reason FROM {s}.audit WHERE action = %s ORDER BY id", action)


async def test_special_enqueue_controlled_claim_and_cancels_write_audit_rows(app: pageq.App) -> None:
    @app.task(queue="lim", max_attempts=1)
    def fail() -> None:
        raise RuntimeError("boom")

    @app.task(queue="lim")
    def ok() -> None: ...

    app.limit_queue("lim", 2)  # the controlled claim
    unique = ok.enqueue(unique="k")
    chain = app.chain(fail.job(), ok.job())  # the child is cancelled by resolve() when the parent dies
    loose = ok.enqueue(after=[unique], queue="other")
    assert app.cancel_jobs([loose]) == [loose]
    await drain(app, ["lim"], poll_interval=0.05)
    assert [app.get_job(i).state for i in chain] == [JobState.DEAD, JobState.CANCELLED]
    assert [r[0] for r in audited(app, "enqueue")] == [unique, *chain, loose]
    assert sorted(r[0] for r in audited(app, "claim")) == [unique, chain[0]]
    assert audited(app, "cancel") == [
        (loose, None), (chain[1], "ParentFailed: a job it depends on is dead or cancelled")
    ]  # fmt: skip
    app.security.audit_level("off")
    ok.enqueue(unique="k2")
    assert len(audited(app, "enqueue")) == 4


def test_periodic_ticks_are_audited(app: pageq.App) -> None:
    app.periodic(every=600, name="tick")(lambda: None)
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    for now in (t0 + timedelta(seconds=1), t0 + timedelta(minutes=10, seconds=1)):
        asyncio.run(fire_due(app, app.store, now))
    ids = [r[0] for r in sql(app, "SELECT id FROM {s}.jobs")]
    assert len(ids) == 1 and [r[0] for r in audited(app, "enqueue")] == ids


async def test_unique_chain_group_and_periodic_arguments_are_encrypted(app: pageq.App) -> None:
    keyed = pageq.App(app.database.dsn, schema=app.schema, keyring=Keyring.parse(f"k1:{new_key()}"))
    seen: list[str] = []
    got: list[Any] = []

    @keyed.task(queue="lim")
    def pay(card: str) -> str:
        seen.append(card)
        return card

    @keyed.task(queue="lim")
    async def collect(ctx: pageq.Context) -> None:
        got.extend(r.result for r in await ctx.parent_results_async())

    keyed.periodic(every=600, name="tick", args={"card": SECRET})(pay)
    try:
        keyed.limit_queue("lim", 5)
        pay.enqueue(card=SECRET, unique="u")
        keyed.chain(pay.job(card=SECRET), pay.job(card=SECRET))
        keyed.group([pay.job(card=SECRET)], then=collect.job())
        t0 = datetime(2030, 1, 1, tzinfo=UTC)
        await fire_due(keyed, keyed.store, t0)
        await fire_due(keyed, keyed.store, t0 + timedelta(minutes=10, seconds=1))
        stored = sql(app, "SELECT args::text FROM {s}.jobs")
        assert len(stored) == 6 and not any(SECRET in a for (a,) in stored)
        await drain(keyed, ["lim"], poll_interval=0.05)  # the controlled claim decrypts
        (tick,) = sql(app, "SELECT id FROM {s}.jobs")  # the periodic job waits for 2030
        assert keyed.get_job(tick[0]).args == {"card": SECRET}
    finally:
        keyed.close()
    assert seen == [SECRET] * 4 and got == [SECRET]
    rows = sql(app, "SELECT args::text || coalesce(result::text, ''), state FROM {s}.finished_jobs")
    assert {state for _, state in rows} == {"succeeded"} and not any(SECRET in text for text, _ in rows)


async def test_controlled_claim_keeps_to_the_principals_tasks(dsn: str, app: pageq.App) -> None:
    app.security.create_principal("mailer")
    app.security.grant("mailer", "work", task="email.send")
    ran: list[str] = []
    worker_app = pageq.App(dsn, schema=app.schema, principal="mailer")
    for name in ("email.send", "sms.send"):
        app.task(name=name)(lambda: None)
        worker_app.task(name=name)(lambda name=name: ran.append(name))
    app.limit_queue("default", 10)
    email = [app.enqueue("email.send") for _ in range(3)]
    sms = app.enqueue("sms.send")
    worker = worker_app.worker(["default"], 4, poll_interval=0.05)
    running = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(30):
            while len(ran) < 3 or worker.busy or worker.completer.backlog:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # time to claim more if it wrongly could
    finally:
        worker.stop()
        await running
        worker_app.close()
    assert ran == ["email.send"] * 3 and app.get_job(sms).state is JobState.QUEUED
    claims = app.security.audit(action="claim")
    assert {r.principal for r in claims} == {"mailer"} and {r.job_id for r in claims} == set(email)


def test_controls_and_cancel_by_filter_need_manage(dsn: str, app: pageq.App) -> None:
    sec = app.security
    sec.create_principal("ops")
    sec.grant("ops", "manage", queue="mine")
    sec.grant("ops", "read")
    app.task(name="t", queue="theirs")(lambda: None)
    theirs = app.enqueue("t")
    app.limit_queue("theirs", 1)
    ops_app = pageq.App(dsn, schema=app.schema, principal="ops")
    try:
        assert ops_app.pause_queue("mine").paused
        for denied in (
            lambda: ops_app.pause_queue("theirs"), lambda: ops_app.weight_queue("theirs", 2),
            lambda: ops_app.cancel_jobs(queue="theirs"), lambda: ops_app.cancel_jobs([theirs]),
            lambda: ops_app.cancel_jobs(),
        ):  # fmt: skip
            with pytest.raises(pageq.AccessDeniedError):
                denied()
        assert ops_app.cancel_jobs(queue="mine") == []
        assert [c.name for c in ops_app.queue_controls()] == ["mine", "theirs"]
    finally:
        ops_app.close()
    assert app.get_job(theirs).state is JobState.QUEUED and not app.queue_controls()[1].paused


@pytest.fixture
def roles(app: pageq.App, dsn: str) -> Iterator[dict[str, str]]:
    """A worker role for queue `lim` (email.send only) and an admin role managing queue `mine`."""
    sec = app.security
    sec.create_principal("w")
    sec.grant("w", "work", queue="lim", task="email.send")
    sec.create_principal("a")
    sec.grant("a", "manage", queue="mine")
    yield {
        "worker": sec.create_db_login("w", "worker", PASSWORD),
        "admin": sec.create_db_login("a", "admin", PASSWORD),
    }


def as_role(dsn: str, role: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute(f'SET ROLE "{role}"')
    return conn


def test_dispatcher_tables_under_row_level_security(app: pageq.App, dsn: str, roles: dict[str, str]) -> None:
    s = app.schema
    for name in ("lim", "mine", "other"):
        app.limit_queue(name, 3)
    with as_role(dsn, roles["worker"]) as conn:
        assert conn.execute(f"SELECT name FROM {s}.queues ORDER BY name").fetchall() == [("lim",)]
        assert conn.execute(f"UPDATE {s}.queues SET window_count = 1 WHERE true").rowcount == 1
        for statement in (f"UPDATE {s}.queues SET paused = true", f"DELETE FROM {s}.queues",
                          f"INSERT INTO {s}.queues (name, updated_at) VALUES ('x', now())"):  # fmt: skip
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)
        for table in ("unique_keys", "job_deps", "periodic"):
            conn.execute(f"SELECT count(*) FROM {s}.{table}")
    with as_role(dsn, roles["admin"]) as conn:
        assert conn.execute(f"UPDATE {s}.queues SET paused = true").rowcount == 1  # only `mine`
        assert conn.execute(f"DELETE FROM {s}.queues WHERE name <> 'mine'").rowcount == 0
    app.security.create_principal("p")
    app.security.grant("p", "enqueue")
    producer = app.security.create_db_login("p", "producer", PASSWORD)
    with as_role(dsn, producer) as conn:
        for table in ("queues", "periodic"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"SELECT * FROM {s}.{table}")
    assert [c.name for c in app.queue_controls() if c.paused] == ["mine"]


async def test_a_worker_role_runs_a_limited_queue(app: pageq.App, dsn: str, roles: dict[str, str]) -> None:
    role_dsn = make_conninfo(dsn, user=roles["worker"], password=PASSWORD)
    try:
        psycopg.connect(role_dsn).close()
    except psycopg.OperationalError:
        pytest.skip("the test server does not let the role log in with a password")
    for name in ("email.send", "sms.send"):
        app.task(name=name, queue="lim")(lambda: None)
    app.limit_queue("lim", 2)
    app.rate_limit_queue("lim", 100, per=1.0)
    email = [app.enqueue("email.send") for _ in range(3)]
    sms = app.enqueue("sms.send")
    ran: list[str] = []
    worker_app = pageq.App(role_dsn, schema=app.schema)
    for name in ("email.send", "sms.send"):
        worker_app.task(name=name, queue="lim")(lambda name=name: ran.append(name))
    try:
        await drain(worker_app, ["lim"], poll_interval=0.05)
    finally:
        worker_app.close()
    assert ran == ["email.send"] * 3 and app.get_job(sms).state is JobState.QUEUED
    assert {app.get_job(i).state for i in email} == {JobState.SUCCEEDED}


def test_a_producer_role_enqueues_unique_grouped_and_keyed_jobs(app: pageq.App, dsn: str) -> None:
    app.security.create_principal("shop")
    app.security.grant("shop", "enqueue", task="email.*")
    role = app.security.create_db_login("shop", "producer", PASSWORD)
    role_dsn = make_conninfo(dsn, user=role, password=PASSWORD)
    try:
        psycopg.connect(role_dsn).close()
    except psycopg.OperationalError:
        pytest.skip("the test server does not let the role log in with a password")
    app.task(name="email.send")(lambda: None)
    held = app.enqueue("email.send", unique="k2")
    app.cancel(held)  # a finished holder: no longer holds the key (its state read through job_state())
    producer = pageq.App(role_dsn, schema=app.schema)
    send = producer.task(name="email.send")(lambda: None)
    try:
        first = send.enqueue(unique="k")
        assert send.enqueue(unique="k") == first
        assert send.enqueue(unique="k2") != held
        grouped = [send.enqueue(group_key="g") for _ in range(2)]
        keyed = send.enqueue(idempotency_key="i")  # keys go through SECURITY DEFINER functions (0003)
        assert send.enqueue(idempotency_key="i") == keyed
    finally:
        producer.close()
    assert [app.get_job(i).state for i in grouped] == [JobState.QUEUED, JobState.BLOCKED]
    assert {r.db_role for r in app.security.audit(action="enqueue") if r.job_id != held} == {role}


async def test_a_periodic_task_the_leader_may_not_enqueue_is_skipped(dsn: str, app: pageq.App) -> None:
    app.security.create_principal("lead")
    app.security.grant("lead", "enqueue", task="allowed")
    leader = pageq.App(dsn, schema=app.schema, principal="lead")
    leader.periodic(every=600, name="no")(leader.task(name="denied")(lambda: None))
    leader.periodic(every=600, name="yes")(leader.task(name="allowed")(lambda: None))
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    try:
        assert await fire_due(leader, leader.store, t0 + timedelta(seconds=1)) == 0
        assert await fire_due(leader, leader.store, t0 + timedelta(minutes=10, seconds=1)) == 1
    finally:
        leader.close()
    assert [r[0] for r in sql(app, "SELECT task FROM {s}.jobs")] == ["allowed"]
    assert sorted(r.decision for r in app.security.audit(action="enqueue")) == ["allow", "deny"]
