"""The dashboard in headless Chromium (Debian's, driven by Playwright) against a real `pageq serve` and a real
`pageq worker` running jobs: each page's numbers against the database, the live updates, and the pause,
resume, limits, cancel, requeue and purge buttons with their effect. Screenshots of every page are saved in
artifacts/screenshots/ (docs/dashboard.md shows some)."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import psycopg
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

import pageq
from apps.dashboard_app import QUEUES, register
from monitoring import roll_up
from pageq import JobState
from test_http_docs import free_port, stop, wait_ready

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
WAIT = 20_000  # ms: what a page may take to show a change, on a loaded 2-core machine
T = TypeVar("T")


@dataclass
class Live:
    """A served app with a worker, the token of an operator that may do anything, and what the page logged."""

    app: pageq.App
    url: str
    token: str
    token_id: int
    errors: list[str] = field(default_factory=list)
    contexts: list[BrowserContext] = field(default_factory=list)

    def page(self, browser: Browser) -> Page:
        context = browser.new_context(base_url=self.url, viewport={"width": 1360, "height": 900})
        self.contexts.append(context)
        context.set_default_timeout(WAIT)
        page = context.new_page()
        page.on("dialog", lambda dialog: dialog.accept())
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        return page

    def login(self, page: Page) -> None:
        page.goto("/")
        expect(page).to_have_url(re.compile(r"/login\?next=/$"))
        page.fill("#token", self.token)
        page.click("button[type=submit]")
        expect(page).to_have_url(f"{self.url}/")


def eventually(read: Callable[[], T], ok: Callable[[T], bool], timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if ok(value):
            return value
        assert time.monotonic() < deadline, value
        time.sleep(0.05)


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "Debian's chromium is needed (.ci/run installs it)"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def live(app: pageq.App, env: dict[str, str]) -> Iterator[Live]:
    """`pageq serve` and `pageq worker` of tests/apps/dashboard_app.py on the test's schema; queue "held" is
    paused before the worker starts (a pause made later reaches a running worker within a second only)."""
    register(app)
    app.pause_queue("held")
    app.stats.ttl = 0
    app.security.create_principal("ops")
    app.security.grant("ops", "*")
    token_id, token = app.security.create_token("ops")
    port = free_port()
    command = [sys.executable, "-m", "pageq"]
    server = subprocess.Popen(
        [*command, "serve", "apps.dashboard_app:app", "--port", str(port)], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    worker = subprocess.Popen(
        [*command, "worker", "apps.dashboard_app:app", "--queues", ",".join(QUEUES), "--concurrency", "4",
         "--poll-interval", "0.1", "--maintenance-interval", "0.2"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, server)
        eventually(app.stats.workers, lambda w: len(w) == 1)
        served = Live(app, url, token, token_id)
        yield served
        for context in served.contexts:
            context.close()
    finally:
        stop(worker)
        stop(server)


def totals(app: pageq.App) -> dict[str, int]:
    return {s.value: sum(q.jobs[s] for q in app.stats.queues()) for s in pageq.stats.SHOWN_STATES}


def settled(app: pageq.App, dead: int, queued: int, succeeded: int | None = None) -> dict[str, int]:
    """The totals once the worker has run everything it may: ``dead`` jobs dead, ``queued`` still queued
    (and, when given, ``succeeded`` jobs in the history: every finish committed before a rollup)."""
    want = {"dead": dead, "queued": queued, "running": 0, "retrying": 0}
    if succeeded is not None:
        query = f"SELECT count(*) FROM {app.schema}.finished_jobs WHERE state = 'succeeded'"
        with psycopg.connect(app.database.dsn, autocommit=True) as conn:
            eventually(
                lambda: conn.execute(query).fetchone(), lambda row: row is not None and row[0] == succeeded
            )
    return eventually(lambda: totals(app), lambda t: all(t[k] == v for k, v in want.items()))


def rolled_up_view(app: pageq.App, series: list[pageq.MinuteStats]) -> str:
    """What the rollups saw against what the database holds (for a failing assertion's message)."""
    with psycopg.connect(app.database.dsn, autocommit=True) as conn:
        state = conn.execute(f"SELECT since, rolled_until FROM {app.schema}.stats_state").fetchall()
        finished = conn.execute(
            f"SELECT task, state, finished_at, created_at FROM {app.schema}.finished_jobs "
            "ORDER BY finished_at"
        ).fetchall()
    minutes = [
        (p.minute, p.counts.succeeded, p.counts.dead) for p in series if p.counts.succeeded or p.counts.dead
    ]
    return f"stats_state {state}; minutes {minutes}; finished {finished}"


def cell_numbers(page: Page, selector: str) -> list[str]:
    return [text.strip() for text in page.locator(selector).all_inner_texts()]


def test_each_page_shows_what_the_database_holds(live: Live, browser: Browser) -> None:
    app = live.app
    app.enqueue_many([app.get_task("held.wait").job(n=i) for i in range(5)])
    app.enqueue_many([app.get_task("mail.send").job(to=f"user{i}@example.com") for i in range(12)])
    doomed = app.enqueue_many([app.get_task("report.doomed").job(n=i) for i in range(3)])
    app.enqueue_many([app.get_task("report.build").job(n=i, fail_first=i == 0) for i in range(4)])
    later = app.enqueue("mail.send", {"to": "later@example.com"}, delay=3600)
    now = settled(app, dead=3, queued=5, succeeded=12 + 4)
    roll_up(app)  # the minutes the charts show, without waiting for them to settle
    page = live.page(browser)
    live.login(page)

    # overview: the cards, the history charts' sums, and a live update
    for state, count in now.items():
        expect(page.locator(f'.card [data-live="total/{state}"]')).to_have_text(str(count))
    expect(page.locator("figure[data-chart=throughput] .plot")).to_have_attribute("data-ready", "1")
    expect(page.locator("figure[data-live-chart=depth] .plot")).to_have_attribute("data-ready", "1")
    series = app.stats.series(60)
    for name in ("enqueued", "succeeded", "failed", "dead"):
        total = sum(getattr(p.counts, name) for p in series)
        legend = page.locator(f'figure[data-chart=throughput] .legend [data-series="{name}"] b')
        expect(legend).to_have_text(str(total))
    assert sum(p.counts.succeeded for p in series) == 12 + 4 and sum(p.counts.dead for p in series) == 3, (
        rolled_up_view(app, series)
    )
    expect(page.locator('figure[data-chart=latency] .legend [data-series="run p95"] b')).not_to_have_text("-")
    app.enqueue_many([app.get_task("held.wait").job(n=i) for i in range(2)])
    expect(page.locator('.card [data-live="total/queued"]')).to_have_text("7")  # pushed, not reloaded
    shot(page, "overview")

    # queues: every number of the table against the database
    page.goto("/queues")
    for summary in app.stats.queues():
        row = f'table.queues tr[data-queue="{summary.queue}"]'
        shown = cell_numbers(page, f"{row} td[data-state]")
        assert shown == [str(summary.jobs[s]) for s in pageq.stats.SHOWN_STATES], summary.queue
    expect(page.locator('table.controls tr[data-queue="held"] .badge')).to_have_text("paused")
    shot(page, "queues")
    page.click('table.queues a[href="/queues/reports"]')
    reports = next(q for q in app.stats.queues() if q.queue == "reports")
    assert page.locator("tr[data-task]").evaluate_all("rows => rows.map(r => r.dataset.task)") == [
        t.task for t in reports.tasks
    ]
    expect(page.locator("figure[data-chart=latency] .plot")).to_have_attribute("data-ready", "1")
    shot(page, "queue")

    # jobs: filter, search, sort and page
    page.goto("/jobs")
    page.check('input[name=state][value="dead"]')
    page.click("form.filters button[type=submit]")

    def ids() -> list[int]:
        return [int(i) for i in page.locator("tr[data-job]").evaluate_all("r => r.map(x => x.dataset.job)")]

    assert ids() == [j.id for j in app.page_jobs(JobState.DEAD).jobs] == sorted(doomed, reverse=True)
    page.uncheck('input[name=state][value="dead"]')
    page.fill("input[name=q]", "later@EXAMPLE")
    page.click("form.filters button[type=submit]")
    assert ids() == [later]
    page.fill("input[name=q]", "")
    page.select_option("select[name=order]", "oldest")
    page.select_option("select[name=limit]", "10")
    page.click("form.filters button[type=submit]")
    oldest = [j.id for j in app.page_jobs(order="oldest", limit=100).jobs]
    assert ids() == oldest[:10]
    page.click("a[data-page=next]")
    assert ids() == oldest[10:20]
    shot(page, "jobs")

    # one dead job: attempts with tracebacks, and its timeline from the audit trail
    page.goto("/dead")
    assert sorted(ids()) == sorted(doomed)
    shot(page, "dead")
    page.click(f'tr[data-job="{doomed[0]}"] a')
    expect(page.locator(".attempt")).to_have_count(2)
    page.locator(".attempt details summary").first.click()
    expect(page.locator(".attempt pre.traceback").first).to_contain_text(
        "ValueError: report 0 cannot be built"
    )
    actions = page.locator("ol.timeline li").evaluate_all("r => r.map(x => x.dataset.action)")
    assert (
        actions
        == [e.action for e in app.job_events(doomed[0])]
        == ["enqueue", "claim", "retry", "claim", "bury"]
    )
    expect(page.locator("pre[data-field=args]")).to_contain_text('"n": 0')
    shot(page, "job")

    # workers and the audit trail
    page.goto("/workers")
    (worker,) = app.stats.workers()
    expect(page.locator(f'tr[data-worker="{worker.id}"] .badge.health')).to_have_text("healthy")
    expect(page.locator(f'tr[data-worker="{worker.id}"] [data-live$="/processed"]')).to_have_text(
        re.compile(r"^\d+$")
    )
    shot(page, "workers")
    page.goto("/audit?limit=25")
    rows = [int(i) for i in page.locator("tr[data-audit]").evaluate_all("r => r.map(x => x.dataset.audit)")]
    assert len(rows) == 25
    assert rows == [r.id for r in app.security.audit(before_id=rows[0] + 1, limit=25)]
    shot(page, "audit")

    page.goto("/docs")  # the API's own page keeps working under the Content-Security-Policy
    expect(page.locator(".swagger-ui .information-container")).to_contain_text("pageq")
    assert live.errors == []


def test_pause_limits_cancel_requeue_and_purge_take_effect(live: Live, browser: Browser) -> None:
    app = live.app
    doomed = app.enqueue_many([app.get_task("report.doomed").job(n=i) for i in range(4)])
    later = app.enqueue("mail.send", {"to": "later@example.com"}, delay=3600)
    settled(app, dead=4, queued=0)
    page = live.page(browser)
    live.login(page)

    # pause: the worker starts none of the queue's jobs until it is resumed
    page.goto("/queues")
    page.click('table.controls tr[data-queue="mail"] button[data-action=pause]')
    expect(page.locator(".flash")).to_contain_text("queue mail paused")
    assert {c.name: c.paused for c in app.queue_controls()} == {"held": True, "mail": True}
    waiting = app.enqueue_many([app.get_task("mail.send").job(to=f"p{i}@example.com") for i in range(3)])
    expect(page.locator('.card [data-live="queue/mail/queued"]')).to_have_text("3")
    shot(page, "queue-paused")
    assert {app.get_job(i).state for i in waiting} == {JobState.QUEUED}
    page.click("button[data-action=resume]")
    expect(page.locator(".flash")).to_contain_text("queue mail resumed")
    eventually(lambda: {app.get_job(i).state for i in waiting}, lambda s: s == {JobState.SUCCEEDED})
    page.fill("input[name=concurrency]", "2")
    page.click("button[data-action=limits]")
    expect(page.locator(".flash")).to_contain_text("concurrency 2")
    assert {c.name: c.concurrency for c in app.queue_controls()} == {"held": None, "mail": 2}

    # cancel a scheduled job, requeue a dead one
    page.goto(f"/jobs/{later}")
    page.click("button[data-action=cancel]")
    expect(page.locator(".flash")).to_contain_text(f"job {later} cancelled")
    assert app.get_job(later).state is JobState.CANCELLED
    expect(page.locator('ol.timeline li[data-action="cancel"]')).to_contain_text("by ops")
    shot(page, "job-cancelled")
    page.goto(f"/jobs/{doomed[0]}")
    page.click("button[data-action=retry]")
    expect(page.locator(".flash")).to_contain_text(f"job {doomed[0]}")
    eventually(lambda: app.get_job(doomed[0]), lambda j: j.state is JobState.DEAD and len(j.errors) == 4)
    assert [(e.action, e.principal) for e in app.job_events(doomed[0]) if e.action == "requeue"] == [
        ("requeue", "ops")
    ]

    # the dead-letter queue: requeue two ticked jobs, then purge them all
    page.goto("/dead")
    page.check(f'input[name=id][value="{doomed[1]}"]')
    page.check(f'input[name=id][value="{doomed[2]}"]')
    page.click("button[data-action=requeue-selected]")
    expect(page.locator(".flash")).to_contain_text("requeued 2 dead jobs")
    requeued = {e.job_id for e in app.security.audit(action="requeue", principal="ops")}
    assert requeued == {doomed[0], doomed[1], doomed[2]}
    settled(app, dead=4, queued=0)
    page.goto("/dead")
    shot(page, "dead-before-purge")
    page.click("button[data-action=purge-all]")
    expect(page.locator(".flash")).to_contain_text("purged 4 dead jobs")
    assert app.list_jobs(JobState.DEAD) == [] and totals(app)["dead"] == 0
    expect(page.locator('.top [data-live="total/dead"]')).to_have_text("0")
    shot(page, "dead-purged")

    # a revoked token ends the open session: the event stream sends the page to the login form
    app.security.revoke_token(live.token_id)
    expect(page).to_have_url(re.compile(r"/login$"))
    assert live.errors == []
