"""The HTTP API in process (ASGI): resources, the remote-worker protocol, errors, access control."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import psycopg
import pytest

import pageq
from http_helpers import Api, serve
from pageq.store import ops

PROBLEM = "application/problem+json"


@pytest.fixture
def api(app: pageq.App) -> Iterator[Api]:
    yield from serve(app)


def problem(response: object, status: int, code: str | None = None) -> dict[str, object]:
    assert hasattr(response, "status_code") and hasattr(response, "headers") and hasattr(response, "json")
    assert response.status_code == status, response.json()
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, object] = response.json()
    assert body["status"] == status and body["title"] and body["type"] == "about:blank"
    if code is not None:
        assert body["code"] == code, body
    return body


def enqueue(api: Api, who: str = "admin", **body: object) -> int:
    response = api.call(who, "POST", "/v1/jobs", {"task": "email.send", "args": {"to": "a@x"}, **body})
    assert response.status_code == 201, response.json()
    assert response.headers["location"] == f"/v1/jobs/{response.json()['id']}"
    return int(response.json()["id"])


# ----- jobs
def test_enqueue_get_list_cancel_requeue(api: Api) -> None:
    first = enqueue(api, priority=5, queue="emails-fast", max_attempts=2, timeout=3.5, delay=60)
    job = api.call("admin", "GET", f"/v1/jobs/{first}").json()
    assert (job["task"], job["queue"], job["args"], job["state"]) == (
        "email.send",
        "emails-fast",
        {"to": "a@x"},
        "scheduled",
    )
    assert (job["priority"], job["max_attempts"], job["timeout"], job["errors"]) == (5, 2, 3.5, [])
    assert "lease_token" not in job
    cancelled = api.call("admin", "POST", f"/v1/jobs/{first}/cancel").json()
    assert cancelled["state"] == "cancelled"
    problem(api.call("admin", "POST", f"/v1/jobs/{first}/cancel"), 409, "invalid_state")
    assert api.call("admin", "POST", f"/v1/jobs/{first}/requeue").json()["state"] == "queued"
    problem(api.call("admin", "GET", "/v1/jobs/999999"), 404, "not_found")
    problem(api.call("admin", "POST", "/v1/jobs/999999/cancel"), 404, "not_found")


def test_list_filters_and_cursor_pagination(api: Api) -> None:
    ids = [enqueue(api, args={"to": str(i)}) for i in range(7)]
    other = enqueue(api, task="report.build", args={"n": 1})
    seen, cursor, pages = [], None, 0
    while True:
        params = {"task": "email.send", "limit": 3, **({"cursor": cursor} if cursor else {})}
        page = api.call("admin", "GET", "/v1/jobs", params=params).json()
        seen += [job["id"] for job in page["jobs"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(ids, reverse=True) and pages == 3
    states = api.call("admin", "GET", "/v1/jobs", params={"state": ["queued", "dead"], "queue": "reports"})
    assert [job["id"] for job in states.json()["jobs"]] == [other]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert api.call("admin", "GET", "/v1/jobs", params={"created_after": future}).json()["jobs"] == []
    assert len(api.call("admin", "GET", "/v1/jobs", params={"created_before": future}).json()["jobs"]) == 8
    problem(api.call("admin", "GET", "/v1/jobs", params={"state": "lost"}), 400, "malformed")
    problem(api.call("admin", "GET", "/v1/jobs", params={"cursor": "x"}), 400, "malformed")


def test_batch_is_all_or_none(api: Api) -> None:
    jobs = [{"task": "email.send", "args": {"to": str(i)}} for i in range(5)]
    ids = api.call("admin", "POST", "/v1/jobs/batch", {"jobs": jobs}).json()["ids"]
    assert len(ids) == 5 and ids == sorted(ids)
    before = api.count()
    body = problem(api.call("admin", "POST", "/v1/jobs/batch", {"jobs": [*jobs, {"task": "nope"}]}), 422)
    assert body["code"] == "unknown_task" and "jobs[5]" in str(body["detail"])
    bad_args = [*jobs, {"task": "email.send", "args": {"unknown": 1}}]
    problem(api.call("admin", "POST", "/v1/jobs/batch", {"jobs": bad_args}), 422, "invalid")
    option_as_arg = [{"task": "email.send", "args": {"to": "x", "priority": 5}}]
    problem(api.call("admin", "POST", "/v1/jobs/batch", {"jobs": option_as_arg}), 422, "invalid")
    assert api.count() == before


def test_idempotency_key(api: Api) -> None:
    headers = {"Idempotency-Key": "order-7"}
    body = {"task": "email.send", "args": {"to": "a"}}
    first = api.call("admin", "POST", "/v1/jobs", body, headers=headers)
    again = api.call("admin", "POST", "/v1/jobs", body, headers=headers)
    assert first.json()["id"] == again.json()["id"] and api.count() == 1
    other = api.call("producer", "POST", "/v1/jobs", body, headers=headers)  # keys are per principal
    assert other.json()["id"] != first.json()["id"] and api.count() == 2
    batch = {"jobs": [body, body]}
    ids = api.call("admin", "POST", "/v1/jobs/batch", batch, headers={"Idempotency-Key": "b-1"}).json()["ids"]
    retried = api.call("admin", "POST", "/v1/jobs/batch", batch, headers={"Idempotency-Key": "b-1"})
    assert retried.json()["ids"] == ids and len(set(ids)) == 2 and api.count() == 4


# ----- remote workers
def claim(api: Api, who: str = "worker", **body: object) -> list[dict[str, object]]:
    response = api.call(who, "POST", "/v1/claims", {"queues": ["emails"], **body})
    assert response.status_code == 200, response.json()
    jobs: list[dict[str, object]] = response.json()["jobs"]
    return jobs


def test_claim_heartbeat_complete(api: Api) -> None:
    job_id = enqueue(api, "producer")
    (job,) = claim(api, limit=5, lease=60)
    assert job["id"] == job_id and job["args"] == {"to": "a@x"} and job["attempts"] == 1
    token = job["lease_token"]
    beat = api.call("worker", "POST", f"/v1/jobs/{job_id}/heartbeat", {"lease_token": token, "lease": 90})
    assert beat.status_code == 200 and beat.json()["state"] == "running"
    done = api.call(
        "worker", "POST", f"/v1/jobs/{job_id}/complete", {"lease_token": token, "result": {"ok": 1}}
    )
    assert done.json() == {"id": job_id, "state": "succeeded", "run_at": None, "lease_expires_at": None}
    stored = api.app.get_job(job_id)
    assert (stored.state, stored.result) == (pageq.JobState.SUCCEEDED, {"ok": 1})
    problem(
        api.call("worker", "POST", f"/v1/jobs/{job_id}/complete", {"lease_token": token}), 409, "stale_lease"
    )
    problem(api.call("worker", "POST", f"/v1/jobs/{job_id}/heartbeat", {"lease_token": token}), 409)
    problem(api.call("worker", "POST", "/v1/jobs/424242/complete", {"lease_token": token}), 404)


def test_fail_retries_then_dies(api: Api) -> None:
    job_id = enqueue(api)
    (job,) = claim(api)
    failed = api.call("worker", "POST", f"/v1/jobs/{job_id}/fail",
                      {"lease_token": job["lease_token"], "error": "Boom: x", "retry_in": 0})  # fmt: skip
    assert failed.json()["state"] == "retrying" and failed.json()["run_at"] is not None
    (job,) = claim(api)
    assert job["attempts"] == 2
    body = {"lease_token": job["lease_token"], "error": "bad input", "retryable": False, "traceback": "tb"}
    assert api.call("worker", "POST", f"/v1/jobs/{job_id}/fail", body).json()["state"] == "dead"
    dead = api.app.get_job(job_id)
    assert dead.state is pageq.JobState.DEAD and [e.error for e in dead.errors] == ["Boom: x", "bad input"]


def test_expired_lease_gets_409_and_changes_nothing(dsn: str, schema: str) -> None:
    clock = pageq.FrozenClock(datetime(2030, 1, 1, tzinfo=UTC))
    app = pageq.App(dsn, schema=schema, clock=clock)
    app.migrate()
    try:
        for api in serve(app):
            job_id = enqueue(api)
            (job,) = claim(api, lease=5)
            clock.advance(10)
            assert app.store.run(ops.rescue(clock.now())) == (1, 0)  # the leader's rescuer: back to retrying
            before = app.get_job(job_id)
            for action in ("complete", "heartbeat", "release"):
                response = api.call(
                    "worker", "POST", f"/v1/jobs/{job_id}/{action}", {"lease_token": job["lease_token"]}
                )
                problem(response, 409, "stale_lease")
            body = {"lease_token": job["lease_token"], "error": "late"}
            problem(api.call("worker", "POST", f"/v1/jobs/{job_id}/fail", body), 409, "stale_lease")
            assert app.get_job(job_id) == before and before.state is pageq.JobState.RETRYING
    finally:
        app.close()
        app.drop_schema()


def test_release_and_cancelled_running_job(api: Api) -> None:
    first, second = enqueue(api), enqueue(api)
    jobs = {job["id"]: job for job in claim(api, limit=2)}
    released = api.call(
        "worker", "POST", f"/v1/jobs/{first}/release", {"lease_token": jobs[first]["lease_token"]}
    )
    assert released.json()["state"] == "queued" and api.app.get_job(first).attempts == 0
    api.call("admin", "POST", f"/v1/jobs/{second}/cancel")
    body = {"lease_token": jobs[second]["lease_token"]}
    problem(api.call("worker", "POST", f"/v1/jobs/{second}/complete", body), 409, "stale_lease")
    assert api.app.get_job(second).state is pageq.JobState.CANCELLED


def test_claims_follow_grants_and_queue_controls(api: Api) -> None:
    enqueue(api)
    assert claim(api, queues=["reports"]) == []  # it may work email.send anywhere: none waits there
    problem(api.call("worker", "POST", "/v1/claims", {"queues": ["emails"], "tasks": ["report.build"]}), 403)
    problem(api.call("worker", "POST", "/v1/claims", {"queues": ["emails"], "tasks": ["email.sendx"]}), 403)
    problem(api.call("producer", "POST", "/v1/claims", {"queues": ["emails"]}), 403)
    assert api.call("admin", "POST", "/v1/queues/emails/pause").json()["paused"] is True
    assert claim(api) == []
    api.call("admin", "POST", "/v1/queues/emails/resume")
    assert len(claim(api, tasks=["email.send"])) == 1


# ----- queues and the dead-letter queue
def test_queues_and_controls(api: Api) -> None:
    enqueue(api)
    queues = api.call("admin", "GET", "/v1/queues").json()["queues"]
    assert [q["name"] for q in queues] == ["emails"] and queues[0]["counts"]["queued"] == 1
    limited = api.call(
        "admin", "PATCH", "/v1/queues/emails", {"concurrency": 3, "rate_limit": 10, "rate_period": 2}
    )
    assert limited.json() | {} == {"name": "emails", "paused": False, "concurrency": 3, "rate_limit": 10,
                                   "rate_period": 2.0, "weight": 1}  # fmt: skip
    assert (
        api.call("admin", "PATCH", "/v1/queues/emails", {"concurrency": None}).json()["concurrency"] is None
    )
    assert api.call("admin", "GET", "/v1/queues/emails").json()["rate_limit"] == 10
    assert len(claim(api)) == 1  # the controlled claim (rate limit) still claims
    problem(api.call("admin", "GET", "/v1/queues/nowhere"), 404, "not_found")
    problem(api.call("producer", "POST", "/v1/queues/emails/pause"), 403)
    assert api.call("nobody", "GET", "/v1/queues").json()["queues"] == []


def test_dead_letter_queue(api: Api) -> None:
    ids = [enqueue(api) for _ in range(3)]
    for job in claim(api, limit=3):
        body = {"lease_token": job["lease_token"], "error": "x", "retryable": False}
        api.call("worker", "POST", f"/v1/jobs/{job['id']}/fail", body)
    page = api.call("admin", "GET", "/v1/dlq", params={"limit": 2}).json()
    assert [j["id"] for j in page["jobs"]] == sorted(ids, reverse=True)[:2] and page["next_cursor"]
    requeued = api.call("admin", "POST", "/v1/dlq/requeue", {"ids": [ids[0]]}).json()["requeued"]
    assert requeued == [ids[0]] and api.app.get_job(ids[0]).state is pageq.JobState.QUEUED
    assert api.call("admin", "POST", "/v1/dlq/purge", {"queue": "emails"}).json() == {"purged": 2}
    problem(api.call("producer", "POST", "/v1/dlq/purge", {}), 403)


# ----- authentication and access control (S4, S3 over HTTP)
def test_missing_or_wrong_credentials_get_401(api: Api) -> None:
    headers = ["", "Bearer pq_wrongwrongwrongwrong", "Bearer", "Basic dXNlcjpwYXNz", "Bearer a b", "pq_x",
               "PQ-HMAC-SHA256 key=k,ts=1,nonce=n,sig=s", "bearer " + "x" * 300]  # fmt: skip
    for header in headers:
        for method, path in (("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", "/v1/queues"),
                             ("POST", "/v1/claims"), ("POST", "/v1/jobs/1/complete")):  # fmt: skip
            response = api.http.request(method, path, headers={"Authorization": header}, json={"task": "x"})
            problem(response, 401, "unauthenticated")
            assert response.headers["www-authenticate"].startswith("Bearer")
    assert api.count() == 0


def test_revoked_token_and_disabled_principal_are_refused(api: Api) -> None:
    import time

    from pageq import access

    assert access.TTL < 1.0  # answers are reused at most this long: revocation applies within a second
    assert api.call("producer", "GET", "/v1/jobs").status_code == 200
    api.app.security.revoke_token(api.token_ids["producer"])
    deadline = time.monotonic() + 10
    while api.call("producer", "GET", "/v1/jobs").status_code != 401:
        assert time.monotonic() < deadline
    api.app.security.set_disabled("worker")
    while api.call("worker", "POST", "/v1/claims", {"queues": ["emails"]}).status_code != 401:
        assert time.monotonic() < deadline


def test_grants_decide_and_the_audit_trail_names_the_principal(api: Api) -> None:
    job_id = enqueue(api, "producer")
    problem(api.call("producer", "POST", "/v1/jobs", {"task": "report.build"}), 403, "forbidden")
    problem(api.call("worker", "POST", "/v1/jobs", {"task": "email.send", "args": {"to": "a"}}), 403)
    problem(api.call("producer", "POST", f"/v1/jobs/{job_id}/cancel"), 403)
    problem(api.call("worker", "GET", f"/v1/jobs/{job_id}"), 403)
    assert api.call("producer", "GET", f"/v1/jobs/{job_id}").status_code == 200
    assert api.call("worker", "GET", "/v1/jobs").json()["jobs"] == []
    for who in ("nobody",):
        for method, path in (("GET", f"/v1/jobs/{job_id}"), ("POST", f"/v1/jobs/{job_id}/requeue"),
                             ("POST", "/v1/queues/emails/pause")):  # fmt: skip
            problem(api.call(who, method, path), 403)
    enqueued = api.app.security.audit(action="enqueue", job_id=job_id)
    assert [(row.principal, row.decision) for row in enqueued] == [("producer", "allow")]
    denied = api.app.security.audit(principal="producer", decision="deny")
    assert {row.action for row in denied} == {"enqueue", "manage"}


# ----- bad input (S9)
def test_bad_bodies_get_400_and_write_nothing(api: Api) -> None:
    headers = {**api.headers("admin"), "content-type": "application/json"}
    bodies = [
        b'{"task": "email.send", "args": {"to": "\xff\xfe"}}',  # invalid UTF-8
        b"[" * 10_000 + b"]" * 10_000,  # nested 10,000 deep
        b'{"task": "email.send", "args": {"to": ' + b"[" * 70 + b"]" * 70 + b"}}",  # deeper than 64
        b'{"task": "email.send", "args": {"to": "a\\u0000b"}}',  # NUL
        b'{"task": "email.send", "args": {"to": "\\ud800"}}',  # lone surrogate
        b'{"task": "email.send", "args": {"\\udc00": 1}}',
        b'{"task": "email.send", "priority": 9223372036854775808}',  # beyond 2^63
        b'{"task": "email.send", "priority": 1' + b"0" * 5000 + b"}",  # beyond Python's digit limit
        b'{"task": "email.send", "args": {"to": NaN}}',
        b'{"task": "email.send",',
        b'{"task": "email.send", "args": [1]}',
        b'{"task": "email.send", "unknown": 1}',
        b'{"task": "email send"}',
        b'"just a string"',
    ]
    for raw in bodies:
        problem(api.http.post("/v1/jobs", content=raw, headers=headers), 400, "malformed")
    problem(
        api.http.post("/v1/jobs", content=b"task=x", headers={**headers, "content-type": "text/plain"}), 415
    )
    assert api.count() == 0


PREFIXES = ["'", '"', "')", "1' ", "x%' ", "admin'--", "\\'", "`", "1;", "%27 "]
SUFFIXES = ["OR '1'='1", "; DROP TABLE jobs; --", "UNION SELECT NULL,NULL--", "AND SLEEP(5)#",
            "; SELECT pg_sleep(5)--", "/**/OR/**/1=1"]  # fmt: skip
INJECTIONS = [p + s for p in PREFIXES for s in SUFFIXES]  # 60 strings, sqlmap-style


def test_unknown_task_422_and_sql_metacharacters_are_data(api: Api) -> None:
    problem(api.call("admin", "POST", "/v1/jobs", {"task": "no.such.task"}), 422, "unknown_task")
    both = {"task": "email.send", "args": {"to": "a"}, "delay": 1, "run_at": "2030-01-01T00:00:00Z"}
    problem(api.call("admin", "POST", "/v1/jobs", both), 422, "invalid")
    for text in INJECTIONS:
        for params in (
            {"queue": text},
            {"task": text},
            {"state": text},
            {"cursor": text},
            {"created_after": text},
        ):
            problem(api.call("admin", "GET", "/v1/jobs", params=params), 400)
        problem(api.call("admin", "POST", "/v1/jobs", {"task": text}), 400)
        problem(api.call("admin", "POST", "/v1/claims", {"queues": [text]}), 400)
        by_name = api.call("admin", "GET", f"/v1/queues/{quote(text, safe='')}")
        problem(by_name, 404 if "/" in text else 400)  # a "/" makes it another path
    jobs = [{"task": "email.send", "args": {"to": text, "subject": text}} for text in INJECTIONS]
    ids = api.call("admin", "POST", "/v1/jobs/batch", {"jobs": jobs}).json()["ids"]
    stored = api.call("admin", "GET", "/v1/jobs", params={"limit": 100}).json()["jobs"]
    assert [job["args"]["to"] for job in reversed(stored)] == INJECTIONS and len(ids) == len(INJECTIONS)
    assert api.count() == len(INJECTIONS)


def test_oversize_body_is_refused_before_any_database_work(app: pageq.App) -> None:
    """413 from a server whose database is unreachable: the body was refused before anything else."""
    from pageq.http import Settings

    nowhere = pageq.App("postgresql://nobody@127.0.0.1:1/nowhere", schema=app.schema)
    for api in serve_without_db(nowhere, Settings(max_body=1000)):
        body = b'{"task": "email.send", "args": {"to": "' + b"a" * 1000 + b'"}}'
        headers = {"Authorization": "Bearer pq_whatever123", "content-type": "application/json"}
        problem(api.post("/v1/jobs", content=body, headers=headers), 413, "too_large")
        problem(api.post("/v1/jobs", content=b"x" * 10 * 1024 * 1024, headers=headers), 413)
        chunked = api.post("/v1/jobs", content=iter([b"{" * 600, b" " * 600]), headers=headers)
        problem(chunked, 413)
        problem(api.post("/v1/jobs", content=b"{}", headers=headers), 503, "unavailable")  # it would reach it


def serve_without_db(app: pageq.App, settings: object) -> Iterator[object]:
    from fastapi.testclient import TestClient

    from pageq.http import Settings, create_app

    assert isinstance(settings, Settings)
    with TestClient(create_app(app, settings), raise_server_exceptions=False) as client:
        yield client


def test_batch_size_limit(app: pageq.App) -> None:
    from pageq.http import Settings

    for api in serve(app, Settings(max_batch=3)):
        jobs = [{"task": "email.send", "args": {"to": "a"}}] * 4
        problem(api.call("admin", "POST", "/v1/jobs/batch", {"jobs": jobs}), 413, "too_large")
        assert api.count() == 0


def test_rate_limit_429(app: pageq.App) -> None:
    from pageq.http import Settings

    for api in serve(app, Settings(rate=0.001, burst=2)):
        assert [api.call("admin", "GET", "/v1/queues").status_code for _ in range(2)] == [200, 200]
        limited = api.call("admin", "GET", "/v1/queues")
        problem(limited, 429, "rate_limited")
        assert int(limited.headers["retry-after"]) >= 1
        assert api.call("producer", "GET", "/v1/queues").status_code == 200  # per principal


# ----- the document
def test_openapi_document_and_offline_docs(api: Api) -> None:
    document = api.http.get("/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    assert {"/v1/jobs", "/v1/jobs/batch", "/v1/claims", "/v1/jobs/{job_id}/complete", "/v1/queues/{name}",
            "/v1/dlq", "/healthz", "/readyz"} <= set(document["paths"])  # fmt: skip
    assert document["paths"]["/healthz"]["get"]["security"] == []
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            if path.startswith("/v1/"):
                assert "401" in operation["responses"] and "security" not in operation, (method, path)
    page = api.http.get("/docs").text
    assert (
        "/docs/static/swagger-ui-bundle.js" in page and "cdn" not in page.lower() and "https://" not in page
    )
    assert api.http.get("/docs/static/swagger-ui-bundle.js").status_code == 200
    assert api.http.get("/healthz").json() == {"status": "ok"}
    assert api.http.get("/readyz").json() == {"status": "ready"}


def test_lease_token_is_validated(api: Api) -> None:
    problem(api.call("worker", "POST", "/v1/jobs/1/complete", {"lease_token": "not-a-uuid"}), 400)
    problem(api.call("worker", "POST", "/v1/jobs/1/complete", {"lease_token": str(uuid.uuid4())}), 404)


# ----- signed requests (S4)
SECRET = b"s" * 32


def signed_api(app: pageq.App) -> Iterator[Api]:
    import base64

    from pageq.http import Settings
    from pageq.security.signing import load_keys

    keys = load_keys(f"k1:producer:{base64.b64encode(SECRET).decode()}")
    yield from serve(app, Settings(signing_keys=keys))


def signed(api: Api, body: bytes, *, at: float | None = None, nonce: str | None = None,
           path: str = "/v1/jobs", sent: bytes | None = None) -> object:  # fmt: skip
    import time

    from pageq.security.signing import SCHEME, signature

    ts = int(time.time() if at is None else at)
    nonce = nonce or uuid.uuid4().hex
    sig = signature(SECRET, "POST", path, ts, nonce, body)
    header = f"{SCHEME} key=k1,ts={ts},nonce={nonce},sig={sig}"
    headers = {"Authorization": header, "content-type": "application/json"}
    return api.http.post(path, content=body if sent is None else sent, headers=headers)


def test_signed_requests_window_replay_and_tampering(app: pageq.App) -> None:
    """S4 of the test plan, 50 cases per class: replays, stale and future timestamps, a body changed after
    signing are refused (401, never 5xx); requests inside the 300 s window are accepted once each."""
    import random
    import time

    rng = random.Random(4)
    for api in signed_api(app):
        accepted = 0
        for case in range(50):
            body = json.dumps({"task": "email.send", "args": {"to": f"{case}-{rng.random()}@x"}}).encode()
            nonce = uuid.uuid4().hex
            ok = signed(api, body, nonce=nonce, at=time.time() - rng.uniform(0, 290))
            assert ok.status_code == 201  # type: ignore[attr-defined]
            accepted += 1
            problem(signed(api, body, nonce=nonce), 401, "unauthenticated")  # replayed
            problem(signed(api, body, at=time.time() - rng.uniform(301, 10**6)), 401)  # too old
            problem(signed(api, body, at=time.time() + rng.uniform(301, 10**6)), 401)  # from the future
            at = rng.randrange(len(body))
            flipped = body[:at] + bytes([body[at] ^ (1 << rng.randrange(7))]) + body[at + 1 :]
            problem(signed(api, body, sent=flipped), 401)  # body changed after signing
        rows = app.security.audit(action="enqueue")
        assert {row.principal for row in rows} == {"producer"} and len(rows) == accepted == 50
        assert api.count() == 50


# ----- the Python client
def test_remote_client_and_worker(api: Api) -> None:
    from pageq.remote import Client, RemoteError, RemoteWorker

    transport = api.http._transport  # the TestClient's in-process transport
    with Client("http://testserver", token=api.tokens["admin"], transport=transport) as client:
        ids = {to: client.enqueue("email.send", {"to": to}) for to in ("ok", "bad", "flaky")}
        assert client.enqueue_many([{"task": "report.build", "args": {"n": 1}, "queue": "elsewhere"}])
        assert [job["id"] for job in client.iter_jobs(task="email.send", limit=2)] == sorted(ids.values())[
            ::-1
        ]

        def send(to: str) -> dict[str, str]:
            if to == "bad":
                raise pageq.NonRetryableError("no such mailbox")
            if to == "flaky":
                raise ConnectionError("try later")
            return {"sent": to}

        worker = RemoteWorker(
            client, {"email.send": send}, queues=["emails"], concurrency=2, poll_interval=0.05
        )
        worker.run(idle_exit=True)
        assert (worker.done, worker.failed, worker.lost) == (1, 2, 0)
        states = {to: client.get_job(job_id)["state"] for to, job_id in ids.items()}
        assert states == {"ok": "succeeded", "bad": "dead", "flaky": "retrying"}
        assert "ConnectionError: try later" in client.get_job(ids["flaky"])["errors"][0]["error"]
        assert client.pause_queue("emails")["paused"] and not client.resume_queue("emails")["paused"]
        with pytest.raises(RemoteError) as raised:
            client.cancel(ids["ok"])
        assert (raised.value.status, raised.value.code) == (409, "invalid_state")
        assert "pq_" not in repr(client)


def expiry(app: pageq.App, job_id: int) -> object:
    with psycopg.connect(app.database.dsn) as conn:
        row = conn.execute(
            f"SELECT lease_expires_at FROM {app.schema}.jobs WHERE id = %s", [job_id]
        ).fetchone()
    return row[0] if row else None


def test_a_stopping_remote_worker_heartbeats_until_its_jobs_finish(api: Api) -> None:
    """`stop()` ends the claims, not the heartbeats: a job still running keeps its lease until it is done."""
    import threading
    import time

    from pageq.remote import Client, RemoteWorker

    release, started = threading.Event(), threading.Event()

    def send(to: str) -> None:
        started.set()
        release.wait(30)

    transport = api.http._transport
    with Client("http://testserver", token=api.tokens["admin"], transport=transport) as client:
        job_id = client.enqueue("email.send", {"to": "slow"})
        worker = RemoteWorker(client, {"email.send": send}, queues=["emails"], lease=1.5, poll_interval=0.05)
        runner = threading.Thread(target=worker.run)
        runner.start()
        try:
            assert started.wait(15)
            worker.stop()
            first = expiry(api.app, job_id)
            deadline = time.monotonic() + 15
            while expiry(api.app, job_id) == first:  # renewed after stop()
                assert time.monotonic() < deadline, "no heartbeat after stop()"
                time.sleep(0.05)
        finally:
            release.set()
            runner.join(30)
        assert (worker.done, worker.lost) == (1, 0)
        assert client.get_job(job_id)["state"] == "succeeded"


def test_a_scalar_query_parameter_given_twice_is_refused(api: Api) -> None:
    """Found by schemathesis: `?queue=a&queue=b` took the last value; a list parameter may repeat."""
    problem(api.call("admin", "GET", "/v1/dlq?queue=a&queue=b"), 400)
    assert api.call("admin", "GET", "/v1/jobs?state=queued&state=dead").status_code == 200
