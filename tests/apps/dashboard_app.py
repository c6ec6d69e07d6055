"""The app the dashboard tests serve and work (``pageq serve apps.dashboard_app:app`` and ``pageq worker
apps.dashboard_app:app``): jobs that succeed, take a moment, fail once, or always fail."""

from __future__ import annotations

import time

import pageq

AGAIN = pageq.Backoff.constant(0.05)
QUEUES = ("mail", "reports", "held")


def register(app: pageq.App) -> pageq.App:
    """Register the dashboard tests' tasks on ``app``."""

    @app.task(name="mail.send", queue="mail")
    def send(to: str) -> dict[str, str]:
        return {"sent": to}

    @app.task(name="report.build", queue="reports", retry=AGAIN)
    def build(ctx: pageq.Context, n: int, fail_first: bool = False) -> int:
        time.sleep(0.05)
        if fail_first and ctx.attempt == 1:
            raise RuntimeError("the first attempt fails")
        return n * 2

    @app.task(name="report.doomed", queue="reports", max_attempts=2, retry=AGAIN)
    def doomed(n: int) -> None:
        raise ValueError(f"report {n} cannot be built")

    @app.task(name="held.wait", queue="held")
    def wait(n: int) -> int:
        return n

    return app


app = register(pageq.App())
