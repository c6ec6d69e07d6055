"""The transcoding task. It runs in a process pool (``executor="process"``): CPU-bound work does not hold
the worker's event loop or the GIL of its other jobs. The task must live in an importable module (not
``__main__``): the pool's processes import it by name.

- Progress: the handler writes how far it got to the example's ``progress`` table on a connection of its
  own (a process handler gets its arguments, not ``ctx``), which anyone can read while it runs.
- Heartbeats: a job runs longer than the worker's lease (``--lease``); the worker renews the lease of each
  running job every lease / 3 seconds, so no other worker takes it over and it runs once.
"""

from __future__ import annotations

import hashlib
import os

import psycopg

import pageq

app = pageq.App()  # PAGEQ_DSN, else the embedded database in ./.pageq (each pool process joins it)
QUEUE = "media"


def media_schema() -> str:
    return f"{app.schema}_media"


@app.task(queue=QUEUE, executor="process", timeout=600)
def transcode(video: str, frames: int) -> dict[str, object]:
    """Encode ``frames`` frames (a stand-in: hash each frame many times); report progress every 10 %."""
    digest = hashlib.sha256(video.encode()).digest()
    reported = -1
    with psycopg.connect(app.database.dsn, autocommit=True) as conn:
        for frame in range(frames):
            for _ in range(2_000):  # about 2-5 ms of CPU per frame
                digest = hashlib.sha256(digest).digest()
            percent = (frame + 1) * 100 // frames
            if percent // 10 > reported // 10 or frame + 1 == frames:
                reported = percent
                conn.execute(
                    f"INSERT INTO {media_schema()}.progress (video, percent, pid) VALUES (%s, %s, %s)"
                    " ON CONFLICT (video) DO UPDATE SET percent = excluded.percent, pid = excluded.pid",
                    [video, percent, os.getpid()],
                )
    return {"video": video, "frames": frames, "checksum": digest.hex()[:12], "pid": os.getpid()}
