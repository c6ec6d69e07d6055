"""The app the HTTP API tests and docs/http-api.md serve (``pageq serve apps.http_app:app``)."""

from __future__ import annotations

import pageq

app = pageq.App()


@app.task(name="email.send", queue="emails", max_attempts=3)
def send_email(to: str, subject: str = "") -> dict[str, str]:
    """Done by remote workers in the examples; here too, for a Python worker."""
    return {"sent": to}


@app.task(name="report.build", queue="reports")
def build_report(n: int = 0) -> int:
    return n * 2
