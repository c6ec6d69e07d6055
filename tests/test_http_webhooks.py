"""The webhook routes of the HTTP API: the manage grant, the secret shown once, problem details."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import pageq
from http_helpers import Api, serve
from test_http import problem


@pytest.fixture
def api(app: pageq.App) -> Iterator[Api]:
    yield from serve(app)


def test_webhooks_over_http(api: Api) -> None:
    new = {"url": "https://example.com/h", "events": ["job.dead"], "queue": "email*", "max_attempts": 3}
    created = api.call("admin", "POST", "/v1/webhooks", new)
    assert created.status_code == 201, created.json()
    body = created.json()
    hook, secret = body["webhook"], body["secret"]
    assert created.headers["location"] == f"/v1/webhooks/{hook['id']}"
    assert secret.startswith("whsec_") and hook["secret_hint"].endswith(secret[-4:])
    assert (hook["events"], hook["queue"], hook["task"], hook["enabled"]) == (
        ["job.dead"],
        "email*",
        "*",
        True,
    )
    path = f"/v1/webhooks/{hook['id']}"
    listed = api.call("admin", "GET", "/v1/webhooks").json()["webhooks"]
    assert [h["id"] for h in listed] == [hook["id"]] and secret not in str(listed)
    assert api.call("admin", "POST", f"{path}/disable").json()["enabled"] is False
    assert api.call("admin", "POST", f"{path}/enable").json()["enabled"] is True
    rotated = api.call("admin", "POST", f"{path}/rotate-secret", {"keep_old": 60}).json()
    assert rotated["webhook"] == hook["id"] and rotated["secret"] != secret
    assert api.call("admin", "GET", path).json()["old_secret_until"] is not None
    assert api.call("admin", "POST", f"{path}/rotate-secret").status_code == 200  # the body is optional
    deliveries = api.call("admin", "GET", f"{path}/deliveries?limit=10").json()
    assert deliveries == {"deliveries": [], "next_before_id": None}
    assert api.call("admin", "DELETE", path).status_code == 204
    problem(api.call("admin", "GET", path), 404, "not_found")
    problem(api.call("admin", "DELETE", path), 404, "not_found")
    problem(api.call("admin", "GET", f"{path}/deliveries"), 404, "not_found")


def test_webhook_routes_need_the_manage_grant(api: Api) -> None:
    for who in ("producer", "worker", "nobody"):
        problem(api.call(who, "POST", "/v1/webhooks", {"url": "https://example.com/h"}), 403, "forbidden")
        problem(api.call(who, "GET", "/v1/webhooks"), 403, "forbidden")
    problem(api.call(None, "GET", "/v1/webhooks"), 401, "unauthenticated")
    assert api.app.webhooks.list() == []


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"url": "https://example.com/h", "events": ["job.exploded"]}, 400),
        ({"url": "https://example.com/h", "events": []}, 400),
        ({"url": "https://example.com/h", "queue": "a b"}, 400),
        ({"url": "https://example.com/h", "timeout": 301}, 400),
        ({"url": "https://example.com/h", "extra": 1}, 400),
        ({"url": "ftp://example.com/h"}, 422),
        ({"url": "https://user:pw@example.com/h"}, 422),
    ],
)
def test_bad_webhooks_are_refused(api: Api, body: dict[str, object], status: int) -> None:
    problem(api.call("admin", "POST", "/v1/webhooks", body), status)
    assert api.app.webhooks.list() == []


def test_webhooks_refused_by_the_audit_level_answer_422(api: Api) -> None:
    api.app.security.audit_level("actions")
    found = problem(
        api.call("admin", "POST", "/v1/webhooks", {"url": "https://example.com/h"}), 422, "invalid"
    )
    assert "audit level full" in str(found["detail"])
    ok = api.call(
        "admin", "POST", "/v1/webhooks", {"url": "https://example.com/h", "events": ["job.enqueued"]}
    )
    assert ok.status_code == 201
