"""A test app for monitoring: jobs that succeed, fail once, or always fail, in two queues."""

from __future__ import annotations

import pageq

AGAIN = pageq.Backoff.constant(0.01)


def register(app: pageq.App) -> pageq.App:
    """Register the monitoring tests' tasks on ``app``."""

    @app.task(queue="mon")
    def ok(n: int) -> int:
        return n

    @app.task(queue="mon", retry=AGAIN)
    def flaky(ctx: pageq.Context, n: int) -> int:
        if ctx.attempt == 1:
            raise RuntimeError("first attempts fail")
        return n

    @app.task(queue="mon", max_attempts=2, retry=AGAIN)
    def doomed(n: int) -> None:
        raise RuntimeError("always fails")

    @app.task(queue="bulk")
    async def bulk(n: int) -> int:
        return n

    return app


def enqueue_all(app: pageq.App) -> None:
    """11 jobs in `mon` (6 ok, 3 flaky, 2 doomed: 9 succeed after 3 failed attempts, 2 die after 4), 4 in
    `bulk`."""
    tasks = [("ok", 6), ("flaky", 3), ("doomed", 2), ("bulk", 4)]
    app.enqueue_many([app.get_task(name).job(n=i) for name, count in tasks for i in range(count)])


app = register(pageq.App())  # for `pageq worker apps.monitored:app` (PAGEQ_DSN, PAGEQ_SCHEMA)
