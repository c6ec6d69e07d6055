"""What the statistics rollup costs the leader: one minute of N finished jobs, with a live backlog.

Usage: python bench/stats_rollup.py [JOBS_PER_MINUTE] [BACKLOG] [MINUTES]   (embedded server, or PAGEQ_DSN)

Jobs go through the real path with a pinned clock: enqueued (COPY), claimed and finished (batches of 500)
through each of MINUTES consecutive minutes, 10 % of the attempts failing (retried, then done) and 1 % of
the jobs dying; BACKLOG more jobs stay scheduled (the rollup reads the live jobs once per minute). Each minute
is rolled up as the leader does, once it has settled; the report gives the median time of a call.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import pageq
from pageq.store import ops, statsops

N = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
BACKLOG = int(sys.argv[2]) if len(sys.argv) > 2 else 0
MINUTES = int(sys.argv[3]) if len(sys.argv) > 3 else 3
T0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
BATCH = 500

clock = pageq.FrozenClock(T0)
app = pageq.App(schema=f"bench_stats_{uuid.uuid4().hex[:6]}", clock=clock)


@app.task(queue="bench")
def noop(i: int) -> None: ...


@app.task(queue="backlog")
def later(i: int) -> None: ...


def error(at: datetime) -> str:
    return json.dumps({"attempt": 1, "error": "Boom", "worker": "w", "at": at.isoformat()})


def one_minute(minute: datetime) -> None:
    """N jobs enqueued at ``minute``, claimed and finished through the next 59 seconds."""
    clock.set(minute)
    for start in range(0, N, 10_000):
        app.enqueue_many([noop.job(i=i) for i in range(start, min(N, start + 10_000))])
    done = 0
    while done < N:  # the clock only moves forward, so retried jobs (due at once) come back in a later batch
        clock.set(max(clock.now(), minute + timedelta(seconds=58.0 * done / N)))
        jobs = app.store.run(ops.claim(["bench"], BATCH, clock.now(), 30.0, "w"))
        leases = [ops.Lease(j.id, uuid.UUID(j.lease_token or "")) for j in jobs]
        fail, bury = leases[: len(leases) // 10], leases[len(leases) // 10 :][: len(leases) // 100]
        rest = leases[len(fail) + len(bury) :]
        clock.set(clock.now() + timedelta(seconds=0.5))
        now = clock.now()
        app.store.run(ops.retry(fail, [now] * len(fail), [error(now)] * len(fail)))
        app.store.run(ops.bury(bury, [error(now)] * len(bury), now))
        app.store.run(ops.complete(rest, [None] * len(rest), now))
        done += len(rest) + len(bury)


def main() -> None:
    app.migrate()
    try:
        for start in range(0, BACKLOG, 10_000):
            end = min(BACKLOG, start + 10_000)
            app.enqueue_many([later.job(i=i, delay=86400) for i in range(start, end)])
        app.store.run(statsops.rollup(T0 + timedelta(seconds=15), 10.0, 90_000.0, 1))  # starts: [T0 - 60, T0)
        timings = []
        for minute in (T0 + timedelta(minutes=k) for k in range(MINUTES)):
            one_minute(minute)  # then rolled up as the leader does, before the next minute's jobs exist
            app.store.run(ops.analyze_jobs())
            started = time.perf_counter()
            assert app.store.run(statsops.rollup(minute + timedelta(seconds=75), 10.0, 90_000.0, 1)) == 1
            timings.append(1000 * (time.perf_counter() - started))
        print(
            f"rollup of one minute of {N:,} finished jobs ({N // 10:,} failed attempts retried, {N // 100:,} "
            f"dead) with {BACKLOG:,} live jobs: median {statistics.median(timings):.0f} ms per minute "
            f"(min {min(timings):.0f}, max {max(timings):.0f}, {MINUTES} minutes)"
        )
    finally:
        app.close()
        app.drop_schema()


if __name__ == "__main__":
    main()
