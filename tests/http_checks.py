"""Checks of the named queries the HTTP API added (request nonces, lease_get, jobs_list's pages); they
register with @covers."""

from __future__ import annotations

from datetime import timedelta

from pageq import JobState
from pageq.store import ops, secops
from test_queries import T0, Q, covers


@covers("nonce_use", "nonce_prune")
def check_nonces(q: Q) -> None:
    later = T0 + timedelta(seconds=600)
    assert q.run(secops.nonce_use("k1", "n1", later, T0)) is True
    assert q.run(secops.nonce_use("k1", "n1", later, T0)) is False  # a replay
    assert q.run(secops.nonce_use("k2", "n1", later, T0)) is True  # nonces are per key
    assert q.run(secops.nonce_prune(T0)) == 0
    after = later + timedelta(seconds=1)
    assert (
        q.run(secops.nonce_use("k1", "n1", after + timedelta(seconds=600), after)) is True
    )  # expired: reused
    assert q.run(secops.nonce_prune(after)) == 1
    assert q.sql("SELECT key_id, nonce FROM {s}.request_nonces") == [("k1", "n1")]


@covers("lease_get")
def check_lease_get(q: Q) -> None:
    (job_id,) = q.add(queue="qq", max_attempts=4)
    held = q.run(ops.lease_get(job_id))
    assert (held.task, held.queue, held.state, held.attempts, held.lease_token) == (
        "t",
        "qq",
        "queued",
        0,
        None,
    )
    (claimed,) = q.claim(("qq",))
    held = q.run(ops.lease_get(job_id))
    assert (held.state, held.attempts, held.max_attempts, held.worker) == (JobState.RUNNING, 1, 4, "w1")
    assert held.lease_token == claimed.lease_token and (held.group_key, held.linked) == (None, False)
    (done,) = q.finished(JobState.SUCCEEDED)
    assert q.run(ops.lease_get(done)) is None and q.run(ops.lease_get(10**12)) is None


def check_jobs_list_pages(q: Q) -> None:
    """jobs_list's cursor and time filters (its other filters are checked in test_queries)."""
    early = q.add(2)
    q.clock.advance(60)
    late = q.add(2)
    done = q.finished(JobState.SUCCEEDED, 1)

    def ids(**kw: object) -> list[int]:
        return [j.id for j in q.run(ops.jobs_list(None, None, None, 50, **kw))]  # type: ignore[arg-type]

    newest = sorted([*early, *late, *done], reverse=True)
    assert ids(before_id=newest[1]) == newest[2:]
    assert ids(since=T0 + timedelta(seconds=60)) == sorted([*late, *done], reverse=True)
    assert ids(until=T0 + timedelta(seconds=60)) == sorted(early, reverse=True)
    page = q.app.page_jobs(limit=2)
    assert [j.id for j in page.jobs] == newest[:2] and page.next_before_id == newest[1]
    last = q.app.page_jobs(limit=10, before_id=page.next_before_id)
    assert [j.id for j in last.jobs] == newest[2:] and last.next_before_id is None
