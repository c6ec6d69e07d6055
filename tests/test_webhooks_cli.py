"""`pageq webhooks ...` as a real subprocess: create (the secret printed once), list, disable, rotate-secret,
deliveries, delete, and bad input as one line."""

from __future__ import annotations

import pageq
from test_cli import error, ok, ok_json


def test_webhooks_commands(app: pageq.App, env: dict[str, str]) -> None:
    made = ok_json(env, "webhooks", "create", "https://example.com/h", "--events", "job.dead,job.retrying",
                   "--queue", "emails", "--max-attempts", "3")  # fmt: skip
    hook, secret = made["webhook"], made["secret"]
    assert hook["events"] == ["job.dead", "job.retrying"] and secret.startswith("whsec_")
    listed = ok(env, "webhooks", "list")
    assert "https://example.com/h" in listed and hook["secret_hint"] in listed and secret not in listed
    ok(env, "webhooks", "disable", str(hook["id"]))
    assert app.webhooks.get(hook["id"]).enabled is False
    rotated = ok_json(env, "webhooks", "rotate-secret", str(hook["id"]), "--keep-old", "0")
    assert rotated["secret"] != secret and app.webhooks.get(hook["id"]).secret_hint.endswith(
        rotated["secret"][-4:]
    )
    assert ok_json(env, "webhooks", "deliveries", str(hook["id"])) == []
    ok(env, "webhooks", "delete", str(hook["id"]), "--yes")
    assert app.webhooks.list() == []
    assert "unknown event types" in error(
        env, "webhooks", "create", "https://example.com/h", "--events", "job.x"
    )
    assert "no webhook with id 99" in error(env, "webhooks", "enable", "99")
