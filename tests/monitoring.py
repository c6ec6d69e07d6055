"""Helpers of the monitoring tests: run the test app's jobs, roll their minutes up without waiting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pageq
import pageq.testing
from apps.monitored import enqueue_all
from pageq.store import statsops
from pageq.worker import maintenance

QUEUES = ["mon", "bulk"]
FAST = {"poll_interval": 0.05, "controls_interval": 0.1, "maintenance_interval": 0.2}


async def run_jobs(app: pageq.App) -> pageq.Worker:
    """Enqueue the test app's 15 jobs and run them all with an in-process worker."""
    enqueue_all(app)
    return await pageq.testing.drain(app, QUEUES, **FAST)


def roll_up(app: pageq.App) -> datetime:
    """Roll up every minute up to the one in which the last job finished, as the leader will once that
    minute has settled; returns that minute."""
    jobs = app.list_jobs(limit=1000)
    finished = [job.finished_at for job in jobs if job.finished_at is not None]
    first = min((job.created_at for job in jobs), default=datetime.now(UTC)).replace(second=0, microsecond=0)
    last = max(finished, default=datetime.now(UTC)).replace(second=0, microsecond=0)
    # Statistics begin where the first rollup starts (a minute before the settled one): if no leader has
    # rolled up yet, begin at the first job's minute, or jobs of an earlier minute than the last would be
    # left out (a rollup behind that point does nothing).
    for minute in (first, last):
        at = minute + timedelta(minutes=1, seconds=maintenance.STATS_SETTLE + 1)
        if minute is first:
            at -= timedelta(minutes=1)
        op = statsops.rollup(at, maintenance.STATS_SETTLE, maintenance.STATS_KEEP, maintenance.STATS_CATCH_UP)
        while app.store.run(op) == maintenance.STATS_CATCH_UP:
            pass
    app.stats.invalidate()
    return last
