"""The Celery app of the benchmark, and one worker process: ``python -m bench.systems.celery_worker``.

Settings and their sources: see bench/systems/celery_system.py. The producer (celery_system) imports `app`
from here to send by task name; the worker process runs `main()`, which stops on SIGTERM (Celery's warm
shutdown: the current task finishes, prefetched but unstarted messages go back to Redis).
"""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_process_init

from bench.recorder import Recorder

REDIS_URL = os.environ.get("BENCH_CELERY_REDIS", "redis://127.0.0.1:6379/15")  # a dedicated DB number
QUEUE = "bench"
TASK = "bench.noop"
POOL = os.environ.get("BENCH_CELERY_POOL", "solo")  # env: for sweeps
CONCURRENCY = int(os.environ.get("BENCH_CELERY_CONCURRENCY", "1"))
PREFETCH_MULTIPLIER = int(os.environ.get("BENCH_CELERY_PREFETCH", "128"))

app = Celery("bench", broker=REDIS_URL, set_as_current=False)
app.conf.update(
    result_backend=None,  # no results backend: the harness records executions itself
    task_ignore_result=True,
    task_acks_late=False,  # the default: the message is acked just before the task runs
    task_default_queue=QUEUE,
    task_serializer="json",
    accept_content=["json"],
    worker_prefetch_multiplier=PREFETCH_MULTIPLIER,
    worker_disable_rate_limits=True,
    worker_enable_remote_control=False,  # no pidbox consumer (nothing sends control commands)
    worker_send_task_events=False,  # the default
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)

_record = None  # Recorder.record of this process, made once (in main, or in each prefork child)


@app.task(name=TASK, ignore_result=True)
def noop(job_id: int, enqueued_ns: int) -> None:
    _record(job_id, enqueued_ns)  # type: ignore[misc]


@worker_process_init.connect
def _child_recorder(**_: object) -> None:  # prefork children: the parent's flush thread is not forked
    global _record
    _record = Recorder.from_env().record


def main() -> None:
    global _record
    _record = Recorder.from_env().record
    argv = [
        "worker",
        f"--pool={POOL}",
        f"--concurrency={CONCURRENCY}",
        f"--prefetch-multiplier={PREFETCH_MULTIPLIER}",
        f"--queues={QUEUE}",
        f"--hostname=bench{os.getpid()}@%h",  # the harness starts several on one host
        "--loglevel=WARNING",  # no per-task INFO lines ("received", "succeeded")
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    app.worker_main(argv)


if __name__ == "__main__":
    main()
