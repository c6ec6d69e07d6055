"""Webhooks and events against a real local HTTP receiver: every transition delivered exactly once per
matching webhook after retries, nothing for rolled-back transactions, signatures, the address guard, the
audit-level rule, disabling, rotation, encrypted secrets, and `App.on` handlers."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, TypeVar

import psycopg
import psycopg.types.json
import pytest

import pageq
from pageq import JobState
from pageq.security.crypto import Keyring, new_key
from pageq.webhooks.events import EVENT_ACTIONS
from webhook_receiver import Receiver, serve

T = TypeVar("T")
FAST = pageq.Backoff.constant(0.05)
WORKER: dict[str, Any] = {"poll_interval": 0.05, "maintenance_interval": 0.1}


def make_app(dsn: str, schema: str, allow: tuple[str, ...] = ("127.0.0.1",), **options: Any) -> pageq.App:
    settings = pageq.WebhookSettings(allow=allow, retry=FAST)
    application = pageq.App(dsn, schema=schema, webhook_settings=settings, **options)
    application.migrate()
    return application


@pytest.fixture
def hooks_app(dsn: str, schema: str) -> Iterator[pageq.App]:
    """A migrated App whose workers may deliver to loopback and retry deliveries after 50 ms."""
    application = make_app(dsn, schema)
    yield application
    application.close()
    application.drop_schema()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from serve(Receiver())


def sql(app: pageq.App, text: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(app.database.dsn, autocommit=True) as conn:
        cur = conn.execute(text.replace("{s}", app.schema), params)
        return [tuple(row) for row in cur.fetchall()] if cur.description else []


async def until(predicate: Callable[[], T], what: str, timeout: float = 30.0) -> T:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await asyncio.to_thread(predicate)
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def working(
    app: pageq.App, queues: list[str], concurrency: int = 8, **options: Any
) -> AsyncIterator[pageq.Worker]:
    worker = app.worker(queues, concurrency, **{**WORKER, **options})
    running = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.started.wait(), 30)
    try:
        yield worker
    finally:
        worker.stop()
        await running


def deliveries_left(app: pageq.App) -> bool:
    rows = sql(app, "SELECT count(*) FROM {s}.jobs WHERE queue = 'pageq.webhooks'")
    return rows[0][0] == 0


def expected_events(app: pageq.App, types: list[str], task_like: str = "%") -> set[int]:
    """The audit rows (event ids) a webhook on ``types`` of tasks LIKE ``task_like`` must receive."""
    actions = sorted({a for t in (EVENT_ACTIONS if types == ["*"] else types) for a in EVENT_ACTIONS[t]})
    rows = sql(
        app,
        "SELECT id FROM {s}.audit WHERE job_id IS NOT NULL AND decision = 'allow' AND action = ANY(%s)"
        " AND task <> 'pageq.webhook' AND task LIKE %s",
        [actions, task_like],
    )
    return {row[0] for row in rows}


# ----- the acceptance test
async def test_each_transition_of_1000_jobs_is_delivered_once_per_matching_webhook(
    hooks_app: pageq.App,
) -> None:
    app = hooks_app
    receiver = Receiver(status=lambda delivery, seen: 500 if delivery % 10 == 0 and seen < 2 else 200)
    with contextlib.closing(serve(receiver)) as served:
        next(served)

        @app.task(queue="work", max_attempts=3, retry=FAST)
        async def ok(n: int) -> int:
            return n

        @app.task(queue="work", max_attempts=3, retry=FAST)
        async def flaky(ctx: pageq.Context, n: int) -> int:
            if ctx.attempt == 1:
                raise ValueError(f"flaky {n}")
            return n

        @app.task(queue="work", max_attempts=2, retry=FAST)
        async def bad(n: int) -> None:
            raise ValueError(f"bad {n}")

        subscriptions = {
            "all": (["*"], "*"),
            "dead": (["job.dead"], "*"),
            "flaky": (["job.retrying", "job.succeeded"], "fl*"),
            "cancelled": (["job.cancelled"], "*"),
        }
        hooks = {
            name: app.webhooks.create(receiver.url, types, task=task)
            for name, (types, task) in subscriptions.items()
        }
        specs = [ok.job(n=i) for i in range(800)] + [flaky.job(n=i) for i in range(150)]
        ids = app.enqueue_many(specs + [bad.job(n=i) for i in range(50)])
        with psycopg.connect(app.database.dsn) as conn:  # never committed: never announced
            rolled_back = [ok.enqueue(n=-i, conn=conn) for i in range(20)]
            conn.rollback()
        async with working(app, ["work"], concurrency=64):
            await until(
                lambda: all(s.counts[JobState.SUCCEEDED] + s.counts[JobState.DEAD] == 1000
                            for s in app.queue_stats() if s.queue == "work"),
                "the jobs to finish", timeout=120,
            )  # fmt: skip
            await until(lambda: deliveries_left(app), "every delivery to be made", timeout=120)

    delivered = receiver.delivered()
    for name, (types, task) in subscriptions.items():
        hook, secret = hooks[name]
        mine = [r for r in delivered if r.webhook == hook.id]
        events = [r.event(secret) for r in mine]
        counted = Counter(e["id"] for e in events)
        assert set(counted) == expected_events(app, types, task.replace("*", "%")), name
        assert all(n == 1 for n in counted.values()), f"{name}: delivered twice {counted.most_common(3)}"
        assert all(r.headers["Pageq-Event"] == e["type"] for r, e in zip(mine, events, strict=True))
        assert not {e["job"]["id"] for e in events} & set(rolled_back)
    assert len(expected_events(app, ["job.dead"])) == 50
    assert sum(1 for r in receiver.received if r.status == 500) > 100  # retried, then delivered once
    retried = {r.delivery for r in receiver.received if r.status == 500}
    assert retried <= {r.delivery for r in delivered}
    log = app.webhooks.deliveries(hooks["dead"][0].id, limit=1000)
    assert Counter(d.outcome for d in log)["delivered"] == 50
    assert app.webhooks.get(hooks["dead"][0].id).delivered == 50
    assert max(ids) < min(r.delivery for r in delivered)  # deliveries are jobs of their own


# ----- no event without a commit
def test_rolled_back_transitions_are_never_announced(hooks_app: pageq.App) -> None:
    app = hooks_app

    @app.task(queue="work")
    def t() -> None: ...

    app.webhooks.create("http://127.0.0.1:9/hooks", ["job.enqueued", "job.cancelled"])
    with psycopg.connect(app.database.dsn) as conn:
        t.enqueue(conn=conn)
        conn.rollback()
    assert deliveries_left(app)
    kept = t.enqueue()
    with psycopg.connect(app.database.dsn) as conn:
        app.cancel(kept, conn=conn)
        conn.rollback()
    events = sql(app, "SELECT args->'event'->>'type' FROM {s}.jobs WHERE queue = 'pageq.webhooks'")
    assert events == [("job.enqueued",)]
    app.cancel(kept)
    events = sql(
        app, "SELECT args->'event'->>'type' FROM {s}.jobs WHERE queue = 'pageq.webhooks' ORDER BY id"
    )
    assert events == [("job.enqueued",), ("job.cancelled",)]


def test_the_trigger_exists_only_for_wanted_actions(hooks_app: pageq.App) -> None:
    app = hooks_app

    def triggers() -> list[tuple[Any, ...]]:
        query = (
            "SELECT tgname FROM pg_trigger WHERE tgrelid = '{s}.audit'::regclass AND tgname = 'audit_events'"
        )
        return sql(app, query)

    assert app.webhooks.routes() == ([], []) and triggers() == []
    dead, _ = app.webhooks.create("https://example.com/a", ["job.dead"])
    assert app.webhooks.routes() == (["bury"], [])
    (definition,) = sql(app, "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgname = 'audit_events'"
                             " AND tgrelid = '{s}.audit'::regclass")[0]  # fmt: skip
    assert "'bury'" in definition and "'complete'" not in definition
    app.enqueue_many([])
    other, _ = app.webhooks.create("https://example.com/b", ["job.retrying"], enabled=False)
    assert app.webhooks.routes() == (["bury"], [])
    app.webhooks.enable(other.id)
    assert app.webhooks.routes() == (["bury", "rescue", "retry"], [])
    app.webhooks.delete(dead.id)
    app.webhooks.disable(other.id)
    assert app.webhooks.routes() == ([], []) and triggers() == []


def test_webhooks_need_the_audit_level_of_their_events(hooks_app: pageq.App) -> None:
    app = hooks_app
    app.security.audit_level("actions")
    with pytest.raises(pageq.InvalidOptionError, match="audit level full"):
        app.webhooks.create("https://example.com/a", ["job.dead"])
    hook, _ = app.webhooks.create("https://example.com/a", ["job.enqueued", "job.cancelled"])
    with pytest.raises(pageq.InvalidOptionError, match=f"webhooks {hook.id} need a higher audit level"):
        app.security.audit_level("off")
    app.webhooks.disable(hook.id)
    assert app.security.audit_level("off") == "off"
    with pytest.raises(pageq.InvalidOptionError, match="audit level actions"):
        app.webhooks.enable(hook.id)
    assert not app.webhooks.get(hook.id).enabled


@pytest.mark.parametrize(
    ("url", "events", "options"),
    [
        ("ftp://example.com/x", "*", {}), ("https://user:pw@example.com/", "*", {}), ("https:///x", "*", {}),
        ("https://example.com/", ["job.exploded"], {}), ("https://example.com/", [], {}),
        ("https://example.com/", "*", {"queue": "a b"}), ("https://example.com/", "*", {"secret": "short"}),
        ("https://example.com/", "*", {"timeout": 0}), ("https://example.com/", "*", {"max_attempts": 0}),
    ],
)  # fmt: skip
def test_bad_webhooks_are_refused(hooks_app: pageq.App, url: str, events: Any, options: Any) -> None:
    with pytest.raises(pageq.InvalidOptionError):
        hooks_app.webhooks.create(url, events, **options)
    assert hooks_app.webhooks.list() == []


# ----- delivering
async def test_a_private_address_is_refused_unless_allow_listed(
    dsn: str, schema: str, receiver: Receiver
) -> None:
    app = make_app(dsn, schema, allow=())
    try:

        @app.task(queue="work")
        def t() -> None: ...

        hook, _ = app.webhooks.create(receiver.url, ["job.enqueued"], max_attempts=5)
        job_id = t.enqueue()
        async with working(app, ["work"]):
            await until(lambda: app.dead_jobs(queue="pageq.webhooks"), "the delivery to die")
        assert receiver.received == []
        (attempt,) = app.webhooks.deliveries(hook.id)
        assert (attempt.outcome, attempt.status, attempt.attempt) == ("refused", None, 1)
        assert "127.0.0.1 is a loopback address" in (attempt.error or "")
        (dead,) = app.dead_jobs(queue="pageq.webhooks")
        assert dead.args["event"]["job"]["id"] == job_id and dead.attempts == 1
    finally:
        app.close()
        app.drop_schema()


async def test_unreachable_receivers_are_retried_then_dead(hooks_app: pageq.App) -> None:
    app = hooks_app

    @app.task(queue="work")
    def t() -> None: ...

    hook, _ = app.webhooks.create("http://127.0.0.1:9/closed", ["job.enqueued"], max_attempts=2)
    t.enqueue()
    async with working(app, ["work"]):
        await until(lambda: app.dead_jobs(queue="pageq.webhooks"), "the delivery to die")
    attempts = app.webhooks.deliveries(hook.id)
    assert [(a.attempt, a.outcome) for a in attempts] == [(2, "failed"), (1, "failed")]
    assert all("ConnectError" in (a.error or "") for a in attempts)
    assert app.webhooks.get(hook.id).failed == 2


async def test_disabled_webhooks_skip_pending_deliveries(hooks_app: pageq.App, receiver: Receiver) -> None:
    app = hooks_app

    @app.task(queue="work")
    def t() -> None: ...

    hook, _ = app.webhooks.create(receiver.url, ["job.enqueued"])
    t.enqueue()
    app.webhooks.disable(hook.id)
    t.enqueue()  # no delivery: the webhook is disabled
    async with working(app, ["work"]):
        await until(lambda: app.webhooks.deliveries(hook.id), "the skipped delivery")
        await until(lambda: deliveries_left(app), "the deliveries to finish")
    assert receiver.received == []
    (attempt,) = app.webhooks.deliveries(hook.id)
    assert attempt.outcome == "skipped"


async def test_rotation_signs_with_both_secrets_then_the_new_one(
    hooks_app: pageq.App, receiver: Receiver
) -> None:
    app = hooks_app

    @app.task(queue="work")
    def t() -> None: ...

    hook, old = app.webhooks.create(receiver.url, ["job.enqueued"])
    new = app.webhooks.rotate_secret(hook.id, keep_old=3600)
    t.enqueue()
    async with working(app, ["work"]):
        await until(lambda: len(receiver.delivered()) == 1, "a delivery")
        (first,) = receiver.delivered()
        assert first.headers["Pageq-Signature"].count("v1=") == 2
        assert first.event(old) == first.event(new) == first.event([new, "whsec_other"])
        newest = app.webhooks.rotate_secret(hook.id, keep_old=0)
        assert app.webhooks.get(hook.id).old_secret_until is None
        t.enqueue()
        await until(lambda: len(receiver.delivered()) == 2, "a second delivery")
    second = receiver.delivered()[1]
    assert second.headers["Pageq-Signature"].count("v1=") == 1
    second.event(newest)
    for wrong in (old, new):
        with pytest.raises(pageq.webhooks.SignatureError):
            second.event(wrong)


async def test_secrets_are_encrypted_with_the_keyring(dsn: str, schema: str, receiver: Receiver) -> None:
    app = make_app(dsn, schema, keyring=Keyring.parse(f"k1:{new_key()}"))
    try:

        @app.task(queue="work")
        def t() -> None: ...

        _, secret = app.webhooks.create(receiver.url, ["job.enqueued"])
        (stored,) = sql(app, "SELECT secret::text FROM {s}.webhooks")[0]
        assert secret not in stored and '"$enc"' in stored
        t.enqueue()
        async with working(app, ["work"]):
            await until(lambda: receiver.delivered(), "a delivery")
        assert receiver.delivered()[0].event(secret)["type"] == "job.enqueued"
    finally:
        app.close()
        app.drop_schema()


async def test_workers_take_on_deliveries_once_a_webhook_exists(
    hooks_app: pageq.App, receiver: Receiver
) -> None:
    app = hooks_app

    @app.task(queue="work")
    def t() -> None: ...

    async with working(app, ["work"], heartbeat=0.2) as worker:  # it publishes its queues as it beats
        assert worker.queues == ["work"]  # no webhook: the worker claims from its own queues only
        await asyncio.to_thread(app.webhooks.create, receiver.url, ["job.enqueued"])
        await asyncio.to_thread(t.enqueue)
        await until(lambda: receiver.delivered(), "a delivery")
        assert worker.queues == ["work", "pageq.webhooks"]
        await until(lambda: app.workers()[0]["queues"] == ["work", "pageq.webhooks"], "the published queues")


async def test_only_recorded_events_are_signed(hooks_app: pageq.App, receiver: Receiver) -> None:
    app = hooks_app

    @app.task(queue="work")
    def t() -> None: ...

    hook, _ = app.webhooks.create(receiver.url, ["job.dead"])
    job_id = t.enqueue()
    # an audit row the job's state does not bear out, and a delivery job written by hand: nothing is sent
    sql(app, "INSERT INTO {s}.audit (action, job_id, queue, task) VALUES ('bury', %s, 'work', 't')", [job_id])
    assert deliveries_left(app)
    forged = {"webhook": hook.id, "event": {"id": 1, "type": "job.dead", "job": {"id": job_id}}}
    sql(app, "INSERT INTO {s}.jobs (task, queue, args, state, run_at, max_attempts, created_at)"
             " VALUES ('pageq.webhook', 'pageq.webhooks', %s, 'queued', now(), 3, now())",
        [psycopg.types.json.Jsonb(forged)])  # fmt: skip
    async with working(app, ["work"]):
        await until(lambda: app.dead_jobs(queue="pageq.webhooks"), "the forged delivery to die")
    assert receiver.received == []
    (attempt,) = app.webhooks.deliveries(hook.id)
    assert attempt.outcome == "refused" and "not in the audit trail" in (attempt.error or "")


# ----- in-process listeners
async def test_on_handlers_run_once_per_committed_event(hooks_app: pageq.App) -> None:
    app = hooks_app
    seen: list[pageq.Event] = []
    cancelled: list[int] = []

    @app.task(queue="work", max_attempts=1)
    async def bad() -> None:
        raise ValueError("nope")

    @app.task(queue="work")
    def later() -> None: ...

    @app.on("job.dead")
    async def on_dead(event: pageq.Event) -> None:
        seen.append(event)

    app.on("job.cancelled", lambda event: cancelled.append(event.job_id))
    async with working(app, ["work"]) as worker:
        await asyncio.wait_for(worker.events_ready.wait(), 30)
        assert app.webhooks.routes() == (["bury", "cancel"], ["bury", "cancel"])
        job_id = await bad.enqueue_async()
        waiting = later.enqueue(delay=3600)
        with psycopg.connect(app.database.dsn) as conn:
            app.cancel(waiting, conn=conn)
            conn.rollback()
        await until(lambda: seen, "the job.dead event")
        app.cancel(waiting)
        await until(lambda: cancelled, "the job.cancelled event")
    (event,) = seen
    assert (event.type, event.job_id, event.task, event.state, event.previous) == (
        "job.dead", job_id, "bad", JobState.DEAD, JobState.RUNNING,
    )  # fmt: skip
    assert event.error is not None and event.error["message"] == "ValueError: nope"
    assert cancelled == [waiting]
    assert app.webhooks.routes() == ([], [])  # the listener left when its worker stopped


async def test_events_stream_to_any_process(hooks_app: pageq.App) -> None:
    app = hooks_app

    @app.task(queue="work")
    def t() -> None: ...

    async with contextlib.aclosing(app.events("job.enqueued")) as events:
        first = asyncio.ensure_future(anext(events))
        await until(lambda: app.webhooks.routes()[1] == ["enqueue"], "the listener")
        job_id = await asyncio.to_thread(t.enqueue)
        event = await asyncio.wait_for(first, 10)
    assert (event.type, event.job_id, event.state, event.previous) == (
        "job.enqueued",
        job_id,
        JobState.QUEUED,
        None,
    )
    assert app.webhooks.routes() == ([], [])


# ----- the receiver of docs/webhooks.md, served for real
def test_the_python_receiver_of_the_docs(hooks_app: pageq.App, monkeypatch: pytest.MonkeyPatch) -> None:
    import re
    import threading
    from pathlib import Path

    import httpx
    import uvicorn

    app = hooks_app
    doc = (Path(__file__).resolve().parent.parent / "docs" / "webhooks.md").read_text()
    (code,) = [
        b for b in re.findall(r"^```python\n(.*?)^```", doc, re.MULTILINE | re.DOTALL) if "def receive" in b
    ]
    secret = pageq.webhooks.new_secret()
    monkeypatch.setenv("PAGEQ_WEBHOOK_SECRET", secret)
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/webhooks.md", "exec"), namespace)
    handled: list[dict[str, Any]] = []
    namespace["handle"] = handled.append
    server = uvicorn.Server(uvicorn.Config(namespace["api"], host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            thread.join(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}/pageq-events"
        forged = httpx.post(url, content=b'{"id":1}', headers={"Pageq-Signature": "t=1,v1=00"})
        assert forged.status_code == 400

        @app.task(queue="work")
        def t() -> None: ...

        app.webhooks.create(url, ["job.succeeded"], secret=secret)
        job_id = t.enqueue()

        async def run() -> None:
            async with working(app, ["work"]):
                await until(lambda: handled, "the receiver to handle the event")

        asyncio.run(run())
    finally:
        server.should_exit = True
        thread.join(10)
    (event,) = handled
    assert (event["type"], event["job"]["id"], event["job"]["state"]) == (
        "job.succeeded",
        job_id,
        "succeeded",
    )


def docs_block(marker: str) -> str:
    """The ```python block of docs/webhooks.md that contains ``marker``."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "webhooks.md").read_text()
    found: list[str] = re.findall(r"^```python\n(.*?)^```", doc, re.MULTILINE | re.DOTALL)
    (code,) = [block for block in found if marker in block]
    return code


async def test_the_event_stream_of_the_docs(hooks_app: pageq.App) -> None:
    """docs/webhooks.md's `watch()` coroutine (the other blocks of the page run in test_docs_snippets.py):
    it prints the job.succeeded of a job a worker ran while it listened."""
    app = hooks_app
    code = docs_block("def watch")
    printed: list[tuple[Any, ...]] = []
    namespace: dict[str, Any] = {"app": app, "pageq": pageq, "print": lambda *values: printed.append(values)}
    exec(compile(code, "docs/webhooks.md", "exec"), namespace)

    @app.task(queue="work")
    def t() -> None: ...

    watcher = asyncio.create_task(namespace["watch"]())
    try:
        await until(lambda: app.webhooks.routes()[1], "the listener")
        job_id = await asyncio.to_thread(t.enqueue)
        async with working(app, ["work"]):
            await until(lambda: printed, "the watcher to print the event")
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    assert printed == [("job.succeeded", job_id, JobState.SUCCEEDED)]
