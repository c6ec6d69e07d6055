"""The worker daemon (async): producer, executor, batch completer, heartbeats, maintenance. Not public API."""

from pageq.worker.daemon import Worker, WorkerOptions
from pageq.worker.supervisor import load_app, run_forever, supervise

__all__ = ["Worker", "WorkerOptions", "load_app", "run_forever", "supervise"]
