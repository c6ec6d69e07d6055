"""Results: medians and min-max over runs, ratios against the peers, the issue's targets, files and charts."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

# The metric each workload is judged by, and whether higher is better.
HEADLINE: dict[str, tuple[str, bool]] = {
    "W1": ("enqueue_per_s", True),
    "W2-1": ("drain_per_s", True),
    "W2-2": ("drain_per_s", True),
    "W3": ("latency_p50_ms", False),
    "W4": ("completed_per_s", True),
    "W5": ("last_over_first", True),
    "W6": ("during_over_before", True),
}
COLUMNS: dict[str, list[str]] = {
    "W1": ["enqueue_per_s"],
    "W2-1": ["drain_per_s", "commits_per_job", "wal_bytes_per_job"],
    "W2-2": ["drain_per_s", "commits_per_job", "wal_bytes_per_job"],
    "W3": ["latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "latency_max_ms", "achieved_rate"],
    "W4": [
        "completed_per_s",
        "enqueue_per_s",
        "latency_p50_ms",
        "latency_p99_ms",
        "commits_per_job",
        "worker_commits_per_job",
        "jobs_per_claim",
        "wal_bytes_per_job",
    ],
    "W5": [
        "jobs",
        "first_per_s",
        "last_per_s",
        "last_over_first",
        "seconds",
        "commits_per_job",
        "wal_bytes_per_job",
    ],
    "W6": [
        "before_per_s",
        "during_per_s",
        "after_per_s",
        "during_over_before",
        "recovery_s",
        "before_latency_p50_ms",
        "during_latency_p50_ms",
        "during_latency_p99_ms",
        "after_latency_p50_ms",
    ],
}
PEERS = ("pgqueuer", "procrastinate", "celery")


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """{system: {workload: {metric: {median, min, max}, rejected, errors, check}}}."""
    out: dict[str, Any] = {}
    for system, by_workload in results["samples"].items():
        for workload, samples in by_workload.items():
            good = [s for s in samples if "error" not in s]
            metrics: dict[str, Any] = {}
            keys = {
                k
                for s in good
                for k, v in s.items()
                if isinstance(v, int | float) and not isinstance(v, bool)
            }
            for key in sorted(keys):
                values = [s[key] for s in good if isinstance(s.get(key), int | float)]
                metrics[key] = {
                    "median": statistics.median(values),
                    "min": min(values),
                    "max": max(values),
                    "n": len(values),
                }
            checks = [s["check"] for s in good if "check" in s]
            out.setdefault(system, {})[workload] = {
                "metrics": metrics,
                "rejected": any(s.get("rejected") for s in samples),
                "errors": [s["error"] for s in samples if "error" in s],
                "lost": sum(c["lost"] for c in checks),
                "doubled": sum(c["doubled"] for c in checks),
                "unexpected": sum(c["unexpected"] for c in checks),
                "runs": len(samples),
            }
    return out


def median(summary: dict[str, Any], system: str, workload: str, metric: str) -> float | None:
    try:
        return float(summary[system][workload]["metrics"][metric]["median"])
    except KeyError:
        return None


def ratios(summary: dict[str, Any]) -> dict[str, dict[str, float]]:
    """pageq / peer of each workload's headline metric (for latency, < 1 means pageq is faster)."""
    out: dict[str, dict[str, float]] = {}
    for workload, (metric, _) in HEADLINE.items():
        mine = median(summary, "pageq", workload, metric)
        for peer in summary:
            theirs = median(summary, peer, workload, metric)
            if peer != "pageq" and mine is not None and theirs:
                out.setdefault(workload, {})[peer] = round(mine / theirs, 3)
    return out


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and whether it is met (None: not measured)."""
    s = results["summary"]
    m = lambda sys, wl, key: median(s, sys, wl, key)  # noqa: E731
    rows: list[dict[str, Any]] = []

    def add(name: str, value: float | None, goal: float | None, met: bool | None, note: str = "") -> None:
        rows.append({"target": name, "value": value, "goal": goal, "met": met, "note": note})

    def ratio(name: str, a: float | None, b: float | None, goal: float) -> None:
        r = round(a / b, 2) if a is not None and b else None
        add(name, r, goal, None if r is None else r >= goal)

    ratio(
        "W2 drain, 1 process: pageq / PgQueuer >= 2",
        m("pageq", "W2-1", "drain_per_s"),
        m("pgqueuer", "W2-1", "drain_per_s"),
        2.0,
    )
    ratio(
        "W2 drain: pageq 2 processes / 1 process >= 1.3",
        m("pageq", "W2-2", "drain_per_s"),
        m("pageq", "W2-1", "drain_per_s"),
        1.3,
    )
    ratio(
        "W1 bulk enqueue: pageq / PgQueuer >= 2.5",
        m("pageq", "W1", "enqueue_per_s"),
        m("pgqueuer", "W1", "enqueue_per_s"),
        2.5,
    )
    for p in ("p50", "p99"):
        mine = m("pageq", "W3", f"latency_{p}_ms")
        peers = [v for v in (m(x, "W3", f"latency_{p}_ms") for x in PEERS) if v is not None]
        add(
            f"W3 {p}: pageq below every peer",
            mine,
            min(peers) if peers else None,
            None if mine is None or not peers else mine < min(peers),
            "goal = best peer (ms)",
        )
        floor = m("raw", "W3", f"latency_{p}_ms")
        r = round(mine / floor, 2) if mine is not None and floor else None
        add(f"W3 {p}: pageq within 2x the raw floor", r, 2.0, None if r is None else r <= 2.0)
    ratio(
        "W4 end to end: pageq / PgQueuer >= 1.5",
        m("pageq", "W4", "completed_per_s"),
        m("pgqueuer", "W4", "completed_per_s"),
        1.5,
    )
    v = m("pageq", "W5", "last_over_first")
    add("W5: last 10% rate / first 10% >= 0.85", v, 0.85, None if v is None else v >= 0.85)
    v = m("pageq", "W6", "during_over_before")
    add("W6: rate during held transaction / baseline >= 0.5", v, 0.5, None if v is None else v >= 0.5)
    v = m("pageq", "W6", "recovery_s")
    measured = "W6" in s.get("pageq", {})
    add(
        "W6: back to 90% of baseline within 60 s of release",
        v,
        60.0,
        None if not measured else (v is not None and v <= 60.0),
        "value None = never recovered",
    )
    batch = results["systems"].get("pageq", {}).get("claim_batch")
    v = m("pageq", "W4", "commits_per_job")
    goal = round(3 / batch + 0.01, 4) if batch else None
    add(
        "W4 commits per job <= 3/N + 0.01 (N = claim batch)",
        v,
        goal,
        None if v is None or goal is None else v <= goal,
        "includes producer commits (1 per batch)",
    )
    v = m("pageq", "W4", "worker_commits_per_job")
    per_claim = m("pageq", "W4", "jobs_per_claim")
    goal = round(3 / per_claim + 0.01, 4) if per_claim else None
    add(
        "W4 worker commits per job <= 3/N + 0.01 (N = measured jobs per claim)",
        v,
        goal,
        None if v is None or goal is None else v <= goal,
        f"producer commits excluded; N = {per_claim}",
    )
    return rows


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float | int):
        return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)


def cell(summary: dict[str, Any], system: str, workload: str, metric: str) -> str:
    got = summary.get(system, {}).get(workload, {}).get("metrics", {}).get(metric)
    if got is None:
        return "-"
    if got["n"] > 1 and got["min"] != got["max"]:
        return f"{fmt(got['median'])} ({fmt(got['min'])}-{fmt(got['max'])})"
    return fmt(got["median"])


def one_line(workload: str, sample: dict[str, Any]) -> str:
    if "error" in sample:
        return f"ERROR {sample['error'][:300]}"
    keys = COLUMNS.get(workload, [])[:3]
    body = ", ".join(f"{k}={fmt(sample.get(k))}" for k in keys)
    check = sample.get("check", {})
    verdict = "REJECTED" if sample.get("rejected") else "ok"
    counts = f"lost={check.get('lost')} doubled={check.get('doubled')}"
    return f"{body}; {counts} {verdict} ({sample.get('wall_s', '?')} s)"


def text_summary(results: dict[str, Any]) -> str:
    s = results["summary"]
    lines = []
    for workload in HEADLINE:
        present = [sys for sys in s if workload in s[sys]]
        if not present:
            continue
        lines.append(f"{workload}:")
        for system in present:
            entry = s[system][workload]
            cols = ", ".join(f"{c}={cell(s, system, workload, c)}" for c in COLUMNS[workload][:4])
            flag = " REJECTED" if entry["rejected"] else ""
            lines.append(f"  {system:14} {cols}{flag}")
    return "\n".join(lines)


def markdown(results: dict[str, Any], charts: list[str]) -> str:
    s = results["summary"]
    mach, pg = results["machine"], results["postgres"]
    out = [
        f"# Benchmark results {results['date'][:10]}",
        "",
        f"`{results['command']}` at commit {results.get('git', '?')}: scale {results['scale']},"
        f" {results['runs']} run(s); values are the median"
        " of the runs with (min-max) when they differ. Every job's execution is counted by id: a system"
        " with a lost, doubled or unexpected job is marked REJECTED.",
        "",
        "## Machine and server",
        "",
        f"- {mach['nproc']} CPUs ({mach['cpu']}), {mach['memory_gb']} GB RAM, {mach['os']},"
        f" Python {mach['python']}",
        f"- PostgreSQL {pg['server_version']} ({results['server']}): "
        + ", ".join(f"{k}={v}" for k, v in pg.items() if k != "server_version"),
        f"- options: {json.dumps(results['options'])}",
        "",
        "## Systems",
        "",
        "| system | version | settings |",
        "|---|---|---|",
    ]
    for name, info in results["systems"].items():
        settings = "; ".join(f"{k}: {v}" for k, v in info["settings"].items())
        out.append(f"| {name} | {info['version']} | {settings} |")
    for name, why in results.get("skipped", {}).items():
        out.append(f"| {name} | - | skipped: {why} |")
    out += ["", "## Results", ""]
    for workload in HEADLINE:
        present = [sys for sys in s if workload in s[sys]]
        if not present:
            continue
        cols = COLUMNS[workload]
        out += [
            f"### {workload}",
            "",
            "| system | " + " | ".join(cols) + " | lost | doubled | verdict |",
            "|---" * (len(cols) + 4) + "|",
        ]
        for system in present:
            e = s[system][workload]
            verdict = "REJECTED" if e["rejected"] else "ok"
            if e["errors"]:
                verdict += f" ({len(e['errors'])} error: {e['errors'][0][:120]})"
            out.append(
                f"| {system} | "
                + " | ".join(cell(s, system, workload, c) for c in cols)
                + f" | {e['lost']} | {e['doubled']} | {verdict} |"
            )
        out.append("")
    r = ratios(s)
    if r:
        out += [
            "## Ratios pageq / peer (headline metric; for W3 latency < 1 is better)",
            "",
            "| workload | metric | " + " | ".join(sorted({p for v in r.values() for p in v})) + " |",
        ]
        peers = sorted({p for v in r.values() for p in v})
        out.append("|---" * (len(peers) + 2) + "|")
        for workload, by_peer in r.items():
            out.append(
                f"| {workload} | {HEADLINE[workload][0]} | "
                + " | ".join(fmt(by_peer.get(p)) for p in peers)
                + " |"
            )
        out.append("")
    out += ["## The issue's targets", "", "| target | measured | goal | met |", "|---|---|---|---|"]
    for t in targets(results):
        note = f" ({t['note']})" if t["note"] else ""
        out.append(f"| {t['target']}{note} | {fmt(t['value'])} | {fmt(t['goal'])} | {fmt(t['met'])} |")
    w5 = {sys: e["W5"] for sys, e in results["samples"].items() if "W5" in e and "error" not in e["W5"][-1]}
    if w5:
        out += [
            "",
            "## W5 tables at the end (last run)",
            "",
            "| system | table | live | dead | table MB | index MB |",
            "|---|---|---|---|---|---|",
        ]
        for sys, samples in w5.items():
            for table, t in sorted(samples[-1].get("tables_end", {}).items()):
                out.append(
                    f"| {sys} | {table} | {t['live']:,} | {t['dead']:,} | {t['table_bytes'] / 2**20:.1f}"
                    f" | {t['index_bytes'] / 2**20:.1f} |"
                )
    if charts:
        out += ["", "## Charts", ""] + [f"![{c}]({c})" for c in charts]
    return "\n".join(out) + "\n"


def write(results: dict[str, Any], folder: Path, name: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    charts = draw(results, folder, name)
    md = folder / f"{name}.md"
    js = folder / f"{name}.json"
    results["targets"] = targets(results)
    results["ratios"] = ratios(results["summary"])
    md.write_text(markdown(results, [c.name for c in charts]))
    js.write_text(json.dumps(results, indent=1, default=str))
    return [md, js, *charts]


def draw(results: dict[str, Any], folder: Path, name: str) -> list[Path]:
    """PNG charts (matplotlib, Agg); none when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    s = results["summary"]
    systems = list(s)
    made: list[Path] = []

    def bars(workloads: list[tuple[str, str]], title: str, ylabel: str, path: Path, log: bool) -> None:
        fig, ax = plt.subplots(figsize=(10, 5))
        width = 0.8 / max(1, len(systems))
        for k, system in enumerate(systems):
            xs, ys, lo, hi = [], [], [], []
            for x, (wl, metric) in enumerate(workloads):
                got = s[system].get(wl, {}).get("metrics", {}).get(metric)
                if got:
                    xs.append(x + k * width)
                    ys.append(got["median"])
                    lo.append(got["median"] - got["min"])
                    hi.append(got["max"] - got["median"])
            if xs:
                ax.bar(xs, ys, width, yerr=[lo, hi], label=system, capsize=3)
        ax.set_xticks([x + width * (len(systems) - 1) / 2 for x in range(len(workloads))])
        ax.set_xticklabels([f"{wl}\n{metric}" for wl, metric in workloads], fontsize=8)
        if log:
            ax.set_yscale("log")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend()
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
        made.append(path)

    tp = [
        (wl, m)
        for wl, m in (
            ("W1", "enqueue_per_s"),
            ("W2-1", "drain_per_s"),
            ("W2-2", "drain_per_s"),
            ("W4", "completed_per_s"),
        )
        if any(wl in s[x] for x in systems)
    ]
    if tp:
        bars(tp, "Throughput (median, min-max)", "jobs/s (log)", folder / f"{name}-throughput.png", True)
    lat = [("W3", f"latency_{p}_ms") for p in ("p50", "p95", "p99", "max")]
    if any("W3" in s[x] for x in systems):
        bars(
            lat, "W3 enqueue-to-start latency at 200 jobs/s", "ms (log)", folder / f"{name}-latency.png", True
        )
    w6 = {x: e["W6"][0] for x, e in results["samples"].items() if "W6" in e and "timeline" in e["W6"][0]}
    if w6:
        fig, ax = plt.subplots(figsize=(10, 5))
        for system, sample in w6.items():
            ax.plot(range(len(sample["timeline"])), sample["timeline"], label=system)
            for mark in sample["marks_s"]:
                ax.axvline(mark, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("seconds (dotted: held transaction opened / closed)")
        ax.set_ylabel("jobs started per second")
        ax.set_title("W6: throughput around a 60 s REPEATABLE READ transaction (run 1)")
        ax.legend()
        fig.tight_layout()
        path = folder / f"{name}-w6.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        made.append(path)
    return made
