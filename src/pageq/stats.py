"""Statistics of queues, workers and the system: the plain data that `App.stats` returns. Pure: no I/O.

Three kinds of numbers, each said where it appears: *now* (live jobs, the dead-letter queue, workers),
*per minute* (rolled up by the maintenance leader once a minute has settled: rates and timings lag the clock
by one to two minutes), and *totals* since statistics began (counters, for Prometheus).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from pageq.types import JobState

SHOWN_STATES = (
    JobState.SCHEDULED,
    JobState.QUEUED,
    JobState.RUNNING,
    JobState.RETRYING,
    JobState.BLOCKED,
    JobState.DEAD,
)
"""The states counted *now*: the live ones and the dead-letter queue (succeeded and cancelled jobs are
counted in `Counts`, as events)."""


@dataclass(frozen=True)
class Percentiles:
    """The 50th, 95th and 99th percentiles of a duration, in seconds."""

    p50: float
    p95: float
    p99: float


@dataclass(frozen=True)
class Latency:
    """Of the jobs that finished in one minute and ran (succeeded or dead): how long each waited from when it
    was due to when it started (``wait``), and how long its last attempt ran (``run``)."""

    jobs: int
    wait: Percentiles
    run: Percentiles


@dataclass(frozen=True)
class Counts:
    """Events: jobs enqueued, succeeded, dead and cancelled, and attempts that failed (retried or dead)."""

    enqueued: int = 0
    succeeded: int = 0
    failed: int = 0
    dead: int = 0
    cancelled: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.enqueued + other.enqueued,
            self.succeeded + other.succeeded,
            self.failed + other.failed,
            self.dead + other.dead,
            self.cancelled + other.cancelled,
        )

    def per_second(self, seconds: float) -> Rates:
        """These counts as rates over ``seconds`` (zero rates for an empty span)."""
        if seconds <= 0:
            return Rates()
        return Rates(
            self.enqueued / seconds,
            self.succeeded / seconds,
            self.failed / seconds,
            self.dead / seconds,
            self.cancelled / seconds,
        )


@dataclass(frozen=True)
class Rates:
    """Events per second (see `Counts`)."""

    enqueued: float = 0.0
    succeeded: float = 0.0
    failed: float = 0.0
    dead: float = 0.0
    cancelled: float = 0.0


@dataclass(frozen=True)
class Totals:
    """Counters since statistics began: the events, and the jobs with timings with their summed seconds."""

    counts: Counts = field(default_factory=Counts)
    timed: int = 0
    wait_seconds: float = 0.0
    run_seconds: float = 0.0


@dataclass(frozen=True)
class QueueSummary:
    """One queue (``task`` None, with a summary per task in ``tasks``) or one task of a queue.

    ``jobs``: jobs in each of `SHOWN_STATES` now. ``oldest_due_age``: seconds the oldest job that is due
    (queued, or scheduled or retrying with its time come) has waited, now. ``rates``: events per second
    over the last rolled-up minutes (`App.stats.queues` says how many). ``latency``: of the newest rolled-up
    minute, None if no job finished in it. ``totals``: since statistics began.
    """

    queue: str
    task: str | None
    jobs: dict[JobState, int]
    oldest_due_age: float | None
    rates: Rates
    latency: Latency | None
    totals: Totals
    tasks: tuple[QueueSummary, ...] = ()

    @property
    def dead(self) -> int:
        """The size of the dead-letter queue."""
        return self.jobs.get(JobState.DEAD, 0)


@dataclass(frozen=True)
class MinuteStats:
    """One rolled-up minute (starting at ``minute``): its events, the timings of the jobs that finished in it,
    and the live jobs when it was rolled up (``jobs`` and ``oldest_due_age``; None when it was not sampled:
    only the newest minute of each rollup is, so minutes caught up after a pause have none)."""

    minute: datetime
    counts: Counts
    latency: Latency | None
    jobs: dict[JobState, int] | None
    oldest_due_age: float | None


@dataclass(frozen=True)
class WorkerStats:
    """A registered worker as it last published itself (every second while it runs).

    ``capacity``: its concurrency; ``running``: jobs it runs; ``processed``: attempts it finished since it
    started, ``failed`` of them; ``rss_bytes``: resident memory of its process (None where unknown);
    ``heartbeat_age``: seconds since it last published, by the app's clock; ``stale``: older than the
    threshold given to `App.stats.workers` (it died or cannot reach the database).
    """

    id: str
    host: str
    pid: int
    queues: tuple[str, ...]
    capacity: int
    running: int
    processed: int
    failed: int
    rss_bytes: int | None
    started_at: datetime
    last_heartbeat: datetime
    heartbeat_age: float
    stale: bool


@dataclass(frozen=True)
class SystemStats:
    """Whether the database answers (``error`` says why not), how long a round trip took, who leads
    maintenance (rescuer, scheduler, pruner, rollups) and whether its lease is current, how far the rollups
    have come, and how many workers published recently."""

    database: bool
    error: str | None = None
    round_trip: float | None = None
    server_version: str | None = None
    leader: str | None = None
    leader_expires_at: datetime | None = None
    maintenance: bool = False
    stats_since: datetime | None = None
    rolled_until: datetime | None = None
    rollup_lag: float | None = None
    workers: int = 0
