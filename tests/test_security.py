"""Principals, tokens and access control (plan items S3 and S4 without HTTP), on real PostgreSQL."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

import pageq
from pageq.security.acl import OPERATIONS, Action, Grant, decide, like_pattern, matches

PRINCIPALS = ["producer", "worker", "nobody", "admin"]
TASKS = ["email.send", "email.sendx", "EMAIL.send", "email.send\u0000", "email.*", "sms.send"]
VALID = {"email.send", "email.sendx", "EMAIL.send", "sms.send"}
POLICY = [
    ("producer", "enqueue", "*", "email.*", True),
    ("producer", "enqueue", "*", "email.sendx", False),  # an explicit deny beats the allow above
    ("worker", "work", "*", "email.send", True),
    ("admin", "*", "*", "*", True),
]


def expected(principal: str, operation: str, task: str) -> bool:
    """The policy table written out by hand (the oracle the engine is checked against)."""
    if task not in VALID:
        return False  # not a task name at all: no rule can allow it
    if principal == "admin":
        return True
    if principal == "producer":
        return operation == "enqueue" and task == "email.send"
    if principal == "worker":
        return operation in ("claim", "complete") and task == "email.send"
    return False


CASES = list(itertools.product(PRINCIPALS, OPERATIONS, TASKS))


def test_the_matrix_has_168_cases_and_31_allowed() -> None:
    assert len(CASES) == 168 and len(OPERATIONS) == 7
    assert sum(expected(*case) for case in CASES) == 31


def test_engine_decides_the_matrix() -> None:
    grants = [Grant(p, None if a == "*" else Action(a), q, t, allow) for p, a, q, t, allow in POLICY]
    wrong = [
        case
        for case in CASES
        if decide(case[0], grants, case[1], "default", case[2]).allowed != expected(*case)
    ]
    assert wrong == []


def test_glob_patterns_match_literally_except_star() -> None:
    assert matches("email.*", "email.send") and not matches("email.*", "emailxsend")
    assert not matches("email.send", "EMAIL.send") and matches("*", "")
    assert like_pattern("a_b.*") == "a\\_b.%"


@pytest.fixture
def secured(app: pageq.App) -> Iterator[dict[str, str]]:
    """The policy of the matrix in the database; a token per principal."""
    sec = app.security
    tokens = {}
    for name in PRINCIPALS:
        sec.create_principal(name)
        tokens[name] = sec.create_token(name)[1]
    for principal, action, queue, task, allow in POLICY:
        sec.grant(principal, action, queue=queue, task=task, allow=allow)
    yield tokens


def test_decision_matrix_through_the_database_with_one_audit_row_per_denial(
    app: pageq.App, secured: dict[str, str]
) -> None:
    outcomes = {}
    for principal, operation, task in CASES:
        try:
            app.authorize(secured[principal], operation, "default", task)
            outcomes[principal, operation, task] = True
        except pageq.AccessDeniedError:
            outcomes[principal, operation, task] = False
    assert outcomes == {case: expected(*case) for case in CASES}
    denials = app.security.audit(decision="deny", limit=1000)
    assert len(denials) == 137
    seen = {(r.principal, r.action, r.task) for r in denials}
    assert seen == {(p, o, t.replace("\x00", "\\x00")) for p, o, t in CASES if not expected(p, o, t)}
    assert all(r.reason and r.queue == "default" for r in denials)


def test_explain_names_the_deciding_rule(app: pageq.App, secured: dict[str, str]) -> None:
    decision = app.security.explain("producer", "enqueue", "email.sendx")
    assert not decision.allowed and decision.reason.startswith("denied by rule: deny enqueue")
    assert app.security.explain("producer", "enqueue", "email.send").allowed
    assert "deny by default" in app.security.explain("nobody", "read", "email.send").reason


def test_tokens_are_stored_only_as_hashes(app: pageq.App, secured: dict[str, str], dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        dump = "\n".join(
            str(row)
            for table in ("tokens", "principals", "grants", "audit")
            for row in conn.execute(f"SELECT * FROM {app.schema}.{table}").fetchall()
        )
    assert not any(token in dump or token[3:] in dump for token in secured.values())


def test_unknown_and_revoked_tokens_are_refused_within_a_second(
    app: pageq.App, secured: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(pageq.AuthenticationError):
        app.authorize("pq_wrong", "enqueue", "default", "email.send")
    with pytest.raises(pageq.AuthenticationError):
        app.authorize("", "enqueue", "default", "email.send")
    token = secured["producer"]
    app.authorize(token, "enqueue", "default", "email.send")  # cached from now on
    token_id = next(t[0] for t in app.security.tokens("producer"))
    app.security.revoke_token(token_id)
    revoked_at = time.monotonic()
    while True:
        try:
            app.authorize(token, "enqueue", "default", "email.send")
        except pageq.AccessDeniedError:
            break
        assert time.monotonic() - revoked_at < 1.0, "a revoked token still worked after a second"
    assert time.monotonic() - revoked_at < 1.0
    assert token not in caplog.text and token not in repr(app.security.tokens())


def test_python_api_enforces_grants_and_audits_denials(
    dsn: str, app: pageq.App, secured: dict[str, str]
) -> None:
    producer = pageq.App(dsn, schema=app.schema, token=secured["producer"])
    for name in ("email.send", "sms.send"):
        producer.task(name=name)(lambda: None)
    try:
        job_id = producer.enqueue("email.send")
        with pytest.raises(pageq.AccessDeniedError):
            producer.enqueue("sms.send")
        with pytest.raises(pageq.AccessDeniedError):
            producer.get_job(job_id)  # enqueue does not imply read
        with pytest.raises(pageq.AccessDeniedError):
            producer.cancel(job_id)
        with pytest.raises(pageq.AccessDeniedError):
            producer.security.principals()
        assert producer.list_jobs() == []
        enqueued = app.security.audit(action="enqueue")
        assert [(r.principal, r.decision, r.job_id) for r in enqueued] == [
            ("producer", "deny", None), ("producer", "allow", job_id),
        ]  # fmt: skip
    finally:
        producer.close()


async def run_until(worker_app: pageq.App, done: Callable[[], bool], timeout: float = 30.0) -> None:
    """Run a worker of ``worker_app`` until ``done()`` (checked in a thread), then stop it."""
    worker = worker_app.worker(["default"], 4, poll_interval=0.05, maintenance_interval=0.2)
    running = asyncio.create_task(worker.run())
    try:
        async with asyncio.timeout(timeout):
            while not await asyncio.to_thread(done):  # noqa: ASYNC110 (a condition in the database)
                await asyncio.sleep(0.05)
    finally:
        worker.stop()
        await running


async def test_worker_as_a_principal_claims_only_granted_tasks(
    dsn: str, app: pageq.App, secured: dict[str, str]
) -> None:
    ran: list[str] = []
    worker_app = pageq.App(dsn, schema=app.schema, token=secured["worker"])
    for name in ("email.send", "sms.send"):
        app.task(name=name)(lambda: None)
        worker_app.task(name=name)(lambda name=name: ran.append(name))
    email = [app.enqueue("email.send") for _ in range(3)]
    sms = app.enqueue("sms.send")
    try:
        await run_until(worker_app, lambda: len(ran) == 3)
        await asyncio.sleep(0.3)  # time to claim more if it wrongly could
        await run_until(worker_app, lambda: True)
    finally:
        worker_app.close()
    assert sorted(ran) == ["email.send"] * 3
    assert all(app.get_job(i).state is pageq.JobState.SUCCEEDED for i in email)
    assert app.get_job(sms).state is pageq.JobState.QUEUED
    claims = app.security.audit(action="claim")
    assert {r.principal for r in claims} == {"worker"} and {r.job_id for r in claims} == set(email)


def test_bulk_operations_need_a_grant_on_everything(dsn: str, app: pageq.App) -> None:
    sec = app.security
    sec.create_principal("ops")
    sec.grant("ops", "manage", task="email.*")
    ops_app = pageq.App(dsn, schema=app.schema, principal="ops")
    try:
        with pytest.raises(pageq.AccessDeniedError):
            ops_app.purge_dead()
        assert ops_app.purge_dead(task="email.send") == 0
        sec.grant("ops", "manage")
        sec.grant("ops", "manage", task="secret.*", allow=False)
        time.sleep(0.6)  # the grants cache lives 0.5 s
        with pytest.raises(pageq.AccessDeniedError):
            ops_app.purge_dead()  # a deny on some tasks covers "every task"
    finally:
        ops_app.close()


@pytest.mark.parametrize("autocommit", [False, True])
def test_enqueue_on_the_callers_connection_names_the_principal(
    dsn: str, app: pageq.App, secured: dict[str, str], autocommit: bool
) -> None:
    """`conn=` runs in the caller's session, which pageq does not name: the principal is named for the
    transaction, and the audit row records it (not only the database role)."""
    producer = pageq.App(dsn, schema=app.schema, token=secured["producer"])
    producer.task(name="email.send")(lambda: None)
    try:
        with psycopg.connect(dsn, autocommit=autocommit) as conn:
            job_id = producer.enqueue("email.send", conn=conn)
            if not autocommit:
                conn.commit()
            unnamed = conn.execute("SELECT current_setting('pageq.principal', true)").fetchone()
        rows = app.security.audit(action="enqueue", job_id=job_id)
        assert [(r.principal, r.decision) for r in rows] == [("producer", "allow")]
        assert unnamed in (None, ("",), (None,))  # the caller's session is left as it was
    finally:
        producer.close()
