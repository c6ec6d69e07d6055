"""Per-process record of executed jobs, identical for every system.

A worker process makes one `Recorder` (usually `Recorder.from_env()`) and calls `recorder.record(job_id,
enqueued_ns)` first thing in its no-op handler. Each call appends one fixed-width record

    <q job_id> <q enqueued_ns> <q started_ns>     (24 bytes, little endian)

to an in-memory buffer; a daemon thread appends the buffer to the file every `FLUSH_INTERVAL` seconds, and at
exit. The harness counts a file live by its size (size // 24) and reads the records at the end to check that
every id ran exactly once and to compute enqueue-to-start latency.

Timestamps are `time.monotonic_ns()`: CLOCK_MONOTONIC is system-wide on Linux, so a producer's and a worker's
readings compare directly.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path

RECORD = struct.Struct("<qqq")
FLUSH_INTERVAL = 0.1
ENV_VAR = "BENCH_RECORD"

now_ns = time.monotonic_ns


class Recorder:
    """Collects (job_id, enqueued_ns, started_ns) records and flushes them to `path` in the background."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._buf = bytearray()
        self._lock = threading.Lock()
        self._file = open(self.path, "ab", buffering=0)  # noqa: SIM115 - closed by close()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-recorder", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    @classmethod
    def from_env(cls) -> Recorder:
        """The recorder for the path in $BENCH_RECORD (set by the harness for each worker process)."""
        return cls(os.environ[ENV_VAR])

    def record(self, job_id: int, enqueued_ns: int) -> None:
        """Note that job `job_id` (enqueued at `enqueued_ns`) starts now. Thread-safe; about 1 us."""
        rec = RECORD.pack(job_id, enqueued_ns, now_ns())
        with self._lock:
            self._buf += rec

    def flush(self) -> None:
        with self._lock:
            data, self._buf = self._buf, bytearray()
        if data and not self._file.closed:
            self._file.write(data)

    def close(self) -> None:
        self._stop.set()
        self.flush()
        self._file.close()

    def _loop(self) -> None:
        while not self._stop.wait(FLUSH_INTERVAL):
            self.flush()


def count(paths: list[Path]) -> int:
    """Records written so far to these files (cheap: file sizes only)."""
    total = 0
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            total += p.stat().st_size // RECORD.size
    return total


def read(paths: list[Path]) -> Iterator[tuple[int, int, int]]:
    """Every complete (job_id, enqueued_ns, started_ns) record in these files."""
    for p in paths:
        if not p.exists():
            continue
        data = p.read_bytes()
        usable = len(data) - len(data) % RECORD.size
        yield from RECORD.iter_unpack(data[:usable])
