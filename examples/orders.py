"""E-commerce order fulfilment: reserve stock, charge, ship, one after the other, and a callback that
notifies the customer whatever happened. Run: ``python -m examples.orders [--orders N]``.

- Each order is a chain (`App.chain`): a step runs once the previous one succeeded; when one dies the
  rest of the chain is cancelled.
- The customer notification is a follow-up (``on_complete=``) of the last step: it runs once that step
  finished, whatever its outcome, and reads it with ``ctx.parent_results()``.
- The payment gateway times out on the first attempt of every third order: pageq retries it.
- An order of a sold-out item fails for good (`NonRetryableError`): no retry, no charge, no shipping.
"""

from __future__ import annotations

import argparse
import asyncio

import pageq
from examples.common import run_until_finished

app = pageq.App()  # PAGEQ_DSN, else the embedded database in ./.pageq
QUEUE = "orders"
SOLD_OUT = "lamp"
quick = pageq.Backoff.constant(0.2)  # retry after 0.2 s (an example should not wait long)


@app.task(queue=QUEUE)
def reserve_stock(order_id: int, item: str) -> str:
    if item == SOLD_OUT:
        raise pageq.NonRetryableError(f"{item} is sold out")
    return f"1 x {item} reserved"


@app.task(queue=QUEUE, retry=quick)
def charge(ctx: pageq.Context, order_id: int, cents: int) -> str:
    if order_id % 3 == 0 and ctx.attempt == 1:
        raise TimeoutError("payment gateway did not answer")
    return f"charged {cents / 100:.2f} EUR"


@app.task(queue=QUEUE)
def ship(order_id: int) -> str:
    return f"TRACK-{order_id:05d}"


@app.task(queue=QUEUE)
def notify_customer(ctx: pageq.Context, order_id: int, email: str) -> str:
    (shipped,) = ctx.parent_results()  # the job this one follows: ship
    if shipped.state is pageq.JobState.SUCCEEDED:
        message = f"to {email}: order {order_id} is on its way, tracking {shipped.result}"
    else:
        message = f"to {email}: sorry, order {order_id} could not be fulfilled; you were not charged"
    print("  mail", message, flush=True)
    return message


def place(order_id: int, item: str, cents: int, email: str) -> list[int]:
    """Enqueue an order's chain; all its jobs commit together."""
    return app.chain(
        reserve_stock.job(order_id=order_id, item=item),
        charge.job(order_id=order_id, cents=cents),
        ship.job(order_id=order_id, on_complete=notify_customer.job(order_id=order_id, email=email)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=6, help="orders to place (every 4th is sold out)")
    orders = parser.parse_args().orders
    app.migrate()
    ids = []
    for n in range(1, orders + 1):
        item = SOLD_OUT if n % 4 == 0 else "book"
        ids.extend(place(n, item, 1990 + n, f"customer{n}@example.com"))
    ids.extend(job.id for job in app.list_jobs(task="notify_customer", limit=1000) if job.id > min(ids))
    print(f"placed {orders} orders ({len(ids)} jobs); running a worker", flush=True)
    jobs = asyncio.run(run_until_finished(app, [QUEUE], ids))
    by_task: dict[str, dict[str, int]] = {}
    for job in jobs:
        counts = by_task.setdefault(job.task, {})
        counts[job.state.value] = counts.get(job.state.value, 0) + 1
    retried = sum(1 for job in jobs if job.task == "charge" and job.attempts > 1)
    shipped = by_task["ship"].get("succeeded", 0)
    mailed = by_task["notify_customer"].get("succeeded", 0)
    print(f"summary: {shipped} shipped, {orders - shipped} not fulfilled, {mailed} customers notified, "
          f"{retried} payments retried")  # fmt: skip
    for task, counts in sorted(by_task.items()):
        print(f"  {task:16} {counts}")
    app.close()


if __name__ == "__main__":
    main()
