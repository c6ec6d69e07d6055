"""Periodic jobs: cron expressions (via cronsim) or fixed intervals, fired once per tick cluster-wide.

Whoever fires a schedule locks its row in `<schema>.periodic`, enqueues each due tick with a unique key
per tick (``pageq.periodic:<name>:<tick>``) and records the newest tick, all in one transaction; so any
number of schedulers (the leader, a lingering former leader, a test) enqueue each tick exactly once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from pageq.errors import AccessDeniedError, InvalidOptionError
from pageq.store import dispatch, ops
from pageq.types import JSON, JobSpec, JobState, Unique, check_name

if TYPE_CHECKING:
    from pageq.app import App
    from pageq.store import Store

Missed = Literal["latest", "all", "skip"]
log = logging.getLogger("pageq.periodic")
MAX_BACKFILL = 1000
KEY_WINDOW = 7 * 86400.0


@dataclass(frozen=True)
class Periodic:
    """A schedule: enqueue ``task`` with ``args`` at each tick of ``cron`` (in ``tz``) or ``every`` seconds.

    After downtime, ``missed`` decides what happens to ticks that passed more than ``grace`` seconds ago:
    ``"latest"`` enqueues only the most recent one, ``"all"`` each of them (up to 1,000), ``"skip"`` none.
    """

    name: str
    task: str
    cron: str | None = None
    every: float | None = None
    tz: str = "UTC"
    missed: Missed = "latest"
    grace: float = 60.0
    args: dict[str, JSON] = field(default_factory=dict)
    zone: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_name("periodic", self.name)
        if (self.cron is None) == (self.every is None):
            raise InvalidOptionError(f"periodic {self.name!r}: give a cron expression or every=, not both")
        try:
            object.__setattr__(self, "zone", ZoneInfo(self.tz))
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidOptionError(f"periodic {self.name!r}: unknown time zone {self.tz!r}") from None
        if self.cron is not None:
            try:
                CronSim(self.cron, datetime.now(self.zone))
            except CronSimError as exc:
                raise InvalidOptionError(f"periodic {self.name!r}: bad cron {self.cron!r}: {exc}") from None
        elif not isinstance(self.every, int | float) or not 1 <= self.every <= 366 * 86400:
            raise InvalidOptionError(
                f"periodic {self.name!r}: every= must be 1 s to a year, got {self.every!r}"
            )
        if self.missed not in ("latest", "all", "skip"):
            raise InvalidOptionError(f"periodic {self.name!r}: missed must be latest, all or skip")

    def ticks(self, after: datetime, until: datetime) -> list[datetime]:
        """Ticks in (after, until], oldest first, at most MAX_BACKFILL + 1 (the newest kept)."""
        if self.every is not None:
            step = self.every
            first = (int(after.timestamp() // step) + 1) * step
            last = int(until.timestamp() // step) * step
            count = round((last - first) / step) + 1 if last >= first else 0
            start = max(0, count - MAX_BACKFILL - 1)
            return [datetime.fromtimestamp(first + i * step, UTC) for i in range(start, count)]
        assert self.cron is not None
        found: list[datetime] = []
        for tick in CronSim(self.cron, after.astimezone(self.zone)):
            if tick > until:
                break
            found.append(tick.astimezone(UTC))
            if len(found) > 10 * MAX_BACKFILL:  # a long downtime of a per-minute schedule: keep the newest
                found = found[-MAX_BACKFILL - 1 :]
        return found[-MAX_BACKFILL - 1 :]

    def due(self, last: datetime, now: datetime) -> list[datetime]:
        """The ticks to enqueue now, by the missed-tick policy."""
        ticks = self.ticks(last, now)
        late = now - timedelta(seconds=self.grace)
        on_time = [t for t in ticks if t >= late]
        missed = [t for t in ticks if t < late]
        if not missed or self.missed == "skip":
            return on_time
        if self.missed == "all":
            return (missed + on_time)[-MAX_BACKFILL:]
        return on_time or missed[-1:]

    def spec(self, app: App, tick: datetime) -> JobSpec:
        key = Unique(f"pageq.periodic:{self.name}:{tick.isoformat()}", frozenset(JobState), KEY_WINDOW)
        return app.get_task(self.task).job(run_at=tick, unique=key, **self.args)


async def fire_due(app: App, store: Store, now: datetime) -> int:
    """Enqueue every due tick of every schedule of ``app``; returns how many jobs were enqueued. A schedule
    whose task the app's principal may not enqueue is skipped (a warning, once per schedule)."""
    fired = 0
    for periodic in app.periodics.values():
        try:
            fired += await _fire(app, store, periodic, now)
        except AccessDeniedError as exc:
            if periodic.name not in _DENIED:
                _DENIED.add(periodic.name)
                log.warning("periodic %r not enqueued: %s", periodic.name, exc)
    return fired


_DENIED: set[str] = set()


async def _fire(app: App, store: Store, periodic: Periodic, now: datetime) -> int:
    async with store.atransaction() as conn:
        last = await store.arun(dispatch.periodic_lock(periodic.name, now), conn)
        ticks = periodic.due(last, now)
        if ticks:
            specs = [periodic.spec(app, t) for t in ticks]
            ids = None
            if app._reserves(specs):  # encrypted arguments name their job: ids first
                ids = await store.arun(ops.reserve_ids(len(specs)), conn)
            await store.arun(app._insert(specs, ids), conn)
        newest = periodic.ticks(last, now)
        if newest:
            await store.arun(dispatch.periodic_set(periodic.name, newest[-1]), conn)
    return len(ticks)
