"""One Procrastinate worker process for the benchmark: ``python -m bench.systems.procrastinate_worker DSN``.

Settings and their sources: see bench/systems/procrastinate_system.py. Stops gracefully on SIGTERM (its own
signal handlers: running jobs finish, then the worker exits).
"""

from __future__ import annotations

import asyncio
import sys

from bench.recorder import Recorder
from bench.systems.procrastinate_system import (
    CONCURRENCY,
    DELETE_JOBS,
    POLLING_INTERVAL,
    POOL_SIZE,
    QUEUE,
    TASK,
    make_app,
)


async def work(dsn: str) -> None:
    record = Recorder.from_env().record
    app = make_app(dsn, pool_size=POOL_SIZE)

    @app.task(name=TASK, queue=QUEUE)
    async def noop(job_id: int, enqueued_ns: int) -> None:
        record(job_id, enqueued_ns)

    async with app.open_async():
        await app.run_worker_async(
            queues=[QUEUE],
            concurrency=CONCURRENCY,
            listen_notify=True,
            fetch_job_polling_interval=POLLING_INTERVAL,
            delete_jobs=DELETE_JOBS,  # type: ignore[typeddict-item]
        )


if __name__ == "__main__":
    asyncio.run(work(sys.argv[1]))
