"""A/B of the drain baseline between two source trees, interleaved so that the machine's drift hits both.

Usage: python bench/ab.py TREE_A TREE_B [--runs 7] [--jobs 30000] [--concurrency 500]

Each run imports pageq from TREE/src (PYTHONPATH) and runs TREE_A's bench/drain.py (the same workload for
both), alternating A, B, B, A, ... Prints each rate and the median of B/A per pair. Uses PAGEQ_DSN if set,
else each run's embedded server. Meant for "feature X costs the hot path nothing when unused" checks.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

RATE = re.compile(r"drain \(1 process, concurrency \d+\): ([\d,]+) jobs/s")


def drain(tree: Path, script: Path, jobs: int, concurrency: int) -> float:
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    out = subprocess.run(
        [sys.executable, str(script), str(jobs), str(concurrency)],
        env=env, capture_output=True, text=True, check=True, cwd=tree,
    )  # fmt: skip
    match = RATE.search(out.stdout)
    if match is None:
        raise SystemExit(f"no rate in the output of {tree}: {out.stdout[-500:]} {out.stderr[-500:]}")
    return float(match.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--jobs", type=int, default=30_000)
    parser.add_argument("--concurrency", type=int, default=500)
    args = parser.parse_args()
    script = args.a / "bench" / "drain.py"
    ratios = []
    for run in range(args.runs):
        order = [("A", args.a), ("B", args.b)] if run % 2 == 0 else [("B", args.b), ("A", args.a)]
        rates = {name: drain(tree, script, args.jobs, args.concurrency) for name, tree in order}
        ratios.append(rates["B"] / rates["A"])
        print(f"run {run + 1}: A {rates['A']:,.0f} jobs/s  B {rates['B']:,.0f} jobs/s  B/A {ratios[-1]:.3f}")
    print(f"median B/A over {args.runs} pairs: {statistics.median(ratios):.3f} (min {min(ratios):.3f}, "
          f"max {max(ratios):.3f})")  # fmt: skip


if __name__ == "__main__":
    main()
