"""A test topology of worker hosts on one machine: network namespaces on a bridge, and a TCP forwarder that
makes the test's PostgreSQL reachable at the bridge's address (the database host).

Needs root and iproute2 (`ip netns`, veth, bridge). Every name carries a random tag so that leftovers of a
killed run never clash with the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from psycopg.conninfo import conninfo_to_dict, make_conninfo


def available() -> str | None:
    """Why the topology cannot be built here, or None when it can."""
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs iproute2 (`ip`)"
    return None


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


@dataclass
class Host:
    name: str  # the network namespace
    address: str
    outside: str  # the veth end on the bridge: down = the host is cut off

    def cut(self) -> None:
        ip("link", "set", self.outside, "down")

    def restore(self) -> None:
        ip("link", "set", self.outside, "up")

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside this host (`ip netns exec` execs it: the pid stays the same)."""
        return ["ip", "netns", "exec", self.name, *argv]


@dataclass
class Topology:
    subnet: str
    bridge: str
    gateway: str  # the database host's address, on the bridge
    hosts: list[Host] = field(default_factory=list)

    @classmethod
    @contextlib.contextmanager
    def build(cls, count: int) -> Iterator[Topology]:
        tag = secrets.token_hex(2)
        octet = 100 + secrets.randbelow(150)
        topo = cls(subnet=f"10.{octet}.0", bridge=f"pqbr{tag}", gateway=f"10.{octet}.0.1")
        try:
            ip("link", "add", topo.bridge, "type", "bridge")
            ip("addr", "add", f"{topo.gateway}/24", "dev", topo.bridge)
            ip("link", "set", topo.bridge, "up")
            for k in range(1, count + 1):
                host = Host(f"pq{tag}h{k}", f"{topo.subnet}.{10 + k}", f"pq{tag}h{k}o")
                inside = f"pq{tag}h{k}i"
                ip("netns", "add", host.name)
                topo.hosts.append(host)
                ip("link", "add", host.outside, "type", "veth", "peer", "name", inside)
                ip("link", "set", inside, "netns", host.name)
                ip("link", "set", host.outside, "master", topo.bridge)
                ip("link", "set", host.outside, "up")
                ip("-n", host.name, "addr", "add", f"{host.address}/24", "dev", inside)
                ip("-n", host.name, "link", "set", inside, "up")
                ip("-n", host.name, "link", "set", "lo", "up")
            yield topo
        finally:
            for host in topo.hosts:
                with contextlib.suppress(subprocess.CalledProcessError):
                    ip("link", "del", host.outside)
                with contextlib.suppress(subprocess.CalledProcessError):
                    ip("netns", "del", host.name)
            with contextlib.suppress(subprocess.CalledProcessError):
                ip("link", "del", topo.bridge)


class Forwarder:
    """Accepts TCP connections on ``address`` and pipes each to the server of ``dsn`` (TCP or Unix socket)."""

    def __init__(self, dsn: str, address: str) -> None:
        params = conninfo_to_dict(dsn)
        host, port = str(params.get("host") or "localhost"), int(params.get("port") or 5432)
        self._target: tuple[str, int] | str = (
            f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)
        )
        self._params = params
        self._address = address
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self.port = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def dsn(self) -> str:
        """The test database's DSN as seen from the hosts."""
        params = {k: v for k, v in self._params.items() if k not in {"host", "port", "hostaddr"}}
        return make_conninfo(**params, host=self._address, port=self.port)  # type: ignore[arg-type]

    def __enter__(self) -> Forwarder:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._pipe, self._address, 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()
        server.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            if isinstance(self._target, str):
                up_reader, up_writer = await asyncio.open_unix_connection(self._target)
            else:
                up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        async def copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    dst.close()

        await asyncio.gather(copy(reader, up_writer), copy(up_reader, writer))
