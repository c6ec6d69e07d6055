"""A producer process for the steady workloads (W4-W6): enqueue batches as fast as the system takes them.

    python -m bench.producer SYSTEM DSN --first ID [--limit N] [--batch B] [--duration S] [--rate R]
        [--cap C --producers P --records FILE...] --out FILE

Ids are FIRST, FIRST+1, ... . With `--cap`, the producer pauses while the backlog (all producers' enqueued
jobs, estimated as P x its own, minus the jobs recorded by the workers) exceeds C, so an unthrottled
producer measures the sustainable end-to-end rate instead of growing an unbounded backlog. With `--rate`,
batches are paced to R jobs/s. Stops after `--duration` s, `--limit` jobs, or SIGTERM (after the current
batch), then writes {"first": ID, "count": N} to `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import time
from pathlib import Path

from bench import recorder
from bench.systems import load


async def below_cap(
    args: argparse.Namespace, paths: list[Path], sent: int, stop: asyncio.Event, deadline: float
) -> None:
    """Wait while the estimated backlog exceeds --cap (polls the workers' record files)."""
    while stop.is_set() is False and time.monotonic() < deadline:
        if args.producers * sent + args.offset - recorder.count(paths) <= args.cap:
            return
        await asyncio.sleep(0.002)


async def produce(args: argparse.Namespace) -> int:
    system = load(args.system)
    paths = [Path(p) for p in args.records]
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    sent = 0
    async with system.producer(args.dsn) as producer:
        started = time.monotonic()
        deadline = started + args.duration
        while not stop.is_set() and time.monotonic() < deadline and (not args.limit or sent < args.limit):
            if args.cap:
                await below_cap(args, paths, sent, stop, deadline)
            if args.rate:
                await asyncio.sleep(max(0.0, started + sent / args.rate - time.monotonic()))
            n = min(args.batch, args.limit - sent) if args.limit else args.batch
            first = args.first + sent
            await producer.enqueue_many(range(first, first + n), recorder.now_ns())
            sent += n
    return sent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("system")
    parser.add_argument("dsn")
    parser.add_argument("--first", type=int, required=True)
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--cap", type=int, default=0)
    parser.add_argument("--producers", type=int, default=1)
    parser.add_argument("--offset", type=int, default=0, help="jobs recorded before this producer started")
    parser.add_argument("--records", nargs="*", default=[])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    sent = asyncio.run(produce(args))
    Path(args.out).write_text(json.dumps({"first": args.first, "count": sent}))


if __name__ == "__main__":
    main()
