"""`pageq demo`: an e-commerce order pipeline (payment, inventory, shipping, then a notification)."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from datetime import datetime

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import pageq
from pageq.cli.output import err, out

QUEUES = ["payments", "inventory", "shipping", "notifications"]
BACKOFF = pageq.Backoff.exponential(base=2.0, factor=0.05, cap=1.0, jitter=True)


@dataclass
class Tally:
    """Orders that reached an end, counted in-process for the progress bar."""

    delivered: int = 0
    failed: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    total: int = 0

    def finish(self, delivered: bool) -> None:
        if delivered:
            self.delivered += 1
        else:
            self.failed += 1
        if self.delivered + self.failed >= self.total:
            self.done.set()


class TransientError(Exception):
    """A failure worth retrying (a timeout, a 503)."""


def build_app(schema: str, tally: Tally, seed: int = 7) -> pageq.App:
    """The demo's tasks. Each step enqueues the next inside its own completion's transaction."""
    app = pageq.App(schema=schema)
    rng = random.Random(seed)

    def flaky(rate: float, attempt: int, what: str) -> None:
        if attempt == 1 and rng.random() < rate:
            raise TransientError(f"{what}: upstream timed out")

    async def on_dead(_ctx: pageq.Context, _exc: object) -> None:
        tally.finish(delivered=False)

    async def on_notified(_ctx: pageq.Context, _result: object) -> None:
        tally.finish(delivered=True)

    @app.task(queue="payments", max_attempts=4, retry=BACKOFF, on_dead=on_dead)
    async def charge_payment(ctx: pageq.Context, order_id: int, amount: float) -> dict[str, object]:
        await asyncio.sleep(rng.uniform(0.001, 0.004))
        flaky(0.06, ctx.attempt, "payment gateway")
        if order_id % 97 == 0:
            raise pageq.NonRetryableError(f"card declined for order {order_id}")
        async with ctx.transaction() as conn:
            await reserve_inventory.enqueue_async(order_id=order_id, sku=f"SKU-{order_id % 50}", conn=conn)
        return {"charged": amount}

    @app.task(queue="inventory", max_attempts=4, retry=BACKOFF, on_dead=on_dead)
    async def reserve_inventory(ctx: pageq.Context, order_id: int, sku: str) -> None:
        await asyncio.sleep(rng.uniform(0.001, 0.003))
        flaky(0.04, ctx.attempt, "warehouse API")
        async with ctx.transaction() as conn:
            await ship_order.enqueue_async(order_id=order_id, conn=conn)

    @app.task(queue="shipping", max_attempts=3, retry=BACKOFF, on_dead=on_dead)
    def ship_order(ctx: pageq.Context, order_id: int) -> str:
        time.sleep(rng.uniform(0.001, 0.005))
        if order_id % 211 == 0:
            raise TransientError(f"carrier rejects the address of order {order_id}")
        flaky(0.05, ctx.attempt, "carrier API")
        with ctx.transaction() as conn:
            notify_customer.enqueue(order_id=order_id, conn=conn)
        return f"TRACK-{order_id:06d}"

    @app.task(queue="notifications", max_attempts=5, retry=BACKOFF, on_success=on_notified, on_dead=on_dead)
    async def notify_customer(ctx: pageq.Context, order_id: int) -> None:
        await asyncio.sleep(rng.uniform(0.0005, 0.002))
        flaky(0.02, ctx.attempt, "email provider")

    return app


async def _work(app: pageq.App, tally: Tally, orders: int, concurrency: int) -> float:
    task = app.get_task("charge_payment")
    specs = [task.job(order_id=i, amount=round(10 + (i % 90) * 1.5, 2)) for i in range(1, orders + 1)]
    worker = app.worker(QUEUES, concurrency, poll_interval=0.2, maintenance_interval=0.5, grace=10)
    running = asyncio.create_task(worker.run())
    started = time.perf_counter()
    await app.enqueue_many_async(specs)
    columns = (TextColumn("orders"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=False) as bar:
        progress = bar.add_task("orders", total=orders)
        while not tally.done.is_set() and not running.done():
            bar.update(progress, completed=tally.delivered + tally.failed)
            await asyncio.sleep(0.1)
        bar.update(progress, completed=tally.delivered + tally.failed)
    elapsed = time.perf_counter() - started
    worker.stop()
    await running
    await app.aclose()
    return elapsed


def summary(app: pageq.App, tally: Tally, since: datetime, elapsed: float) -> Table:
    history = app.history(since)
    finished = sum(count for count, _ in history.values())
    attempts = sum(total for _, total in history.values())
    live = sum(n for s in app.queue_stats() for state, n in s.counts.items() if not state.is_final)
    timings = app.timings(since)
    table = Table(title="pageq demo: summary", show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_row("orders delivered", str(tally.delivered))
    table.add_row("orders failed (dead letters)", str(tally.failed))
    for state in (pageq.JobState.SUCCEEDED, pageq.JobState.DEAD, pageq.JobState.CANCELLED):
        table.add_row(f"jobs {state.value}", str(history.get(state, (0, 0))[0]))
    table.add_row("jobs still live", str(live))
    table.add_row("retries", str(attempts - finished))
    table.add_row("throughput", f"{finished / elapsed:,.0f} jobs/s over {elapsed:.1f} s")

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value * 1000:.1f} ms"

    table.add_row("wait p50 / p95", f"{ms(timings.wait_p50)} / {ms(timings.wait_p95)}")
    table.add_row("run p50 / p95", f"{ms(timings.run_p50)} / {ms(timings.run_p95)}")
    return table


def run_demo(orders: int, concurrency: int, schema: str) -> None:
    """Reset the demo schema, run the pipeline to the end, print the summary."""
    tally = Tally(total=orders)
    app = build_app(schema, tally)
    err.print(f"[dim]database: {app.database.label}, schema {schema}[/dim]", highlight=False)
    app.drop_schema()
    app.migrate()
    since = app.clock.now()
    out.print(f"pageq demo: {orders} orders through payments -> inventory -> shipping -> notifications")
    elapsed = asyncio.run(_work(app, tally, orders, concurrency))
    out.print(summary(app, tally, since, elapsed))
    dead = app.dead_jobs(limit=3)
    if dead:
        out.print("some dead letters (inspect with `pageq jobs show ID`):")
        for job in dead:
            out.print(f"  job {job.id} {job.task}: {job.errors[-1].error if job.errors else ''}")
    app.close()
