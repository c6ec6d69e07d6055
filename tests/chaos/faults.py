"""Fault tools: worker processes to kill, stop and continue; backends to terminate; a black-hole proxy."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

TESTS = Path(__file__).resolve().parent.parent
APP_NAME = "pageq-chaos"  # application_name of the workers' sessions (PGAPPNAME), to find their backends


def wait_until(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


def worker_env(dsn: str, schema: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PAGEQ_FAILPOINT", None)
    env.update(PAGEQ_DSN=dsn, PAGEQ_SCHEMA=schema, PGAPPNAME=APP_NAME,
               PYTHONPATH=os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]))  # fmt: skip
    env.update(extra)
    return env


class Fleet:
    """``n`` `pageq worker` processes of ``chaos.app:app``, each respawned when it dies (a supervisor)."""

    def __init__(
        self, env: dict[str, str], logs: Path, n: int, options: list[str], respawn: bool = True,
        lanes: bool = False,
    ) -> None:  # fmt: skip
        """With ``lanes``, worker ``i`` (and its replacements) works queue ``chaos-i`` only."""
        self.env, self.logs, self.n, self.options, self.respawn = env, logs, n, options, respawn
        self.lanes = lanes
        self.procs: list[subprocess.Popen[bytes]] = []
        self.all: list[subprocess.Popen[bytes]] = []
        self.kills: list[tuple[int, float, str]] = []  # (pid, when, signal)
        self.exits: list[tuple[int, int | None, float]] = []  # unplanned: (pid, code, when)
        self._planned: set[int] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._supervise, daemon=True)
        logs.mkdir(parents=True, exist_ok=True)

    def _spawn(self, slot: int) -> subprocess.Popen[bytes]:
        queue = f"chaos-{slot}" if self.lanes else "chaos"
        command = [sys.executable, "-m", "pageq", "worker", "chaos.app:app", "--queues", queue, *self.options]
        with (self.logs / f"worker-{len(self.all)}.log").open("wb") as sink:
            proc = subprocess.Popen(command, env=self.env, stdout=sink, stderr=subprocess.STDOUT)
        self.all.append(proc)
        return proc

    def start(self) -> Fleet:
        self.procs = [self._spawn(i) for i in range(self.n)]
        self._thread.start()
        return self

    def _supervise(self) -> None:
        while not self._stop.wait(0.1):
            with self._lock:
                for i, proc in enumerate(self.procs):
                    code = proc.poll()
                    if code is None:
                        continue
                    if proc.pid not in self._planned:
                        self.exits.append((proc.pid, code, time.time()))
                    if self.respawn:
                        self.procs[i] = self._spawn(i)

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def signal(self, sig: signal.Signals, proc: subprocess.Popen[bytes] | None = None) -> int:
        """Send ``sig`` to ``proc`` or a random live worker; a SIGKILL counts as planned."""
        with self._lock:
            target = proc or random.choice(self.alive())
            if sig is signal.SIGKILL:
                self._planned.add(target.pid)
            self.kills.append((target.pid, time.time(), sig.name))
            os.kill(target.pid, sig)
            return target.pid

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        for proc in self.all:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGCONT)
                    proc.terminate()
        for proc in self.all:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def logged(self, text: str) -> int:
        """How many times ``text`` occurs in the workers' logs."""
        return sum(p.read_text(errors="replace").count(text) for p in self.logs.glob("*.log"))

    def log_text(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-4000:] for p in sorted(self.logs.glob("*.log")))


def terminate_backends(dsn: str, *, listen: bool | None = None, count: int = 1) -> list[int]:
    """``pg_terminate_backend`` of ``count`` random worker sessions (only the LISTEN one(s) if ``listen``)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid, query FROM pg_stat_activity WHERE application_name = %s AND pid <> pg_backend_pid()",
            (APP_NAME,),
        ).fetchall()
        pids = [pid for pid, query in rows if listen is None or ("\nLISTEN " in (query or "")) == listen]
        chosen = random.sample(pids, min(count, len(pids)))
        for pid in chosen:
            conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    return chosen


class Proxy:
    """A TCP proxy in a thread (an asyncio loop) that can black-hole its connections: bytes stop flowing in
    both directions but the sockets stay open, as when a network path dies silently (a half-open link)."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._flowing: asyncio.Event | None = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.AbstractServer | None = None

    def start(self) -> Proxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                assert self._flowing is not None
                await self._flowing.wait()  # a black hole holds the bytes; TCP would retransmit them later
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    def blackhole(self) -> None:
        assert self._flowing is not None
        self._loop.call_soon_threadsafe(self._flowing.clear)

    def restore(self) -> None:
        assert self._flowing is not None
        self._loop.call_soon_threadsafe(self._flowing.set)

    def dsn(self, dsn: str) -> str:
        host, port = self.target
        return dsn.replace(f"{host}:{port}", f"127.0.0.1:{self.port}")

    def close(self) -> None:
        self.restore()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
