"""Celery (pinned in the `bench` extra) on the machine's Redis: the non-Postgres baseline.

- Broker: Redis at 127.0.0.1:6379, a dedicated DB number (15; `BENCH_CELERY_REDIS` to change), flushed by
  `install()`; the DSN is ignored. Durability is whatever the Redis server is configured with (shown in
  `settings()`; this machine's runs with neither AOF nor RDB snapshots, i.e. not durable); Celery adds none.
- No results backend, `ignore_result`: the harness records executions itself. `task_acks_late` off (the
  default: a message is acked just before its task runs, so a worker crash loses the running task).
- Worker: the `solo` pool, prefetch multiplier 128 (docs/userguide/optimizing.rst, "Prefetch Limits": for
  many short tasks where throughput matters "this number should be large ... Say 64, or 128"; Celery's own
  t/benchmarks/bench_worker.py runs the solo pool with unlimited prefetch). `solo` runs the task inline in
  the consumer with no pool hand-off, which is what a no-op task wants (threads/prefork only add
  dispatching overhead when the task does no I/O). Measured here (10,000 pre-enqueued jobs, rate from the
  first to the last start, 3 interleaved runs): solo 1,030-1,210/s, threads x4 920-940, threads x8 890-1,010,
  prefork x2 910-1,010; prefetch 4 vs 128 made no difference (kombu's Redis transport fetches one message
  per BRPOP either way). One process per harness worker. `--without-gossip --without-mingle
  --without-heartbeat`, remote control off, rate limits off, log level WARNING (no per-task INFO lines).
- Enqueue: Celery has no bulk publish; the fastest public path is `apply_async` reusing ONE producer
  connection for every message (`app.producer_or_acquire()`, as its bench_worker.py `bench_apply` does).
  W3: plain `apply_async`.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import version

import celery  # noqa: F401 - ImportError here makes the harness skip this system
import redis

from bench.systems.base import Producer, System
from bench.systems.celery_worker import (
    CONCURRENCY,
    POOL,
    PREFETCH_MULTIPLIER,
    QUEUE,
    REDIS_URL,
    app,
    noop,
)


class CeleryProducer(Producer):
    async def open(self) -> None:
        self._acquired = app.producer_or_acquire()
        self.producer = self._acquired.__enter__()  # one broker connection, reused for every message

    async def enqueue_many(self, ids: Sequence[int], enqueued_ns: int) -> None:
        # blocking calls: Celery's client is synchronous; the producer has nothing else to run meanwhile
        send, producer = noop.apply_async, self.producer
        for i in ids:
            send((i, enqueued_ns), producer=producer)

    async def enqueue_one(self, job_id: int, enqueued_ns: int) -> None:
        noop.apply_async((job_id, enqueued_ns))  # as an application does: a producer from the app's pool

    async def close(self) -> None:
        self._acquired.__exit__(None, None, None)


class CelerySystem(System):
    name = "celery"

    def version(self) -> str:
        return version("celery")

    def settings(self) -> dict[str, object]:
        return {
            "broker": f"Redis {_redis_info()} via kombu {version('kombu')}, redis-py {version('redis')}",
            "broker_url": REDIS_URL,
            "pool": POOL,
            "concurrency": CONCURRENCY,
            "prefetch_multiplier": PREFETCH_MULTIPLIER,
            "acks_late": False,
            "results": "none (result_backend None, ignore_result)",
            "worker_flags": "--without-gossip --without-mingle --without-heartbeat, remote control off, "
            "rate limits off, loglevel WARNING",
            "enqueue": "apply_async on one reused producer connection; W3: apply_async",
            "queue": QUEUE,
            "durability": "Redis's own (see broker); Celery adds none",
        }

    def install(self, dsn: str) -> None:
        client = redis.Redis.from_url(REDIS_URL)
        try:
            client.flushdb()
        finally:
            client.close()

    def producer(self, dsn: str) -> Producer:
        return CeleryProducer()

    def worker_argv(self, dsn: str) -> list[str]:
        return [self.python(), "-m", "bench.systems.celery_worker"]


def _redis_info() -> str:
    """The Redis server's version and persistence settings, e.g. "7.0.15 (appendonly='no', ..., save='')"."""
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
        try:
            ver = client.info("server")["redis_version"]
            conf: dict[str, str] = {}
            for key in ("appendonly", "appendfsync", "save"):
                conf.update(client.config_get(key))
        finally:
            client.close()
    except redis.RedisError as exc:
        return f"(not reachable: {exc})"
    persistence = ", ".join(f"{key}={conf.get(key)!r}" for key in ("appendonly", "appendfsync", "save"))
    return f"{ver} ({persistence})"
