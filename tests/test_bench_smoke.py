"""The benchmark suite (bench/) still runs: every workload at a tiny size, counts exact. No timings."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import run  # noqa: E402
from bench.harness import verify  # noqa: E402
from bench.systems import load  # noqa: E402

pytestmark = pytest.mark.timeout(600)

WORKLOADS = ["W1", "W2-1", "W2-2", "W3", "W4", "W5", "W6"]
# Procrastinate drains a few hundred jobs/s (much less on a server without autovacuum): a small backlog keeps
# its steady workloads (W4-W6) to seconds instead of minutes.
EXTRA_ARGS = {"procrastinate": ["--backlog-cap", "300"]}


def test_verify_rejects_lost_doubled_and_unexpected_ids() -> None:
    records = [(0, 0, 0), (1, 0, 0), (1, 0, 0), (7, 0, 0), (-1, 0, 0)]
    check = verify(records, [range(-1, 0), range(3)])
    assert (check.expected, check.executed) == (4, 5)
    assert (check.lost, check.doubled, check.unexpected) == (1, 1, 1)
    assert not check.ok
    assert verify([(0, 0, 0), (1, 0, 0)], [range(2)]).ok


def redis_reachable() -> bool:
    """Celery's broker, the machine's Redis (bench/systems/celery_worker.py), answers a PING."""
    import redis
    from bench.systems.celery_worker import REDIS_URL

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


@pytest.mark.parametrize("system", ["pageq", "raw", "pgqueuer", "procrastinate", "celery"])
def test_every_workload_runs_with_exact_counts(system: str, dsn: str, tmp_path: Path) -> None:
    try:
        load(system)
    except ImportError:
        pytest.skip(f"{system} is not installed (pip install -e '.[bench]')")
    if system == "celery" and not redis_reachable():
        pytest.skip("celery needs Redis on 127.0.0.1:6379")
    argv = ["--systems", system, "--workloads", ",".join(WORKLOADS), "--scale", "0.002", "--runs", "1",
            "--dsn", dsn, "--out", str(tmp_path), "--name", "smoke", *EXTRA_ARGS.get(system, [])]  # fmt: skip
    results = run.main(argv)
    samples = results["samples"][system]
    assert sorted(samples) == sorted(WORKLOADS)
    for workload, (sample,) in samples.items():
        assert "error" not in sample, (workload, sample.get("error"))
        check = sample["check"]
        assert check["lost"] == check["doubled"] == check["unexpected"] == 0, (workload, check)
        assert check["executed"] == check["expected"] > 0, (workload, check)
        assert not sample["rejected"]
    saved = json.loads((tmp_path / "smoke.json").read_text())
    assert saved["summary"][system]["W1"]["rejected"] is False
    assert "| " + system + " |" in (tmp_path / "smoke.md").read_text()
