"""Periodic jobs: cron expressions (via cronsim) or fixed intervals, fired once per tick cluster-wide.

Whoever fires a schedule locks its row in `<schema>.periodic`, enqueues each due tick with a unique key
per tick (``pageq.periodic:<name>:<tick>``) and records the newest tick, all in one transaction; so any
number of schedulers (the leader, a lingering former leader, a test) enqueue each tick exactly once.
Between ticks a scheduler does not touch the database: it remembers when each schedule's next tick is due
(the recorded tick only moves forward, so a tick after the one it last read is never too early).
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal
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

    def next_tick(self, after: datetime) -> datetime | None:
        """The first tick after ``after`` (None if the cron expression has none)."""
        if self.every is not None:
            return datetime.fromtimestamp((int(after.timestamp() // self.every) + 1) * self.every, UTC)
        assert self.cron is not None
        tick = next(iter(CronSim(self.cron, after.astimezone(self.zone))), None)
        return None if tick is None else tick.astimezone(UTC)

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


Run = Callable[[ops.Op[Any]], Awaitable[Any]]
Transaction = Callable[[], contextlib.AbstractAsyncContextManager[Run]]


async def fire_due(app: App, store: Store, now: datetime, transaction: Transaction | None = None) -> int:
    """Enqueue every due tick of every schedule of ``app``; returns how many jobs were enqueued. A schedule
    whose task the app's principal may not enqueue is skipped (a warning, once per schedule).

    Only schedules whose next tick has come touch the database (see the module's docstring). Each schedule
    fires in one transaction from ``transaction`` (the leader's fenced ones; by default the store's)."""
    fired = 0
    next_due = _NEXT_DUE.setdefault(store, {})
    for periodic in app.periodics.values():
        due = next_due.get(periodic.name)
        if due is not None and now < due:
            continue
        try:
            fired += await _fire(app, transaction or (lambda: _pooled(store)), periodic, now, next_due)
        except AccessDeniedError as exc:
            if periodic.name not in _DENIED:
                _DENIED.add(periodic.name)
                log.warning("periodic %r not enqueued: %s", periodic.name, exc)
    return fired


_DENIED: set[str] = set()
_NEXT_DUE: weakref.WeakKeyDictionary[Store, dict[str, datetime]] = weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def _pooled(store: Store) -> AsyncIterator[Run]:
    async with store.atransaction() as conn:

        async def run(op: ops.Op[Any]) -> Any:
            return await store.arun(op, conn)

        yield run


async def _fire(
    app: App, transaction: Transaction, periodic: Periodic, now: datetime, next_due: dict[str, datetime]
) -> int:
    async with transaction() as run:
        last = await run(dispatch.periodic_lock(periodic.name, now))
        ticks = periodic.due(last, now)
        if ticks:
            specs = [periodic.spec(app, t) for t in ticks]
            ids = None
            if app._reserves(specs):  # encrypted arguments name their job: ids first
                ids = await run(ops.reserve_ids(len(specs)))
            await run(app._insert(specs, ids))
        newest = periodic.ticks(last, now)
        if newest:
            await run(dispatch.periodic_set(periodic.name, newest[-1]))
    upcoming = periodic.next_tick(max(last, newest[-1]) if newest else last)
    if upcoming is None:
        next_due.pop(periodic.name, None)
    else:
        next_due[periodic.name] = upcoming
    return len(ticks)
