"""Behind a transaction pooler (PgBouncer): no session state, LISTEN over a direct DSN or polling.

The CI runs the producer and worker tests through PgBouncer in transaction mode (.ci/run, .ci/pgbouncer);
these tests check the switches themselves on any server.
"""

from __future__ import annotations

import pytest

import pageq
import pageq.testing
from pageq import config
from pageq.store import ops


def prepared(app: pageq.App) -> int:
    """Server-side prepared statements of one pooled session after running the same op ten times on it."""
    with app.store.transaction() as conn:
        for _ in range(10):
            app.store.run(ops.queue_counts(), conn)
        row = conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("pooled", [False, True])
@pytest.mark.skipif(
    config.flag("PAGEQ_POOLED"),
    reason="through a pooler the server session is shared: checked on a direct one",
)
def test_pooled_apps_prepare_nothing(dsn: str, schema: str, pooled: bool) -> None:
    app = pageq.App(dsn, schema=schema, pooled=pooled)
    app.migrate()
    try:
        assert (prepared(app) == 0) is pooled
    finally:
        app.close()
        app.drop_schema()


def test_where_workers_listen(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAGEQ_POOLED", raising=False)
    monkeypatch.delenv("PAGEQ_LISTEN_DSN", raising=False)
    direct = "postgresql://db:5432/app?sslmode=verify-full"  # explicit: kept as given by the TLS policy
    bouncer = "postgresql://u:secret@bouncer:6432/app"
    assert config.resolve(direct).listen_target == direct
    assert config.resolve(bouncer, pooled=True).listen_target is None  # polling only
    assert config.resolve(bouncer, pooled=True, listen_dsn=direct).listen_target == direct
    monkeypatch.setenv("PAGEQ_POOLED", "yes")
    monkeypatch.setenv("PAGEQ_LISTEN_DSN", direct)
    db = config.resolve(bouncer)
    assert (db.pooled, db.listen_target) == (True, direct)
    assert "secret" not in repr(db)


async def test_a_pooled_worker_without_listen_polls(dsn: str, schema: str) -> None:
    app = pageq.App(dsn, schema=schema, pooled=True)
    app.migrate()
    try:
        done: list[int] = []

        @app.task(queue="poll")
        def mark(n: int) -> None:
            done.append(n)

        for n in range(5):
            mark.enqueue(n=n)
        await pageq.testing.drain(app, ["poll"], poll_interval=0.05)
        assert sorted(done) == list(range(5))
    finally:
        app.close()
        app.drop_schema()


async def test_a_pooled_app_names_its_principal_in_every_transaction(dsn: str, schema: str) -> None:
    """Behind a transaction pooler a session setting would not follow the client: a pooled app names its
    principal per transaction, so the audit rows of its enqueues, claims and completions record it."""
    admin = pageq.App(dsn, schema=schema)
    admin.migrate()
    admin.security.create_principal("svc")
    admin.security.grant("svc", "*", queue="*", task="*")
    token = admin.security.create_token("svc")[1]
    app = pageq.App(dsn, schema=schema, pooled=True, token=token)
    try:

        @app.task
        def ping() -> None: ...

        ids = [ping.enqueue() for _ in range(3)]
        await pageq.testing.drain(app, ["default"], timeout=30)
        rows = admin.security.audit()
        mine = [(r.action, r.principal) for r in rows if r.job_id in ids]
        assert sorted(mine) == sorted((a, "svc") for a in ("enqueue", "claim", "complete") for _ in ids)
    finally:
        app.close()
        admin.close()
        admin.drop_schema()
