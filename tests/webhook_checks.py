"""Checks of the webhook and event queries (sql/queries/webhooks.sql); they register with @covers."""

from __future__ import annotations

from datetime import timedelta

import pytest

import pageq
from pageq.store import hookops
from test_queries import T0, Q, covers


def _hook(q: Q, webhook: int, events: list[str], actions: list[str], enabled: bool = True) -> int:
    new = hookops.NewWebhook(
        webhook, "https://example.com/h", events, actions, "*", "t", "%", "t", "whsec_x" * 4, "whsec_...x",
        3, 5.0, "d", enabled,
    )  # fmt: skip
    return q.run(hookops.create(new, q.now()))


@covers("webhook_next_id", "webhook_create", "webhooks_list", "event_routes")
def check_create(q: Q) -> None:
    first, second = q.run(hookops.next_id()), q.run(hookops.next_id())
    assert second == first + 1
    q.app.security.audit_level("actions")
    with pytest.raises(pageq.InvalidOptionError, match="audit level full"):
        _hook(q, second, ["job.succeeded"], ["complete"])
    assert _hook(q, second, ["job.succeeded"], ["complete"], enabled=False) == second
    q.app.security.audit_level("full")
    assert _hook(q, first, ["job.dead"], ["bury"]) == first
    assert q.run(hookops.routes()) == (["bury"], [])
    (row,) = q.run(hookops.listed(first))
    assert row[:9] == (first, "https://example.com/h", ["job.dead"], "*", "t", "whsec_...x", True, 3, 5.0)
    assert row[10] == T0 and row[12:] == (None, 0, 0)
    assert [r[0] for r in q.run(hookops.listed())] == [first, second]


@covers("webhook_set_enabled", "webhook_delete")
def check_enable_delete(q: Q) -> None:
    webhook = _hook(q, q.run(hookops.next_id()), ["job.cancelled"], ["cancel"])
    assert q.run(hookops.set_enabled(webhook, False, q.now())) is True
    assert q.run(hookops.routes()) == ([], [])
    assert q.run(hookops.set_enabled(webhook, True, q.now())) is True
    assert q.run(hookops.routes()) == (["cancel"], [])
    assert q.run(hookops.set_enabled(webhook + 1, True, q.now())) is False
    assert q.run(hookops.delete(webhook, q.now())) is True
    assert q.run(hookops.delete(webhook, q.now())) is False
    assert q.run(hookops.routes()) == ([], [])
    actions = [r[0] for r in q.sql("SELECT action FROM {s}.audit WHERE action LIKE 'webhook.%%' ORDER BY id")]
    assert actions == ["webhook.create", "webhook.disable", "webhook.enable", "webhook.delete"]


@covers("webhook_rotate", "webhook_target", "webhooks_active")
def check_rotate_and_target(q: Q) -> None:
    assert q.run(hookops.active()) is False
    webhook = _hook(q, q.run(hookops.next_id()), ["job.enqueued"], ["enqueue"])
    assert q.run(hookops.active()) is True
    (job_id,) = q.add()
    ((event,),) = q.sql("SELECT id FROM {s}.audit WHERE action = 'enqueue' AND job_id = %s", [job_id])
    real = (event, job_id, "job.enqueued")
    target = q.run(hookops.target(webhook, q.now(), real))
    assert target == ("https://example.com/h", True, 5.0, "whsec_x" * 4, None, True)
    for forged in (
        (event, job_id, "job.dead"),
        (event, job_id + 1, "job.enqueued"),
        (event + 99, job_id, "x"),
    ):
        assert q.run(hookops.target(webhook, q.now(), forged))[5] is False
    later = q.now() + timedelta(hours=1)
    assert q.run(hookops.rotate(webhook, "whsec_y" * 4, "whsec_...y", later, q.now())) is True
    assert q.run(hookops.target(webhook, q.now(), real))[3:5] == ("whsec_y" * 4, "whsec_x" * 4)
    assert q.run(hookops.target(webhook, later, real))[3:5] == ("whsec_y" * 4, None)  # the old one expired
    assert q.run(hookops.rotate(webhook, "whsec_z" * 4, "whsec_...z", q.now(), q.now())) is True
    assert q.run(hookops.target(webhook, q.now(), real))[3:5] == ("whsec_z" * 4, None)
    assert q.run(hookops.rotate(webhook + 1, "s", "h", later, q.now())) is False
    assert q.run(hookops.target(webhook + 1, q.now(), real)) is None
    q.run(hookops.set_enabled(webhook, False, q.now()))
    assert q.run(hookops.active()) is True  # its delivery still waits
    q.sql("DELETE FROM {s}.jobs WHERE queue = 'pageq.webhooks'")
    assert q.run(hookops.active()) is False


@covers("webhook_log", "webhook_deliveries", "webhook_deliveries_prune")
def check_log(q: Q) -> None:
    webhook = _hook(q, q.run(hookops.next_id()), ["job.dead"], ["bury"])
    for attempt, outcome in enumerate(["failed", "delivered"], start=1):
        entry = hookops.Attempt(webhook, 7, 9, "job.dead", attempt, q.now() + timedelta(seconds=attempt),
                                outcome, 500 if outcome == "failed" else 200, 0.01, None)  # fmt: skip
        assert q.run(hookops.log(entry)) == 1
    assert q.run(hookops.log(hookops.Attempt(webhook + 1, 7, 9, "job.dead", 1, q.now(), "failed"))) == 0
    rows = q.run(hookops.deliveries(webhook, 10))
    assert [(r[5], r[7], r[8]) for r in rows] == [(2, "delivered", 200), (1, "failed", 500)]
    assert q.run(hookops.deliveries(webhook, 10, before_id=rows[0][0])) == rows[1:]
    assert q.run(hookops.listed(webhook))[0][13:] == (1, 1)
    assert q.run(hookops.prune(q.now() + timedelta(seconds=2))) == 1
    assert len(q.run(hookops.deliveries(webhook, 10))) == 1


@covers("events_listen", "events_sweep")
def check_listeners(q: Q) -> None:
    soon = q.now() + timedelta(seconds=30)
    assert q.run(hookops.listen("a", ["bury", "claim"], soon, q.now())) == 2
    assert q.run(hookops.listen("b", ["bury"], soon + timedelta(seconds=30), q.now())) == 2
    assert q.run(hookops.routes()) == (["bury", "claim"], ["bury", "claim"])
    assert q.run(hookops.listen("a", ["bury", "claim"], soon, q.now())) == 2  # a renewal
    assert q.run(hookops.sweep(q.now())) == 0
    assert q.run(hookops.sweep(soon)) == 1  # a expired; b is left
    assert q.run(hookops.routes()) == (["bury"], ["bury"])
    assert q.run(hookops.listen("b", None, q.now(), q.now())) == 2
    assert q.run(hookops.routes()) == ([], [])


@covers("events_channel")
def check_events_channel(q: Q) -> None:
    import asyncio

    from pageq.store import Listener

    @q.app.task(name="dies", max_attempts=1)
    def dies() -> None: ...

    async def main() -> str:
        listener = Listener(q.dsn, q.schema, "events_channel")
        await listener.connect()
        q.seen.add("events_channel")  # a Listener renders its query itself
        q.run(hookops.listen("l", ["enqueue"], q.now() + timedelta(seconds=30), q.now()))
        job_id = await asyncio.to_thread(q.app.enqueue, "dies")
        async for payload in listener.notifications():
            await listener.close()
            assert f'"id": {job_id}' in payload
            return payload
        raise AssertionError("no notification")

    assert '"job.enqueued"' in asyncio.run(main())


@covers("webhook_secrets_sealed", "webhook_secrets_reseal")
def check_reseal(q: Q) -> None:
    import base64

    from pageq.security.crypto import Keyring, new_key
    from pageq.webhooks.deliver import reveal_secret

    old, new = Keyring.parse(f"k1:{new_key()}"), new_key()
    q.app.keyring = old
    plain = _hook(q, q.run(hookops.next_id()), ["job.dead"], ["bury"])
    hook, secret = q.app.webhooks.create("https://example.com/k", ["job.dead"])
    q.app.webhooks.rotate_secret(hook.id, keep_old=3600)
    ((found, sealed, sealed_old),) = q.run(hookops.secrets_sealed("k2"))
    assert (
        found == hook.id and sealed["$enc"].startswith("v1.k1.") and sealed_old["$enc"].startswith("v1.k1.")
    )
    both = Keyring({"k2": base64.b64decode(new), "k1": old.keys["k1"]}, "k2")
    assert q.app.webhooks.reencrypt_secrets(both) == (1, 0)
    assert q.run(hookops.secrets_sealed("k2")) == []
    q.app.keyring = Keyring({"k2": both.keys["k2"]}, "k2")  # k1 retired
    stored = q.run(hookops.target(hook.id, q.now(), (0, 0, "")))
    assert reveal_secret(q.app, hook.id, stored[4]) == secret  # the old one, still signing for an hour
    assert (
        q.run(hookops.secrets_reseal(hook.id, (sealed, sealed_old), (sealed, None))) is False
    )  # changed since
    assert q.run(hookops.target(plain, q.now(), (0, 0, "")))[3] == "whsec_x" * 4  # clear ones are left alone
