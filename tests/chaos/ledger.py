"""The oracle: what producers were told, what handlers did, and a Jepsen-style total-queue check.

Producers record each enqueue by a client-side ``uid`` as ``ok`` (enqueue returned), ``fail`` (it raised
before reaching the server) or ``info`` (the outcome is unknown: the connection broke while it ran).
Handlers (chaos/app.py) write one `exec_log` row per execution on their own autocommit connection, and their
side effect, one row of `effects` (UNIQUE uid), in the job's own transaction; an effect that finds its uid
already there is recorded in `effect_dups` instead of failing.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg

TABLES = """
CREATE TABLE IF NOT EXISTS {s}.exec_log (
    id bigserial PRIMARY KEY, uid text NOT NULL, job_id bigint NOT NULL, attempt int NOT NULL,
    pid int NOT NULL, t_start double precision NOT NULL, t_end double precision);
CREATE TABLE IF NOT EXISTS {s}.effects (
    uid text PRIMARY KEY, job_id bigint NOT NULL, pid int NOT NULL, attempt int NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.effect_dups (uid text NOT NULL, job_id bigint NOT NULL, pid int NOT NULL);
CREATE TABLE IF NOT EXISTS {s}.leases (uid text NOT NULL, first double precision, last double precision);
"""


def create_tables(dsn: str, schema: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(TABLES.replace("{s}", schema))


@dataclass
class Ledger:
    """Enqueue outcomes by uid (thread-safe)."""

    outcomes: dict[str, str] = field(default_factory=dict)
    job_ids: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, uid: str, outcome: str, job_id: int | None = None) -> None:
        assert outcome in ("ok", "fail", "info")
        with self._lock:
            if self.outcomes.get(uid) != "ok":  # a retry that succeeded settles an unknown outcome
                self.outcomes[uid] = outcome
            if job_id is not None:
                self.job_ids[uid] = job_id


@dataclass
class Verdict:
    """Per uid: lost (ok, never took effect), unexpected (effect of a uid never enqueued or failed),
    duplicated (a second effect), recovered (info, took effect); plus what the queue holds."""

    attempted: int
    ok: int
    info: int
    lost: list[str]
    unexpected: list[str]
    duplicated: list[str]
    recovered: list[str]
    effects: int
    executions: int
    extra_executions: int
    states: dict[str, int]
    jobs_per_uid_max: int

    @property
    def valid(self) -> bool:
        return not (self.lost or self.unexpected or self.duplicated) and self.jobs_per_uid_max <= 1

    def summary(self) -> dict[str, Any]:
        return {
            "attempted": self.attempted, "ok": self.ok, "info": self.info, "lost": len(self.lost),
            "unexpected": len(self.unexpected), "duplicated": len(self.duplicated),
            "recovered": len(self.recovered), "effects": self.effects, "executions": self.executions,
            "extra_executions": self.extra_executions, "states": self.states,
        }  # fmt: skip


def check(dsn: str, schema: str, ledger: Ledger) -> Verdict:
    """Jepsen's total-queue, by uid, after the queue drained."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        effects = [r[0] for r in conn.execute(f"SELECT uid FROM {schema}.effects")]
        dups = [r[0] for r in conn.execute(f"SELECT uid FROM {schema}.effect_dups")]
        executions = conn.execute(f"SELECT count(*) FROM {schema}.exec_log").fetchone()
        states = dict(conn.execute(
            f"SELECT state, count(*) FROM (SELECT state FROM {schema}.jobs UNION ALL "
            f"SELECT state FROM {schema}.finished_jobs) s GROUP BY state"
        ).fetchall())  # fmt: skip
        per_uid = conn.execute(
            f"SELECT coalesce(max(n), 0) FROM (SELECT args->>'uid', count(*) AS n FROM (SELECT args FROM "
            f"{schema}.jobs UNION ALL SELECT args FROM {schema}.finished_jobs) a GROUP BY 1) c"
        ).fetchone()
    done = set(effects)
    counts = Counter(effects) + Counter(dups)
    ok = {u for u, o in ledger.outcomes.items() if o == "ok"}
    info = {u for u, o in ledger.outcomes.items() if o == "info"}
    attempted = ok | info
    n_exec = int(executions[0]) if executions else 0
    return Verdict(
        attempted=len(ledger.outcomes), ok=len(ok), info=len(info),
        lost=sorted(ok - done), unexpected=sorted(done - attempted),
        duplicated=sorted(u for u, n in counts.items() if n > 1), recovered=sorted(info & done),
        effects=len(effects), executions=n_exec, extra_executions=n_exec - len(done),
        states={str(k): int(v) for k, v in states.items()},
        jobs_per_uid_max=int(per_uid[0]) if per_uid else 0,
    )  # fmt: skip


def extra_executions_by(dsn: str, schema: str) -> list[tuple[str, int, int, float, float | None, bool]]:
    """Executions that did not produce the effect: (uid, attempt, pid, t_start, t_end, effect by this pid)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT e.uid, e.attempt, e.pid, e.t_start, e.t_end, f.pid IS NOT NULL FROM {schema}.exec_log e "
            f"LEFT JOIN {schema}.effects f ON f.uid = e.uid AND f.attempt = e.attempt AND f.pid = e.pid "
            f"WHERE f.uid IS NULL"
        ).fetchall()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def executions(dsn: str, schema: str) -> list[tuple[str, int, int, float, float | None]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT uid, attempt, pid, t_start, t_end FROM {schema}.exec_log ORDER BY t_start"
        ).fetchall()
    return [tuple(r) for r in rows]  # type: ignore[misc]
