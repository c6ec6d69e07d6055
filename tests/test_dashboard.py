"""The dashboard in process (ASGI): login and sessions, the CSRF defences and the Content-Security-Policy
(S5), what each page shows against the database, the actions and their audit rows, the live event stream. The
browser tests (tests/test_dashboard_browser.py) drive the same pages in Chromium against a real server."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi.testclient import TestClient

import pageq
import pageq.testing
from apps.dashboard_app import register
from pageq import JobState
from pageq.http import Settings, create_app
from pageq.http.dashboard.session import csrf_token

SAME = {"Sec-Fetch-Site": "same-origin"}
NONCE_RE = re.compile(r"script-src 'nonce-([A-Za-z0-9_\-]+)'")


@dataclass
class Dash:
    app: pageq.App
    client: TestClient
    tokens: dict[str, str]
    token_ids: dict[str, int]

    def login(self, who: str, client: TestClient | None = None) -> str:
        """Log ``client`` in as ``who``; returns the CSRF token of its session."""
        client = client or self.client
        page = client.get("/login")
        login = re.search(r'name="login" value="([^"]+)"', page.text)
        assert login, page.text
        form = {"login": login.group(1), "token": self.tokens[who], "next": "/"}
        done = client.post("/login", data=form, headers=SAME, follow_redirects=False)
        assert done.status_code == 303 and done.headers["location"] == "/", done.text
        return csrf_of(client.get("/").text)

    def post(self, path: str, csrf: str | None, **extra: object) -> httpx.Response:
        data: dict[str, object] = {"csrf": csrf} if csrf is not None else {}
        data.update(extra)
        return self.client.post(path, data=data, headers=SAME, follow_redirects=False)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
    assert found, html
    return found.group(1)


@pytest.fixture
def dash(app: pageq.App) -> Iterator[Dash]:
    register(app)
    tokens, ids = {}, {}
    for name, grants in {
        "ops": [("*", "*")],
        "viewer": [("read", "*")],
        "mailer": [("read", "mail")],
    }.items():
        app.security.create_principal(name)
        for action, queue in grants:
            app.security.grant(name, action, queue=queue)
        ids[name], tokens[name] = app.security.create_token(name)
    client = TestClient(create_app(app, Settings()), base_url="http://127.0.0.1:8000")
    with client:
        yield Dash(app, client, tokens, ids)


def jobs_that_ran(app: pageq.App) -> dict[str, int]:
    """3 mail jobs succeed, 2 reports die, one fails once then succeeds; one mail job waits an hour."""
    for i in range(3):
        app.enqueue("mail.send", {"to": f"user{i}@example.com"})
    doomed = [app.enqueue("report.doomed", {"n": i}) for i in range(2)]
    flaky = app.enqueue("report.build", {"n": 1, "fail_first": True})
    run_all(app)
    later = app.enqueue("mail.send", {"to": "later@example.com"}, delay=3600)
    return {"dead": doomed[0], "dead2": doomed[1], "flaky": flaky, "later": later}


def run_all(app: pageq.App, queues: tuple[str, ...] = ("mail", "reports")) -> None:
    """Work the queues until none of their jobs is waiting or running (a drain may stop while a retry waits
    out its backoff)."""
    deadline = time.monotonic() + 60
    unfinished = [JobState.QUEUED, JobState.RUNNING, JobState.RETRYING]
    while True:
        asyncio.run(pageq.testing.drain(app, list(queues), poll_interval=0.05))
        if not [job for job in app.list_jobs(unfinished, limit=1000) if job.queue in queues]:
            return
        assert time.monotonic() < deadline


# ----- S5: fail closed, CSRF, CSP, route ids
def test_every_page_needs_a_session_and_no_token_means_no_way_in(dash: Dash) -> None:
    for path in (
        "/",
        "/queues",
        "/queues/mail",
        "/jobs",
        "/jobs/1",
        "/dead",
        "/workers",
        "/audit",
        "/series",
    ):
        response = dash.client.get(path, follow_redirects=False)
        assert response.status_code == 303 and response.headers["location"].startswith("/login?next="), path
    assert dash.client.get("/events", follow_redirects=False).status_code == 303
    for path in ("/jobs/1/cancel", "/queues/mail/pause", "/dead/purge"):
        assert dash.post(path, "0" * 64).status_code == 303  # to the login page: nothing done
    page = dash.client.get("/login")
    login = re.search(r'name="login" value="([^"]+)"', page.text)
    assert login
    for token in ("", "pq_not-a-token-at-all", "x" * 300, dash.tokens["ops"] + "x"):
        form = {"login": login.group(1), "token": token, "next": "/"}
        refused = dash.client.post("/login", data=form, headers=SAME, follow_redirects=False)
        assert refused.status_code == 401 and "invalid or revoked token" in refused.text
        assert "set-cookie" not in refused.headers or "pageq_session" not in refused.headers["set-cookie"]


def test_the_session_cookie(dash: Dash) -> None:
    page = dash.client.get("/login")
    login = re.search(r'name="login" value="([^"]+)"', page.text)
    assert login
    form = {"login": login.group(1), "token": dash.tokens["ops"], "next": "https://evil.example/x"}
    done = dash.client.post("/login", data=form, headers=SAME, follow_redirects=False)
    assert done.headers["location"] == "/"  # never to another origin
    cookie = next(c for c in done.headers.get_list("set-cookie") if c.startswith("pageq_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
    tls = TestClient(dash.client.app, base_url="https://127.0.0.1:8443")
    page = tls.get("/login")
    login = re.search(r'name="login" value="([^"]+)"', page.text)
    assert login
    done = tls.post("/login", data={**form, "login": login.group(1)}, headers=SAME, follow_redirects=False)
    cookie = next(c for c in done.headers.get_list("set-cookie") if c.startswith("__Host-pageq_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" in cookie and "Path=/" in cookie
    assert dash.tokens["ops"] not in tls.get("/").text  # the token never reaches a page (nor localStorage)


def test_login_itself_is_protected_from_cross_site_posts(dash: Dash) -> None:
    page = dash.client.get("/login")
    login = re.search(r'name="login" value="([^"]+)"', page.text)
    assert login
    form = {"login": login.group(1), "token": dash.tokens["ops"]}
    for headers in ({}, {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"}):
        assert (
            dash.client.post("/login", data=form, headers=headers, follow_redirects=False).status_code == 403
        )
    no_nonce = {"token": dash.tokens["ops"]}
    assert dash.client.post("/login", data=no_nonce, headers=SAME, follow_redirects=False).status_code == 403


def test_state_changing_requests_need_same_origin_and_the_csrf_token(dash: Dash) -> None:
    ids = jobs_that_ran(dash.app)
    csrf = dash.login("ops")
    target = f"/jobs/{ids['later']}/cancel"
    for headers, token in [
        ({}, csrf),  # no Sec-Fetch-Site (a client that is no browser, or a very old one)
        ({"Sec-Fetch-Site": "cross-site"}, csrf),
        ({"Sec-Fetch-Site": "same-site"}, csrf),
        ({"Sec-Fetch-Site": "none"}, csrf),
        (SAME, None),  # no token
        (SAME, "0" * 64),  # a wrong one
        (SAME, csrf_token(dash.tokens["viewer"])),  # another session's
    ]:
        data = {"csrf": token} if token is not None else {}
        response = dash.client.post(target, data=data, headers=headers, follow_redirects=False)
        assert response.status_code == 403, (headers, token)
        assert "content-security-policy" in response.headers
    for path in ("/queues/mail/pause", "/dead/purge", "/dead/requeue", "/logout"):
        assert dash.client.post(path, data={"csrf": csrf}, follow_redirects=False).status_code == 403
    json_body = dash.client.post(target, json={"csrf": csrf}, headers=SAME, follow_redirects=False)
    assert json_body.status_code == 403  # a form, or nothing
    assert dash.app.get_job(ids["later"]).state is JobState.SCHEDULED  # nothing happened
    assert dash.app.queue_controls() == [] and len(dash.app.list_jobs(JobState.DEAD)) == 2
    done = dash.post(target, csrf)
    assert done.status_code == 303 and dash.app.get_job(ids["later"]).state is JobState.CANCELLED
    other = TestClient(dash.client.app, base_url="http://127.0.0.1:8000")
    assert dash.login("viewer", other) != csrf  # each session its own token


def test_a_nonce_csp_on_every_html_response(dash: Dash) -> None:
    ids = jobs_that_ran(dash.app)
    anonymous = [dash.client.get("/login"), dash.client.get("/docs")]
    csrf = dash.login("ops")
    pages = [
        "/", "/queues", "/queues/reports", "/queues/nowhere", "/jobs",
        "/jobs?state=dead&order=oldest&limit=1", "/jobs?q=cannot", "/jobs?state=bogus",
        f"/jobs/{ids['dead']}", "/jobs/999999", "/jobs/abc", "/dead",
        "/dead?queue=reports", "/workers", "/audit", "/audit?action=enqueue&job=1", "/audit?job=x", "/docs",
    ]  # fmt: skip
    responses = [*anonymous, *(dash.client.get(p) for p in pages)]
    responses.append(dash.post(f"/jobs/{ids['dead']}/cancel", csrf))  # 409: it is dead
    responses.append(dash.client.post("/dead/purge", data={"csrf": csrf}))  # 403: no Sec-Fetch-Site
    viewer = TestClient(dash.client.app, base_url="http://127.0.0.1:8000")
    dash.login("viewer", viewer)
    responses.append(viewer.get("/audit"))  # 403: needs manage on everything
    html = [r for r in responses if r.headers["content-type"].startswith("text/html")]
    assert len(html) == len(responses)
    assert {r.status_code for r in html} >= {200, 400, 403, 404, 409}
    nonces = set()
    for response in html:
        policy = response.headers["content-security-policy"]
        nonce = NONCE_RE.search(policy)
        assert nonce, (response.url, policy)
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy.split("style-src")[0]  # never for scripts
        scripts = re.findall(r"<script\b[^>]*>", response.text)
        assert scripts and all(f'nonce="{nonce.group(1)}"' in s for s in scripts), response.url
        assert not re.search(r"\son[a-z]+\s*=", response.text)  # no inline event handlers
        if response.url.path != "/docs":
            assert " style=" not in response.text and "unsafe-inline" not in policy
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        nonces.add(nonce.group(1))
    assert len(nonces) == len(html)  # one per response


def test_query_parameters_cannot_override_route_ids(dash: Dash) -> None:
    first = dash.app.enqueue("held.wait", {"n": 1}, delay=3600)
    second = dash.app.enqueue("held.wait", {"n": 2}, delay=3600)
    csrf = dash.login("ops")
    response = dash.client.post(
        f"/jobs/{first}/cancel?job_id={second}&id={second}",
        data={"csrf": csrf, "job_id": second, "id": second}, headers=SAME, follow_redirects=False,
    )  # fmt: skip
    assert response.status_code == 303 and response.headers["location"] == f"/jobs/{first}"
    assert dash.app.get_job(first).state is JobState.CANCELLED
    assert dash.app.get_job(second).state is JobState.SCHEDULED
    shown = dash.client.get(f"/jobs/{second}?job_id={first}").text
    assert f'Job <span class="num" data-job-id>{second}</span>' in shown
    dash.post("/queues/mail/pause?name=held", csrf, name="held")
    assert [(c.name, c.paused) for c in dash.app.queue_controls()] == [("mail", True)]


# ----- grants
def test_a_reader_sees_but_cannot_act_and_the_denial_is_audited(dash: Dash) -> None:
    ids = jobs_that_ran(dash.app)
    csrf = dash.login("viewer")
    page = dash.client.get(f"/jobs/{ids['later']}").text
    assert 'data-action="cancel"' not in page and "later@example.com" in page  # it may read the arguments
    assert "data-action" not in dash.client.get("/queues").text
    denied = dash.post(f"/jobs/{ids['later']}/cancel", csrf)
    assert denied.status_code == 403 and dash.app.get_job(ids["later"]).state is JobState.SCHEDULED
    assert dash.post(f"/jobs/{ids['dead']}/retry", csrf).status_code == 403
    assert dash.post("/queues/mail/pause", csrf).status_code == 403
    assert dash.post("/dead/purge", csrf, all="1").status_code == 403
    assert len(dash.app.list_jobs(JobState.DEAD)) == 2 and dash.app.queue_controls() == []
    denials = dash.app.security.audit(principal="viewer", decision="deny")
    assert len(denials) == 4 and {d.action for d in denials} == {"manage"}
    assert dash.client.get("/audit").status_code == 403

    mailer = TestClient(dash.client.app, base_url="http://127.0.0.1:8000")
    dash.login("mailer", mailer)
    shown = {int(i) for i in re.findall(r'<tr data-job="(\d+)"', mailer.get("/jobs").text)}
    assert shown == {j.id for j in dash.app.list_jobs(queue="mail")}  # only the queue it may read
    assert mailer.get(f"/jobs/{ids['dead']}").status_code == 403
    assert "reports" not in mailer.get("/queues").text


def test_a_revoked_token_ends_the_session_within_a_second(dash: Dash) -> None:
    dash.login("viewer")
    assert dash.client.get("/", follow_redirects=False).status_code == 200
    dash.app.security.revoke_token(dash.token_ids["viewer"])
    deadline = time.monotonic() + 10
    while dash.client.get("/", follow_redirects=False).status_code != 303:
        assert time.monotonic() < deadline


# ----- what the pages show
def test_the_pages_show_what_the_database_holds(dash: Dash) -> None:
    ids = jobs_that_ran(dash.app)
    dash.app.pause_queue("held")
    for n in range(4):
        dash.app.enqueue("held.wait", {"n": n})
    dash.login("ops")
    overview = dash.client.get("/").text
    stats = {q.queue: q for q in dash.app.stats.queues()}
    for state in ("scheduled", "queued", "dead"):
        total = sum(q.jobs[JobState(state)] for q in stats.values())
        assert f'data-live="total/{state}">{total}<' in overview, state
    assert 'data-live="total/queued">4<' in overview and 'data-live="total/dead">2<' in overview
    queues = dash.client.get("/queues").text
    assert re.search(r'data-queue="held">\s*<th scope="row"><a href="/queues/held">held</a>\s*'
                     r'<span class="badge paused">paused</span>', queues)  # fmt: skip
    assert 'data-live="queue/held/queued">4<' in queues and 'data-live="queue/reports/dead">2<' in queues

    job = dash.client.get(f"/jobs/{ids['dead']}").text
    dead = dash.app.get_job(ids["dead"])
    assert len(dead.errors) == 2 and job.count('class="attempt"') == 2
    assert "ValueError: report 0 cannot be built" in job and "Traceback (most recent call last)" in job
    timeline = re.findall(r'<li data-action="([a-z_.]+)"', job)
    assert timeline == [e.action for e in dash.app.job_events(ids["dead"])]
    assert timeline == ["enqueue", "claim", "retry", "claim", "bury"]

    dlq = dash.client.get("/dead").text
    assert sorted(int(i) for i in re.findall(r'name="id" value="(\d+)"', dlq)) == [ids["dead"], ids["dead2"]]
    audit = dash.client.get("/audit?limit=20").text
    shown = [int(i) for i in re.findall(r'<tr data-audit="(\d+)"', audit)]
    assert shown == [row.id for row in dash.app.security.audit(limit=20)]
    older = dash.client.get(f"/audit?limit=20&before={shown[-1]}").text
    assert [int(i) for i in re.findall(r'<tr data-audit="(\d+)"', older)] == [
        row.id for row in dash.app.security.audit(limit=20, before_id=shown[-1])
    ]


def test_the_jobs_browser_filters_searches_sorts_and_pages(dash: Dash) -> None:
    ids = jobs_that_ran(dash.app)
    dash.login("ops")

    def shown(query: str) -> list[int]:
        page = dash.client.get(f"/jobs?{query}")
        assert page.status_code == 200, page.text
        return [int(i) for i in re.findall(r'<tr data-job="(\d+)"', page.text)]

    everything = [j.id for j in dash.app.list_jobs(limit=100)]
    assert shown("") == everything == sorted(everything, reverse=True)
    assert shown("order=oldest") == sorted(everything)
    assert shown("state=dead") == sorted([ids["dead"], ids["dead2"]], reverse=True)
    assert shown("state=dead&state=scheduled&queue=mail") == [ids["later"]]
    assert shown("q=CANNOT+be+built") == sorted([ids["dead"], ids["dead2"]], reverse=True)  # errors, any case
    assert shown("q=later%40example") == [ids["later"]]  # arguments
    assert shown(f"q={ids['flaky']}") == [ids["flaky"]]  # the id
    assert shown("task=report.build&queue=") == [ids["flaky"]]  # "any" queue sends it empty
    first = shown("order=oldest&limit=3")
    assert first == sorted(everything)[:3]
    page = dash.client.get("/jobs?order=oldest&limit=3").text
    after = re.search(r'href="/jobs\?([^"]+)" data-page="next"', page)
    assert after and f"after={first[-1]}" in after.group(1)
    assert shown(after.group(1).replace("&amp;", "&")) == sorted(everything)[3:6]
    newest = re.search(r'href="/jobs\?([^"]+)" data-page="next"', dash.client.get("/jobs?limit=4").text)
    assert newest and shown(newest.group(1).replace("&amp;", "&")) == everything[4:8]
    for bad in ("state=bogus", "limit=0", "before=-1", "queue=no%20spaces", "order=random"):
        assert dash.client.get(f"/jobs?{bad}").status_code == 400, bad


# ----- actions
def test_the_actions_change_the_database_and_are_audited(dash: Dash) -> None:
    ids = jobs_that_ran(dash.app)
    csrf = dash.login("ops")
    assert dash.post("/queues/mail/pause", csrf).headers["location"] == "/queues/mail"
    assert dash.app.queue_controls()[0].paused
    flash = dash.client.get("/queues/mail")
    assert "queue mail paused" in flash.text and "pageq_flash" in flash.headers.get("set-cookie", "")
    assert "queue mail paused" not in dash.client.get("/queues/mail").text  # shown once
    dash.post("/queues/mail/resume", csrf)
    dash.post("/queues/mail/limits", csrf, concurrency="3", rate_limit="20", rate_period="2", weight="4")
    control = dash.app.queue_controls()[0]
    assert (control.paused, control.concurrency, control.rate_limit, control.rate_period, control.weight) == (
        False, 3, 20, 2.0, 4,
    )  # fmt: skip
    dash.post("/queues/mail/limits", csrf, concurrency="", rate_limit="", weight="")
    control = dash.app.queue_controls()[0]
    assert (control.concurrency, control.rate_limit, control.weight) == (None, None, 1)
    assert dash.post("/queues/mail/limits", csrf, concurrency="many").status_code == 400

    assert dash.post(f"/jobs/{ids['later']}/retry", csrf).status_code == 303  # run now
    assert dash.app.get_job(ids["later"]).state is JobState.QUEUED
    dash.post(f"/jobs/{ids['later']}/cancel", csrf)
    assert dash.app.get_job(ids["later"]).state is JobState.CANCELLED
    again = dash.post(f"/jobs/{ids['later']}/cancel", csrf)
    assert again.status_code == 409 and "cannot be cancelled" in again.text
    dash.post(f"/jobs/{ids['later']}/retry", csrf)  # a cancelled job requeued
    assert dash.app.get_job(ids["later"]).state is JobState.QUEUED

    assert dash.post("/dead/requeue", csrf, id=str(ids["dead"])).status_code == 303
    assert dash.app.get_job(ids["dead"]).state is JobState.QUEUED
    assert dash.post("/dead/requeue", csrf).status_code == 400  # nothing selected
    assert dash.post("/dead/purge", csrf, id=[str(ids["dead"]), str(ids["dead2"])]).status_code == 303
    assert dash.app.get_job(ids["dead"]).state is JobState.QUEUED  # only dead jobs are purged
    with pytest.raises(pageq.JobNotFoundError):
        dash.app.get_job(ids["dead2"])
    done = {(r.action, r.principal) for r in dash.app.security.audit(limit=200)}
    expected = {"queue.pause", "queue.resume", "queue.limit", "run_now", "cancel", "requeue", "purge"}
    assert {(action, "ops") for action in expected} <= done
    assert dash.post("/logout", csrf).headers["location"] == "/login"
    assert dash.client.get("/", follow_redirects=False).status_code == 303


def test_bulk_requeue_and_purge_of_everything_matching(dash: Dash) -> None:
    ids = jobs_that_ran(dash.app)
    csrf = dash.login("ops")
    requeued = dash.post("/dead/requeue", csrf, all="1", queue="reports", task="")
    assert requeued.status_code == 303
    assert {dash.app.get_job(i).state for i in (ids["dead"], ids["dead2"])} == {JobState.QUEUED}
    run_all(dash.app)
    assert len(dash.app.list_jobs(JobState.DEAD)) == 2
    assert dash.post("/dead/purge", csrf, all="1", queue="mail").status_code == 303
    assert len(dash.app.list_jobs(JobState.DEAD)) == 2  # none in mail
    assert dash.post("/dead/purge", csrf, all="1", queue="", task="").status_code == 303
    assert dash.app.list_jobs(JobState.DEAD) == []


# ----- the live stream and the chart data
def test_the_event_stream_and_the_series(dash: Dash) -> None:
    jobs_that_ran(dash.app)
    dash.login("ops")
    with dash.client.stream("GET", "/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        lines = stream.iter_lines()
        event = next(line for line in lines if line.startswith("event: "))
        data = json.loads(next(lines).removeprefix("data: "))
    assert event == "event: snapshot"
    stats = {q.queue: q for q in dash.app.stats.queues()}
    assert data["values"]["total/dead"] == str(stats["reports"].dead) == "2"
    assert data["depth"]["scheduled"] == 1 and data["values"]["system/database"] == "up"
    series = dash.client.get("/series?minutes=10").json()
    points = dash.app.stats.series(10)
    assert series["t"] == [p.minute.timestamp() for p in points]
    assert series["succeeded"] == [p.counts.succeeded for p in points]
    assert set(series["depth"]) == {"scheduled", "queued", "running", "retrying", "blocked", "dead"}
    assert dash.client.get("/series?minutes=1").status_code == 400
