"""The contract between the benchmark harness (bench/run.py) and one benchmarked system.

An adapter is a `System` subclass registered by name in `bench.systems.SYSTEMS`. It lets the harness do, for
every system alike:

1. ``install(dsn)``: create the system's schema in a fresh, empty database (the harness runs `CREATE DATABASE`
   for each system and each run, so nothing leaks between systems or runs). A system that does not store jobs
   in PostgreSQL (Celery on Redis) empties its own store here and ignores the DSN.
2. ``producer(dsn)``: an async context manager, opened in the caller's event loop, with
   - ``enqueue_many(ids, enqueued_ns)``: enqueue one no-op job per id with the system's FASTEST batch API
     (COPY, UNNEST, a bulk call...). The harness passes up to 50,000 ids in one call (W1, preloads) or
     batches of a few hundred (W4 producers); the adapter may split them into chunks as the system prefers;
   - ``enqueue_one(job_id, enqueued_ns)``: enqueue a single job with the system's ordinary one-job API, as an
     application would (W3's throttled producer).
   Every job must carry its harness id and ``enqueued_ns`` (a `time.monotonic_ns()` reading) in its payload,
   in whatever form is natural to the system (task arguments, a bytes payload...).
3. ``worker_argv(dsn)``: the command line of ONE worker process (the harness starts N of them for "N
   processes", with cwd = the repository root and PYTHONPATH including it). The process runs the system's
   own worker with its documented best settings for no-op jobs, and its no-op handler calls
   ``bench.recorder.Recorder.from_env().record(job_id, enqueued_ns)`` (one recorder per process, made once)
   as the first thing when a job starts. It must exit within ~10 s of SIGTERM (it is SIGKILLed after that;
   the harness only stops workers once every expected id has been recorded and flushed, so a hard kill loses
   nothing the harness needs).
4. ``name`` / ``version()`` / ``settings()``: what the results file shows: the package version and a flat dict
   describing the settings used (driver, batch sizes, concurrency, polling, durability), so a reader can see
   each system got its documented best settings.

Jobs are no-op: the handler records and returns. The harness alone decides what a result is: it counts
records per id (`bench.recorder`), so a lost or doubled job rejects the result whatever the system reports.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Sequence
from types import TracebackType
from typing import ClassVar


class Producer(ABC):
    """An open connection (or client) that enqueues benchmark jobs; use as ``async with``."""

    async def open(self) -> None:  # noqa: B027 - optional hook
        """Connect; called by ``__aenter__``. Connection time is not counted in enqueue rates."""

    @abstractmethod
    async def enqueue_many(self, ids: Sequence[int], enqueued_ns: int) -> None:
        """Enqueue one job per id, committed (durably) before returning, with the fastest batch API."""

    @abstractmethod
    async def enqueue_one(self, job_id: int, enqueued_ns: int) -> None:
        """Enqueue one job, committed before returning, with the system's ordinary single-job API."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Disconnect; called by ``__aexit__``."""

    async def __aenter__(self) -> Producer:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class System(ABC):
    """One benchmarked queue system; see the module docstring for the contract."""

    name: ClassVar[str]

    @abstractmethod
    def version(self) -> str:
        """The version of the system under test (e.g. the PyPI package version)."""

    @abstractmethod
    def settings(self) -> dict[str, object]:
        """A flat, JSON-able description of the settings used (driver, batch sizes, concurrency...)."""

    @abstractmethod
    def install(self, dsn: str) -> None:
        """Create the system's schema in the fresh, empty database at `dsn` (blocking)."""

    @abstractmethod
    def producer(self, dsn: str) -> Producer:
        """A producer for the database at `dsn`, not yet opened (``async with system.producer(dsn) as p``)."""

    @abstractmethod
    def worker_argv(self, dsn: str) -> list[str]:
        """The command line of one worker process; its handler records to ``$BENCH_RECORD``."""

    def claim_batch(self) -> int | None:
        """Jobs claimed per fetch statement, if the system has one (for the commits-per-job target)."""
        return None

    @staticmethod
    def python() -> str:
        """The interpreter to use in `worker_argv` (the harness's own, i.e. the project venv)."""
        return sys.executable
