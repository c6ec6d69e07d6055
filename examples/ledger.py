"""Financial transactions: batches of transfers posted exactly once, a reconciliation once every batch
finished, and the audit trail of a batch. Run: ``python -m examples.ledger [--batches N --size N]``.

- Each batch job posts its transfers inside ``ctx.transaction()``: the ledger rows, the balances and the
  job's completion commit in one transaction. A batch that fails midway (the first attempt of batch 2
  does, on purpose) leaves nothing behind and is retried; one whose commit went through is never run again.
  Either way each transfer is booked exactly once.
- `App.group` runs the batches in parallel and the reconciliation (``then=``) after all of them; it reads
  their results with ``ctx.parent_results()`` and checks the books: the money is all there, every
  transfer is booked once.
- ``app.job_events(id)`` is a job's audit trail: who enqueued, claimed, retried and completed it, when.
"""

from __future__ import annotations

import argparse
import asyncio
import random

import psycopg

import pageq
from examples.common import run_until_finished

app = pageq.App()  # PAGEQ_DSN, else the embedded database in ./.pageq
QUEUE = "ledger"
ACCOUNTS = 10
OPENING = 1_000_00  # cents per account


def books() -> str:
    """The schema of the example's own tables (beside pageq's)."""
    return f"{app.schema}_books"


@app.task(queue=QUEUE, retry=pageq.Backoff.constant(0.2))
def post_batch(ctx: pageq.Context, batch: int, transfers: list[list[int]]) -> int:
    """Book ``transfers`` ([id, from, to, cents], ...) exactly once; returns how many."""
    deltas: dict[int, int] = {}
    with ctx.transaction() as conn:
        for n, (transfer_id, source, target, cents) in enumerate(transfers):
            if batch == 2 and ctx.attempt == 1 and n == len(transfers) // 2:
                raise ConnectionError("bank link dropped midway through the batch")
            conn.execute(
                f"INSERT INTO {books()}.entries (transfer_id, batch, source, target, cents)"
                " VALUES (%s, %s, %s, %s, %s)",
                [transfer_id, batch, source, target, cents],
            )
            deltas[source] = deltas.get(source, 0) - cents
            deltas[target] = deltas.get(target, 0) + cents
        for account in sorted(deltas):  # in one order in every batch: concurrent batches cannot deadlock
            conn.execute(
                f"UPDATE {books()}.accounts SET balance = balance + %s WHERE id = %s",
                [deltas[account], account],
            )
    return len(transfers)  # the job is complete already: this result is not stored


@app.task(queue=QUEUE)
def reconcile(ctx: pageq.Context, transfers: int) -> dict[str, int | bool]:
    batches = ctx.parent_results()
    with ctx.transaction() as conn:
        total, entries, distinct = conn.execute(
            f"SELECT (SELECT sum(balance) FROM {books()}.accounts), count(*), count(DISTINCT transfer_id)"
            f" FROM {books()}.entries"
        ).fetchone() or (0, 0, 0)
    report = {
        "batches": len(batches),
        "batches_succeeded": sum(b.state is pageq.JobState.SUCCEEDED for b in batches),
        "transfers": transfers, "booked": entries, "booked_twice": entries - distinct,
        "balanced": total == ACCOUNTS * OPENING and entries == distinct == transfers,
    }  # fmt: skip
    verdict = "balanced" if report["balanced"] else "NOT BALANCED"
    print(f"  reconcile: {entries} of {transfers} transfers booked, {verdict}", flush=True)
    return report


def set_up_books() -> None:
    with psycopg.connect(app.database.dsn, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {books()} CASCADE")
        conn.execute(f"CREATE SCHEMA {books()}")
        conn.execute(f"CREATE TABLE {books()}.accounts (id int PRIMARY KEY, balance bigint NOT NULL)")
        conn.execute(
            f"CREATE TABLE {books()}.entries (transfer_id int PRIMARY KEY, batch int NOT NULL,"
            " source int NOT NULL, target int NOT NULL, cents bigint NOT NULL)"
        )
        conn.execute(
            f"INSERT INTO {books()}.accounts SELECT i, %s FROM generate_series(1, %s) i", [OPENING, ACCOUNTS]
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=5)
    parser.add_argument("--size", type=int, default=200, help="transfers per batch")
    options = parser.parse_args()
    app.migrate()
    set_up_books()
    rng = random.Random(7)
    batches, next_id = [], 1
    for batch in range(1, options.batches + 1):
        transfers = []
        for _ in range(options.size):
            source, target = rng.sample(range(1, ACCOUNTS + 1), 2)
            transfers.append([next_id, source, target, rng.randint(1, 5000)])
            next_id += 1
        batches.append(post_batch.job(batch=batch, transfers=transfers))
    count = next_id - 1
    ids = app.group(batches, then=reconcile.job(transfers=count))
    print(f"enqueued {len(batches)} batches of {options.size} transfers and a reconciliation", flush=True)
    jobs = asyncio.run(run_until_finished(app, [QUEUE], ids, concurrency=4))
    report = jobs[-1].result
    attempts = [job.attempts for job in jobs[:-1]]
    print(f"summary: {report}; attempts per batch {attempts}")
    retried = next((job for job in jobs[:-1] if job.attempts > 1), jobs[0])
    print(f"audit trail of batch job {retried.id}:")
    for event in app.job_events(retried.id):
        who = event.principal or event.db_role
        print(f"  {event.at:%H:%M:%S.%f} {event.action:10} by {who} {event.reason or ''}".rstrip())
    app.close()


if __name__ == "__main__":
    main()
