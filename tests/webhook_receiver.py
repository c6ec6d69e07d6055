"""A real local HTTP receiver for webhook tests: records every delivery, can fail chosen attempts."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pageq.webhooks


@dataclass(frozen=True)
class Received:
    """One request as the receiver saw it, and the status it answered."""

    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def delivery(self) -> int:
        return int(self.headers["Pageq-Delivery"])

    @property
    def webhook(self) -> int:
        return int(self.headers["Pageq-Webhook"])

    def event(self, secret: str | list[str]) -> dict[str, Any]:
        return pageq.webhooks.verify(self.headers, self.body, secret)


@dataclass
class Receiver:
    """Answers ``status(delivery id, how many times seen before)`` (200 by default)."""

    status: Callable[[int, int], int] = lambda _delivery, _seen: 200
    received: list[Received] = field(default_factory=list)
    seen: Counter[int] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)
    port: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def handle(self, headers: dict[str, str], body: bytes) -> int:
        delivery = int(headers.get("Pageq-Delivery", "0"))
        with self.lock:
            code = self.status(delivery, self.seen[delivery])
            self.seen[delivery] += 1
            self.received.append(Received(headers, body, code))
        return code

    def delivered(self) -> list[Received]:
        with self.lock:
            return [r for r in self.received if 200 <= r.status < 300]


def serve(receiver: Receiver) -> Iterator[Receiver]:
    """Run ``receiver`` on a free loopback port until the generator is closed."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as most receivers

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            code = receiver.handle(dict(self.headers.items()), body)
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None: ...

    class Server(ThreadingHTTPServer):
        request_queue_size = 256  # the default backlog (5) drops concurrent deliveries' connections
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    receiver.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, name="webhook-receiver", daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
