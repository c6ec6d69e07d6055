"""Prometheus metrics of a pageq app: a collector over `App.stats` and its text exposition.

What each series means is in docs/monitoring.md. Every process that serves them (a worker with
``--metrics-port``, ``pageq serve``) shows the same numbers, read from the database: scrape one, or
aggregate with ``max by (...)``.

Example::

    body, content_type = pageq.metrics.render(app)        # what a /metrics endpoint answers
    server = pageq.metrics.serve(app, 9400)                # or its own HTTP server, in a daemon thread
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

import pageq
from pageq.stats import SHOWN_STATES, Latency, Percentiles, QueueSummary, SystemStats, WorkerStats

QUANTILES = (("0.5", "p50"), ("0.95", "p95"), ("0.99", "p99"))
FINAL = (("succeeded", "succeeded"), ("dead", "dead"), ("cancelled", "cancelled"))


class StatsCollector(Collector):
    """Reads `App.stats` at each scrape (its one-second cache is shared with other readers of the app)."""

    def __init__(self, app: pageq.App) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        system = self.app.stats.system()
        yield from _system(system)
        if system.database:
            tasks = [task for queue in self.app.stats.queues() for task in queue.tasks]
            yield from _jobs(tasks)
            yield from _flow(tasks)
            yield from _workers(self.app.stats.workers())


def registry(app: pageq.App, *, process: bool = False) -> CollectorRegistry:
    """A registry with the app's statistics; ``process`` adds this process's own metrics (``process_*``,
    ``python_*``), as a worker's endpoint shows."""
    result = CollectorRegistry(auto_describe=False)
    result.register(StatsCollector(app))
    if process:
        ProcessCollector(registry=result)
        PlatformCollector(registry=result)
        GCCollector(registry=result)
    return result


def render(app: pageq.App, target: CollectorRegistry | None = None) -> tuple[bytes, str]:
    """The metrics in the Prometheus text format, with their content type (for an HTTP /metrics)."""
    return generate_latest(target or registry(app)), CONTENT_TYPE_LATEST


def serve(app: pageq.App, port: int, host: str = "127.0.0.1", *, process: bool = True) -> WSGIServer:
    """Serve /metrics on ``host``:``port`` from a daemon thread; ``server.shutdown()`` stops it."""
    server, _thread = start_http_server(port, addr=host, registry=registry(app, process=process))
    return server


# ----- families
def _gauge(name: str, doc: str, labels: Iterable[str] = (), unit: str = "") -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels), unit=unit)


def _counter(name: str, doc: str, labels: Iterable[str]) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=list(labels))


def _system(system: SystemStats) -> Iterator[Metric]:
    up = _gauge("pageq_database_up", "Whether the database answered the last scrape (1) or not (0).")
    up.add_metric([], 1.0 if system.database else 0.0)
    yield up
    if not system.database:
        return
    trip = _gauge("pageq_database_round_trip_seconds", "Duration of the scrape's health query.")
    trip.add_metric([], system.round_trip or 0.0)
    maintenance = _gauge(
        "pageq_maintenance_up", "Whether a worker holds a current maintenance leadership (1) or not (0)."
    )
    maintenance.add_metric([], 1.0 if system.maintenance else 0.0)
    leader = InfoMetricFamily("pageq_maintenance_leader", "The worker that leads maintenance.")
    if system.maintenance and system.leader is not None:
        leader.add_metric([], {"worker": system.leader})
    lag = _gauge("pageq_stats_rollup_lag_seconds", "Age of the end of the newest rolled-up minute.")
    if system.rollup_lag is not None:
        lag.add_metric([], system.rollup_lag)
    workers = _gauge("pageq_workers", "Workers that published within the last 30 seconds.")
    workers.add_metric([], float(system.workers))
    yield from (trip, maintenance, leader, lag, workers)


def _jobs(tasks: list[QueueSummary]) -> Iterator[Metric]:
    jobs = _gauge(
        "pageq_jobs", "Jobs in each state now (dead: the dead-letter queue).", ["queue", "task", "state"]
    )
    oldest = _gauge(
        "pageq_oldest_due_job_age_seconds", "How long the oldest due job has waited.", ["queue", "task"]
    )
    for item in tasks:
        key = [item.queue, item.task or ""]
        for state in SHOWN_STATES:
            jobs.add_metric([*key, state.value], float(item.jobs.get(state, 0)))
        if item.oldest_due_age is not None:
            oldest.add_metric(key, item.oldest_due_age)
    yield from (jobs, oldest)


def _flow(tasks: list[QueueSummary]) -> Iterator[Metric]:
    labels = ["queue", "task"]
    enqueued = _counter(
        "pageq_jobs_enqueued", "Jobs enqueued (counted once their minute is rolled up).", labels
    )
    finished = _counter("pageq_jobs_finished", "Jobs that reached a final state.", [*labels, "state"])
    failed = _counter("pageq_job_attempts_failed", "Attempts that failed (retried or dead).", labels)
    wait = Metric(
        "pageq_job_wait_seconds", "Time from due to started; quantiles of the newest minute.", "summary"
    )
    run = Metric(
        "pageq_job_run_seconds", "Time from started to finished; quantiles of the newest minute.", "summary"
    )
    for item in tasks:
        key = [item.queue, item.task or ""]
        counts = item.totals.counts
        enqueued.add_metric(key, float(counts.enqueued))
        failed.add_metric(key, float(counts.failed))
        for label, field in FINAL:
            finished.add_metric([*key, label], float(getattr(counts, field)))
        _summary(wait, key, item.latency, "wait", item.totals.timed, item.totals.wait_seconds)
        _summary(run, key, item.latency, "run", item.totals.timed, item.totals.run_seconds)
    yield from (enqueued, finished, failed, wait, run)


def _summary(
    family: Metric, key: list[str], latency: Latency | None, kind: str, count: int, total: float
) -> None:
    labels = {"queue": key[0], "task": key[1]}
    percentiles: Percentiles | None = None if latency is None else getattr(latency, kind)
    for quantile, field in QUANTILES:
        value = math.nan if percentiles is None else float(getattr(percentiles, field))
        family.add_sample(family.name, {**labels, "quantile": quantile}, value)
    family.add_sample(f"{family.name}_sum", labels, total)
    family.add_sample(f"{family.name}_count", labels, float(count))


def _workers(workers: list[WorkerStats]) -> Iterator[Metric]:
    labels = ["worker", "host"]
    heartbeat = _gauge(
        "pageq_worker_last_heartbeat_timestamp_seconds", "When the worker last published.", labels
    )
    capacity = _gauge(
        "pageq_worker_capacity", "Jobs the worker runs at once at most (its concurrency).", labels
    )
    running = _gauge("pageq_worker_running_jobs", "Jobs the worker runs now.", labels)
    processed = _counter(
        "pageq_worker_attempts", "Attempts the worker finished, whatever the outcome.", labels
    )
    failed = _counter("pageq_worker_attempts_failed", "Attempts the worker finished that failed.", labels)
    memory = _gauge("pageq_worker_resident_memory_bytes", "Resident memory of the worker's process.", labels)
    for worker in workers:
        key = [worker.id, worker.host]
        heartbeat.add_metric(key, worker.last_heartbeat.timestamp())
        capacity.add_metric(key, float(worker.capacity))
        running.add_metric(key, float(worker.running))
        processed.add_metric(key, float(worker.processed))
        failed.add_metric(key, float(worker.failed))
        if worker.rss_bytes is not None:
            memory.add_metric(key, float(worker.rss_bytes))
    yield from (heartbeat, capacity, running, processed, failed, memory)
