"""The hot queries use their indexes: EXPLAIN on a table of ~20k jobs, analysed like autovacuum would.

2,000 of the jobs are running (the leases of a large fleet of workers), 50 of them with expired leases (a
dead worker's), and each transition acknowledges a batch of ten. With only a few hundred running jobs,
reading the whole partial lease index costs the planner as much as probing the primary key, and it may
legitimately do either; with a thousand expired leases, a hash join over the table beats a thousand probes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

import pageq
from pageq.store import dispatch, ops
from pageq.store.explain import explain

JOBS = 20_000
RUNNING = 2_000
BATCH = 10
EXPIRED = 50
QUEUES = [f"q{i}" for i in range(10)]
NOW = datetime(2030, 1, 1, tzinfo=UTC)


# rows for the plans of the dispatcher's sweeps: unique keys (one in ten with a window), dependencies
SIDE_TABLES = """
INSERT INTO {s}.unique_keys (key, job_id, states, expires_at)
SELECT 'k' || i, i, '{queued}', CASE WHEN i % 10 = 0 THEN now() + interval '1 hour' END
FROM generate_series(1, 20000) AS i;
INSERT INTO {s}.job_deps (child_id, parent_id, ord, on_failure, satisfied)
SELECT i, i / 4 + 1, 1, 'cancel', i % 2 = 0 FROM generate_series(1, 20000) AS i;
"""


@dataclass(frozen=True)
class Loaded:
    app: pageq.App
    leases: list[ops.Lease]
    parents: dict[str, str]  # partition (or partition's index) -> partitioned table (or index)
    empty: set[str]  # partitions without rows (the other rotation slot...): scanning them costs nothing


def specs(count: int) -> list[pageq.JobSpec]:
    """Jobs spread over queues and priorities; one in five scheduled an hour ahead."""
    return [
        pageq.JobSpec(
            task="work",
            args={"n": i},
            queue=QUEUES[i % len(QUEUES)],
            priority=i % 3,
            max_attempts=5,
            timeout=None,
            delay=3600.0 if i % 5 == 0 else None,
        )
        for i in range(count)
    ]


@pytest.fixture(scope="module")
def loaded(dsn: str) -> Iterator[Loaded]:
    """One schema for the module: 20k jobs, 2k of them running, statistics up to date.

    The leases of the first 50 running jobs expire after 30 s, the others' are extended to 10 minutes.
    """
    app = pageq.App(dsn, schema=f"t_{uuid.uuid4().hex[:12]}", clock=pageq.FrozenClock(NOW))
    app.migrate()
    try:
        app.enqueue_many(specs(JOBS))
        claimed = app.store.run(ops.claim(QUEUES[1:4], RUNNING, NOW, 30.0, "explain-test"))
        leases = [ops.Lease(job.id, uuid.UUID(str(job.lease_token))) for job in claimed]
        app.store.run(ops.heartbeat(leases[EXPIRED:], NOW, 600.0))
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(SIDE_TABLES.replace("{s}", app.schema))
            conn.execute(f"ANALYZE {app.schema}.unique_keys, {app.schema}.job_deps")
            conn.execute(f"ANALYZE {app.schema}.jobs")
            conn.execute(f"ANALYZE {app.schema}.finished_jobs")
            parents = dict(
                conn.execute(
                    "SELECT c.relname::text, p.relname::text FROM pg_inherits AS i"
                    " JOIN pg_class AS c ON c.oid = i.inhrelid JOIN pg_class AS p ON p.oid = i.inhparent"
                    " WHERE c.relnamespace = %s::regnamespace",
                    (app.schema,),
                ).fetchall()
            )
            tables = [name for (name,) in conn.execute(
                "SELECT c.relname::text FROM pg_inherits AS i JOIN pg_class AS c ON c.oid = i.inhrelid"
                " WHERE c.relnamespace = %s::regnamespace AND c.relkind = 'r'",
                (app.schema,),
            )]  # fmt: skip
            empty = {
                name
                for name in tables
                if conn.execute(f"SELECT NOT EXISTS (SELECT FROM {app.schema}.{name})").fetchone() == (True,)
            }
        yield Loaded(app, leases, parents, empty)
    finally:
        app.close()
        app.drop_schema()


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def plan_of(loaded: Loaded, op: ops.Op[Any]) -> list[dict[str, Any]]:
    """Every node of the plan of ``op``'s named query with its parameters; a partition's table and index
    names are replaced by those of the partitioned table (`jobs_p0` is reported as `jobs`), except for
    partitions without rows."""
    text = explain(loaded.app.store, op.query, op.params)
    found = list(nodes(json.loads(text)[0]["Plan"]))
    for node in found:
        for key in ("Index Name", "Relation Name"):
            if key in node and node.get("Relation Name") not in loaded.empty:
                node[key] = loaded.parents.get(node[key], node[key])
    return found


def index_scans(plan: list[dict[str, Any]]) -> set[str]:
    return {node["Index Name"] for node in plan if "Index Name" in node}


def seq_scanned(plan: list[dict[str, Any]]) -> set[str]:
    return {node["Relation Name"] for node in plan if node["Node Type"] == "Seq Scan"}


def errors(count: int) -> list[str]:
    return [json.dumps({"attempt": 1, "error": "boom"})] * count


@pytest.mark.parametrize("queues", [["q4"], ["q4", "q5"], QUEUES])
def test_claim_uses_the_claim_index(loaded: Loaded, queues: list[str]) -> None:
    plan = plan_of(loaded, ops.claim(queues, 50, NOW, 30.0, "w"))
    assert "jobs_claim_idx" in index_scans(plan), plan
    assert "jobs" not in seq_scanned(plan), plan


@pytest.mark.parametrize("limit", [50, 500, 2000])
def test_claim_updates_by_primary_key_whatever_the_batch(loaded: Loaded, limit: int) -> None:
    """A big claim batch once made the planner hash-join the whole backlog; it must probe the key."""
    plan = plan_of(loaded, ops.claim(["q0"], limit, NOW, 30.0, "w"))
    assert "jobs_pkey" in index_scans(plan), plan
    assert "jobs" not in seq_scanned(plan), plan


def test_rescue_uses_the_lease_index(loaded: Loaded) -> None:
    plan = plan_of(loaded, ops.rescue(NOW + timedelta(minutes=1)))
    assert "jobs_lease_idx" in index_scans(plan), plan
    assert "jobs" not in seq_scanned(plan), plan


def leased_ops(loaded: Loaded) -> list[ops.Op[Any]]:
    leases = loaded.leases[:: RUNNING // BATCH]
    return [
        ops.complete(leases, ["true"] * len(leases), NOW),
        ops.retry(leases, [NOW + timedelta(seconds=10)] * len(leases), errors(len(leases))),
        ops.bury(leases, errors(len(leases)), NOW),
        ops.heartbeat(leases, NOW, 30.0),
        ops.release(leases, NOW),
    ]


@pytest.mark.parametrize("index", range(5), ids=["complete", "retry", "bury", "heartbeat", "release"])
def test_transitions_of_running_jobs_hit_the_primary_key(loaded: Loaded, index: int) -> None:
    plan = plan_of(loaded, leased_ops(loaded)[index])
    assert "jobs_pkey" in index_scans(plan), plan
    assert "jobs" not in seq_scanned(plan), plan


@pytest.mark.parametrize("queues", [["q4"], QUEUES])
def test_controlled_claim_uses_the_claim_index(loaded: Loaded, queues: list[str]) -> None:
    plan = plan_of(loaded, dispatch.claim_controlled(queues, 50, NOW, 30.0, "w"))
    assert "jobs_claim_idx" in index_scans(plan), plan
    assert "jobs_pkey" in index_scans(plan), plan
    assert "jobs" not in seq_scanned(plan), plan


SWEEP_STEPS = {  # one step of each loose index scan of resolve_sweep() (every second, on the leader)
    "jobs_group_idx": "SELECT j.group_key FROM {s}.jobs j WHERE j.group_key > 'g'"
    " ORDER BY j.group_key LIMIT 1",
    "job_deps_parent_idx": "SELECT d.parent_id FROM {s}.job_deps d WHERE NOT d.satisfied AND d.parent_id > 7"
    " ORDER BY d.parent_id LIMIT 1",
    "unique_keys_expires_idx": "SELECT u.key FROM {s}.unique_keys u WHERE u.expires_at < now()"
    " ORDER BY u.expires_at LIMIT 5000",
    "unique_keys_job_idx": "SELECT u.key FROM {s}.unique_keys u WHERE u.job_id > 7"
    " ORDER BY u.job_id LIMIT 5000",
}


@pytest.mark.parametrize("index", sorted(SWEEP_STEPS))
def test_sweeps_read_their_index_page_by_page(loaded: Loaded, index: str) -> None:
    """The sweeps' statements run inside SQL functions; these are their scans, each bounded by its LIMIT."""
    store = loaded.app.store
    with psycopg.connect(store.dsn, autocommit=True) as conn:
        query = "EXPLAIN (FORMAT JSON) " + SWEEP_STEPS[index].replace("{s}", store.schema)
        row = conn.execute(query).fetchone()
    assert row is not None
    plan = list(nodes(row[0][0]["Plan"]))
    for node in plan:
        for key in ("Index Name", "Relation Name"):
            if key in node and node.get("Relation Name") not in loaded.empty:
                node[key] = loaded.parents.get(node[key], node[key])
    assert index in index_scans(plan), plan
    assert not seq_scanned(plan) - loaded.empty, plan
