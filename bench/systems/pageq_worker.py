"""One pageq worker process for the benchmark: python -m bench.systems.pageq_worker DSN CONCURRENCY BATCH."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from bench.recorder import Recorder
from bench.systems.pageq_system import QUEUE, make_app
from pageq.worker import maintenance, run_forever


def register(app: Any, recorder: Recorder | None) -> Any:
    """The no-op task `bench.noop(i, t)` on `app`; it records (i, t) when a recorder is given."""
    record = recorder.record if recorder is not None else None

    @app.task(name="bench.noop", queue=QUEUE)
    async def noop(i: int, t: int) -> None:
        if record is not None:
            record(i, t)

    return noop


def main() -> int:
    dsn, concurrency, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if rotate := os.environ.get("BENCH_PAGEQ_ROTATE_JOBS"):  # for sweeps of the rotation threshold
        maintenance.ROTATE_JOBS = int(rotate)
    app = make_app(dsn)
    register(app, Recorder.from_env())
    retention = (
        {"retention": float(os.environ["BENCH_PAGEQ_RETENTION"])}
        if "BENCH_PAGEQ_RETENTION" in os.environ
        else {}
    )
    worker = app.worker([QUEUE], concurrency, batch_size=batch, grace=5.0, **retention)
    code = run_forever(worker)
    if record := os.environ.get("BENCH_RECORD"):  # claim statistics, for commits per job (bench/workloads.py)
        stats = {"claims": worker.claims, "claimed": worker.claimed}
        Path(record + ".stats.json").write_text(json.dumps(stats))
    return code


if __name__ == "__main__":
    sys.exit(main())
