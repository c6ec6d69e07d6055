"""The chaos scenarios at full size (minutes each): ``python scripts/chaos.py [R2 R3 ...] [--json FILE]``.

Starts its own PostgreSQL (fsync on) and prints a table of the measured figures; exits 1 if any scenario
found a violation.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path

from chaos import lifecycle as lc
from chaos import scenarios as sc
from chaos.server import PgServer

FULL = sc.FULL


def schema() -> str:
    return f"chaos_{uuid.uuid4().hex[:8]}"


def plan(dsn: str, logs: Path) -> dict[str, Callable[[], sc.Result]]:
    """The scenarios at full size, in the test plan's order."""
    scenarios = _plan(dsn, logs)
    return dict(sorted(scenarios.items(), key=lambda item: (int(item[0][1:].split("-")[0]), item[0])))


def _plan(dsn: str, logs: Path) -> dict[str, Callable[[], sc.Result]]:
    return {
        "R2": lambda: sc.r2_kill9(dsn, schema(), logs / "r2", jobs=10_000, workers=8, concurrency=4,
                                  kill_every=2.0, chaos_for=60.0, ms=(50, 500), timings=FULL,
                                  drain_timeout=300, strict=True),
        "R3": lambda: sc.r3_restarts(logs / "r3", jobs=6_000, produce_for=60.0, workers=4, concurrency=8,
                                     restarts=((20.0, "fast"), (40.0, "immediate")), down=5.0,
                                     ms=(20, 200), timings=FULL, drain_timeout=300, strict=True),
        "R4": lambda: sc.r4_backend_storm(dsn, schema(), logs / "r4", jobs=5_000, workers=4, concurrency=4,
                                          every=0.5, storm_for=60.0, ms=(20, 200), timings=FULL,
                                          drain_timeout=300),
        "R5": lambda: sc.r5_half_open(logs / "r5", timings=FULL, strict=True),
        "R5-sync": lambda: sc.r5_half_open(logs / "r5s", timings=FULL, sync=True, strict=True),
        "R6": lambda: sc.r6_fencing(dsn, schema(), iterations=1_000),
        "R7": lambda: sc.r7_crash_points(dsn, schema(), logs / "r7", jobs=200, workers=4),
        "R9": lambda: sc.r9_poison(dsn, schema(), logs / "r9", poison=10, normal=2_000, workers=4,
                                   concurrency=4, drain_timeout=600),
        "R14": lambda: sc.r14_enqueue(dsn, schema(), rounds=200, callers=16, batch=10_000),
        "R1": lambda: lc.r1_exactly_once(dsn, schema(), logs / "r1", jobs=20_000, workers=8, concurrency=4,
                                         batches=(1, 2, 64, 1000), claimers=(1, 2, 4, 16, 32), cell_jobs=2000,
                                         timings=FULL, drain_timeout=900),
        "R8": lambda: lc.r8_retries(dsn, schema(), jobs=1200, redrive=100),
        "R10": lambda: lc.r10_long_jobs(dsn, schema(), logs / "r10", long=20, spinning=5, overruns=20,
                                        workers=4, concurrency=12, timeout=5.0, timings=FULL),
        "R11": lambda: lc.r11_shutdown(dsn, schema(), logs / "r11", rounds=20, short_ms=2000, grace=10.0,
                                       timings=FULL),
        "R13": lambda: lc.r13_failover(dsn, schema(), logs / "r13", jobs=4000, workers=3, concurrency=8,
                                       kill_every=5.0, chaos_for=60.0, ms=(50, 500), timings=FULL,
                                       drain_timeout=600, strict=True),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("only", nargs="*", help="scenarios to run (default: all)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    server = PgServer(max_connections=200).init()
    logs = Path(tempfile.mkdtemp(prefix="pageq-chaos-logs-"))
    results: dict[str, dict[str, object]] = {}
    failed = False
    try:
        scenarios = plan(server.dsn, logs)
        for name in args.only or list(scenarios):
            run = scenarios[name]
            started = time.monotonic()
            try:
                result = run()
            except Exception:
                result = sc.Result(name, violations=[traceback.format_exc(limit=5)])
            took = round(time.monotonic() - started, 1)
            failed |= bool(result.violations)
            results[name] = {"seconds": took, "figures": result.figures, "violations": result.violations}
            print(f"{name}: {'PASS' if not result.violations else 'FAIL'} in {took} s  {result.figures}")
            for violation in result.violations[:10]:
                print(f"    violation: {violation}")
            sys.stdout.flush()
            if args.json:
                args.json.write_text(json.dumps(results, indent=2, default=str))
    finally:
        server.destroy()
    print(f"logs in {logs}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
