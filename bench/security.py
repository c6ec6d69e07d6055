"""Cost of security features: drain throughput with payload encryption and the full audit trail, as a
ratio to both off (the issue's goal: at least 70 %).

Usage: python bench/security.py [N] [CONCURRENCY] [ROUNDS]   (embedded PostgreSQL, or PAGEQ_DSN)
Each round runs the four configurations in turn (so drift hits them alike) on a fresh schema: enqueue N
no-op jobs in batches of 1,000, then drain them with one in-process worker. Prints jobs/s (median of rounds).
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pageq

if __package__ in (None, ""):  # run as a script: python bench/NAME.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.configs import enqueue_then_drain, report
from pageq.security.crypto import Keyring, new_key

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
CONCURRENCY = int(sys.argv[2]) if len(sys.argv) > 2 else 200
ROUNDS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
CONFIGS = {  # name: (audit level, encrypted)
    "audit off, clear": ("off", False),
    "audit full, clear": ("full", False),
    "audit off, encrypted": ("off", True),
    "audit full, encrypted": ("full", True),
}
RING = Keyring.parse(f"k1:{new_key()}")


async def one(level: str, encrypted: bool) -> tuple[float, float]:
    app = pageq.App(schema="bench_security", keyring=RING if encrypted else None)

    @app.task(queue="bench")
    async def noop(card: str, i: int) -> dict[str, int]:
        return {"i": i}

    app.drop_schema()
    app.migrate()
    app.security.audit_level(level)
    return await enqueue_then_drain(app, lambda i: noop.job(card="4111-1111", i=i), N, CONCURRENCY)


async def main() -> None:
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in CONFIGS}
    for _ in range(ROUNDS):
        for name, (level, encrypted) in CONFIGS.items():
            results[name].append(await one(level, encrypted))
    report(results, "audit off, clear", f"N={N} concurrency={CONCURRENCY} rounds={ROUNDS}")
    pageq.App(schema="bench_security").drop_schema()


asyncio.run(main())
