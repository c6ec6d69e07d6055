"""Checks of the named queries the dashboard added or changed (jobs oldest first, search, purging ids, queue
controls audited, audit pages); they register with @covers or are called from the checks they extend."""

from __future__ import annotations

from typing import Any

from pageq import JobState
from pageq.store import dispatch, ops, secops
from test_queries import Q, covers


@covers("jobs_list_oldest")
def check_jobs_list_oldest(q: Q) -> None:
    early = q.add(2)
    (other,) = q.add(1, queue="other", task="u")
    done = q.finished(JobState.SUCCEEDED, 2)

    def ids(**kw: Any) -> list[int]:
        kw.setdefault("oldest", True)
        return [
            j.id for j in q.run(ops.jobs_list(kw.pop("states", None), None, kw.pop("task", None), 50, **kw))
        ]

    everything = sorted([*early, other, *done])
    assert ids() == everything and ids(after_id=everything[1]) == everything[2:]
    assert ids(states=[JobState.SUCCEEDED]) == done and ids(task="u") == [other]
    page = q.app.page_jobs(order="oldest", limit=2)
    assert [j.id for j in page.jobs] == everything[:2] and page.next_after_id == everything[1]
    assert page.next_before_id is None
    rest = q.app.page_jobs(order="oldest", limit=10, after_id=page.next_after_id)
    assert [j.id for j in rest.jobs] == everything[2:] and rest.next_after_id is None
    check_search(q, ids)


def check_search(q: Q, ids: Any) -> None:
    """``search``: digits are an id; other text a part of the task, worker, arguments or errors, any case."""
    (dead,) = q.finished(JobState.DEAD)  # its error is "Boom: x", its worker "w1"
    (argued,) = q.app.enqueue_many([q.app.get_task("t").job()])  # no arguments: found by its id only
    for oldest in (True, False):
        assert ids(search=str(dead), oldest=oldest) == [dead]
        assert ids(search="bOOm", oldest=oldest) == [dead]
        assert dead in ids(search="W1", oldest=oldest)
        assert ids(search=str(argued), oldest=oldest) == [argued]
        assert ids(search="no such text", oldest=oldest) == []
        assert set(ids(search="u", oldest=oldest)) >= set(ids(task="u", oldest=oldest))


def check_purge_ids(q: Q) -> None:
    """dlq_purge of chosen ids: only those, and only if dead."""
    dead = q.finished(JobState.DEAD, 3)
    (done,) = q.finished(JobState.SUCCEEDED)
    assert q.run(ops.dlq_purge(None, None, None, [dead[0], dead[1], done])) == 2
    assert q.run(ops.dlq_purge(None, None, None, [])) == 0
    assert {r[0] for r in q.sql("SELECT id FROM {s}.finished_jobs")} == {dead[2], done}


def check_control_audited(q: Q) -> None:
    """queue_control_set writes queue.pause / queue.resume / queue.limit with the new controls."""
    q.run(dispatch.queue_control_set("mail", q.store.channel, q.now(), paused=True))
    q.run(dispatch.queue_control_set("mail", q.store.channel, q.now(), concurrency=4))
    q.run(dispatch.queue_control_set("mail", q.store.channel, q.now(), paused=False))
    rows = q.run(secops.audit_list(None, None, "queue", None, None, None, 10))
    assert [(r.action, r.queue) for r in rows] == [("queue.resume", "mail"), ("queue.limit", "mail"),
                                                   ("queue.pause", "mail")]  # fmt: skip
    assert rows[1].detail == {"paused": True, "concurrency": 4, "rate_limit": None, "rate_period": None,
                              "weight": 1}  # fmt: skip
    before = q.run(secops.audit_list(None, None, None, None, None, None, 10, rows[1].id))
    assert [r.id for r in before][:1] == [rows[2].id] and all(r.id < rows[1].id for r in before)
