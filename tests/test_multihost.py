"""Three worker hosts and a database host (network namespaces on a bridge): claims, leases, leader election
and rescue across hosts, with the leader's host cut off the network mid-run and brought back.

Each `mark` job writes its side effect in its own transaction together with its completion, so the ledger
holds exactly one row per job whatever happens; `stall_once` jobs stay running long enough to be caught by
the cut. Every job id is counted: 0 lost, 0 doubled effects.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pageq
from apps.ledger import mark, stall_once
from multihost import Forwarder, Topology, available
from test_processes import wait_for

pytestmark = pytest.mark.skipif(available() is not None, reason=str(available()))

WORKER = ["--lease", "2", "--heartbeat", "0.5", "--poll-interval", "0.2", "--maintenance-interval", "0.3"]


def sql(dsn: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


@pytest.fixture
def topology() -> Iterator[Topology]:
    with Topology.build(3) as topo:
        yield topo


def test_three_hosts_survive_the_leader_host_cut_off(
    app: pageq.App, env: dict[str, str], topology: Topology, tmp_path: Path
) -> None:
    s = app.schema
    dsn = app.database.dsn
    sql(dsn, f"CREATE TABLE {s}.ledger (job_id bigint, pid int, note text, at timestamptz DEFAULT now())")
    sql(dsn, f"CREATE UNIQUE INDEX ON {s}.ledger (job_id) WHERE note = 'mark'")  # the side effect, once
    stalled = app.enqueue_many([stall_once.job(seconds=4.0) for _ in range(12)])
    marked = app.enqueue_many([mark.job(n=n) for n in range(600)])

    with Forwarder(dsn, topology.gateway) as db:
        procs: dict[str, subprocess.Popen[bytes]] = {}
        # the forwarder speaks plain TCP on the bridge: a remote host to pageq's TLS policy, so opt out of it
        child = dict(env, PAGEQ_DSN=db.dsn(), PGSSLMODE="disable", PAGEQ_ALLOW_INSECURE_DB="1")
        try:
            for host in topology.hosts:
                argv = [sys.executable, "-m", "pageq", "worker", "apps.ledger:app", "--queues", "slow,ledger"]
                log = (tmp_path / f"{host.name}.log").open("wb")
                procs[host.name] = subprocess.Popen(
                    host.command([*argv, "--concurrency", "4", *WORKER]), env=child, stdout=log, stderr=log
                )
            pid_host = {p.pid: name for name, p in procs.items()}

            def leader() -> str | None:
                rows = sql(dsn, f"SELECT holder FROM {s}.leader WHERE expires_at > now()")
                if not rows:
                    return None
                pid = int(rows[0][0].split(":")[1])
                return pid_host.get(pid)

            def hosts_running_stalls() -> set[str]:
                rows = sql(dsn, f"SELECT DISTINCT pid FROM {s}.ledger WHERE note = 'start 1'")
                return {pid_host[pid] for (pid,) in rows if pid in pid_host}

            wait_for(lambda: len(hosts_running_stalls()) == 3, 60, "every host to run a stalled job", 0.2)
            victim_name = wait_for(leader, 30, "a leader", 0.1)
            victim = next(h for h in topology.hosts if h.name == victim_name)
            victim_pid = procs[victim.name].pid
            victim.cut()  # the leader's host drops off the network with jobs in hand
            query = (
                f"SELECT job_id FROM {s}.ledger WHERE note = 'start 1' AND pid = %s"
                f" EXCEPT SELECT job_id FROM {s}.ledger WHERE note = 'end 1'"
            )
            caught = [job_id for (job_id,) in sql(dsn, query, victim_pid)]
            assert caught, "the cut-off host held no stalled job"
            (cut_at,) = sql(dsn, "SELECT now()")[0]

            # another host takes over leadership, rescues the orphans, and everything finishes
            wait_for(lambda: leader() not in (None, victim.name), 30, "a new leader on another host", 0.1)

            def done() -> bool:
                return all(app.get_job(i).state is pageq.JobState.SUCCEEDED for i in [*stalled, *marked])

            wait_for(done, 90, "every job to succeed without the cut-off host", 0.5)

            victim.restore()  # it comes back: its late acknowledgements must change nothing
            time.sleep(6)
            for host_name, proc in procs.items():
                assert proc.poll() is None, (host_name, (tmp_path / f"{host_name}.log").read_text()[-2000:])
        finally:
            for proc in procs.values():
                proc.kill()
                proc.wait(10)

    # 0 lost, 0 doubled effects, the orphans re-ran elsewhere and finished there
    effects = dict(sql(dsn, f"SELECT job_id, count(*) FROM {s}.ledger WHERE note = 'mark' GROUP BY job_id"))
    assert set(effects) == set(marked) and set(effects.values()) == {1}
    assert all(app.get_job(i).state is pageq.JobState.SUCCEEDED for i in [*stalled, *marked])
    for job_id in caught:
        job = app.get_job(job_id)
        assert job.attempts == 2 and job.errors[0].error.startswith("LeaseExpired"), job
        assert job.worker is not None and f":{victim_pid}:" not in job.worker
    # each orphan was rescued within lease 2 s + a new leader (3 x 0.3 s) + rescue 0.3 s + heartbeat 0.5 s,
    # plus slack for a loaded machine (it then waits for a free slot behind the other jobs)
    rescued = [datetime.fromisoformat(app.get_job(job_id).errors[0].at) for job_id in caught]
    delays = sorted(round((at - cut_at).total_seconds(), 2) for at in rescued)
    assert delays[-1] < 2 + 0.9 + 0.3 + 0.5 + 4, delays
    print(f"host {victim.name} cut off with {len(caught)} running jobs; rescued after {delays} s")
    assert os.environ.get("PAGEQ_SCHEMA", "") != s  # the test never leaked its schema into our environment
