"""What the HTTP API tests share: a served app with four principals, and a client per principal."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from fastapi.testclient import TestClient

import pageq
from pageq.http import Settings, create_app

PRINCIPALS = {
    "admin": [("*", "*", "*", True)],
    "producer": [("enqueue", "*", "email.*", True), ("read", "*", "email.*", True)],
    "worker": [("work", "*", "email.send", True)],
    "nobody": [],
}


def define_tasks(app: pageq.App) -> None:
    @app.task(name="email.send", queue="emails", max_attempts=3)
    def send(to: str, subject: str = "") -> dict[str, str]:
        return {"sent": to}

    @app.task(name="report.build", queue="reports")
    def build(n: int = 0) -> None: ...


@dataclass
class Api:
    """A served app and a client for each principal (``client(None)``: no credentials)."""

    app: pageq.App
    http: TestClient
    tokens: dict[str, str] = field(default_factory=dict)
    token_ids: dict[str, int] = field(default_factory=dict)

    def headers(self, who: str | None) -> dict[str, str]:
        return {} if who is None else {"Authorization": f"Bearer {self.tokens[who]}"}

    def call(
        self, who: str | None, method: str, path: str, body: Any = None, **kwargs: Any
    ) -> httpx.Response:
        headers = {**self.headers(who), **kwargs.pop("headers", {})}
        return self.http.request(method, path, json=body, headers=headers, **kwargs)

    def count(self) -> int:
        """Jobs stored, live and finished (as the owner sees them)."""
        return sum(sum(stats.counts.values()) for stats in self.app.queue_stats())


def serve(app: pageq.App, settings: Settings | None = None) -> Iterator[Api]:
    define_tasks(app)
    api = Api(app, TestClient(create_app(app, settings or Settings()), raise_server_exceptions=False))
    for name, grants in PRINCIPALS.items():
        app.security.create_principal(name)
        for action, queue, task, allow in grants:
            app.security.grant(name, action, queue=queue, task=task, allow=allow)
        api.token_ids[name], api.tokens[name] = app.security.create_token(name)
    with api.http:
        yield api
