"""``python -m examples.transcode``: enqueue videos, run a worker with a short lease, print progress."""

from __future__ import annotations

import argparse
import asyncio
import time

import psycopg

from examples.common import run_until_finished
from examples.transcode.tasks import QUEUE, app, media_schema, transcode


def main() -> None:
    parser = argparse.ArgumentParser(description="Transcode videos in worker processes.")
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=600, help="frames per video (CPU time)")
    parser.add_argument("--lease", type=float, default=2.0, help="seconds a claim lasts without heartbeat")
    options = parser.parse_args()
    app.migrate()
    dsn = app.database.dsn
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {media_schema()}")
        conn.execute(f"DROP TABLE IF EXISTS {media_schema()}.progress")
        conn.execute(
            f"CREATE TABLE {media_schema()}.progress (video text PRIMARY KEY, percent int NOT NULL, pid int)"
        )
    names = [f"clip-{n}.mov" for n in range(1, options.videos + 1)]
    ids = app.enqueue_many(transcode.job(video=name, frames=options.frames) for name in names)
    print(f"enqueued {len(ids)} videos of {options.frames} frames; lease {options.lease:g} s", flush=True)
    started = time.monotonic()
    last: list[tuple[str, int]] = []

    def show_progress() -> None:
        nonlocal last
        with psycopg.connect(dsn) as conn:
            rows = conn.execute(
                f"SELECT video, percent FROM {media_schema()}.progress ORDER BY video"
            ).fetchall()
        if rows != last:
            last = rows
            print("  progress " + "  ".join(f"{video} {percent:3d}%" for video, percent in rows), flush=True)

    jobs = asyncio.run(
        run_until_finished(app, [QUEUE], ids, concurrency=2, tick=show_progress, lease=options.lease)
    )
    show_progress()
    longest = max((job.finished_at - job.started_at).total_seconds() for job in jobs if job.finished_at
                  and job.started_at)  # fmt: skip
    once = all(job.attempts == 1 for job in jobs)
    pids = sorted({job.result["pid"] for job in jobs if isinstance(job.result, dict)})
    print(f"summary: {sum(j.state.value == 'succeeded' for j in jobs)}/{len(jobs)} transcoded in "
          f"{time.monotonic() - started:.1f} s by processes {pids}; longest job {longest:.1f} s "
          f"(lease {options.lease:g} s); each ran once: {once}")  # fmt: skip
    app.close()


if __name__ == "__main__":
    main()
