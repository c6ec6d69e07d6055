"""The maintenance leadership: fenced steps never overlap across terms, a dead leader's term is taken over at
once (its session is gone), a live one's only after its TTL. In-process, two or three workers that do not
run: their `Leadership` is driven step by step, with a frozen clock."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import psycopg
import pytest

import pageq
from pageq.store import ops
from pageq.worker.maintenance import LEADER, Leadership, LostLead


@pytest.fixture
def clock_app(dsn: str, schema: str) -> Iterator[tuple[pageq.App, pageq.FrozenClock]]:
    clock = pageq.FrozenClock()
    app = pageq.App(dsn, schema=schema, clock=clock)
    app.migrate()
    yield app, clock
    app.close()
    app.drop_schema()


async def leads(lead: Leadership) -> bool:
    """One fenced transaction, as a step opens them (a refusal ends the term as in the maintenance loop)."""
    try:
        async with lead.fenced():
            return True
    except LostLead:
        await lead.lost()
        return False


async def soon_leads(lead: Leadership) -> bool:
    """`leads`, tried for a few seconds of real time (the frozen clock stands still): a closed session's
    server process lets go of its locks as it exits, a moment after the client closed it."""
    for _ in range(100):
        if await leads(lead):
            return True
        await asyncio.sleep(0.05)
    return False


def holder(app: pageq.App) -> str:
    with psycopg.connect(app.store.dsn, autocommit=True) as conn:
        row = conn.execute(f"SELECT holder FROM {app.schema}.leader WHERE name = %s", (LEADER,)).fetchone()
    assert row is not None
    return str(row[0])


async def test_a_dead_leaders_term_is_taken_over_at_once_a_live_ones_after_its_ttl(
    clock_app: tuple[pageq.App, pageq.FrozenClock],
) -> None:
    app, clock = clock_app
    workers = [app.worker(["q"], 1, maintenance_interval=1.0) for _ in range(3)]
    a, b, c = (Leadership(w) for w in workers)
    try:
        assert await leads(a) and a.leading and a.term == 1
        assert not await leads(b) and not await leads(c)  # a's session lives, its term too
        clock.advance(2.0)
        assert not await leads(b)  # within the TTL (3 intervals)
        assert a.session is not None
        await a.session.close()  # a's process died: the server drops its session and the lock
        assert await soon_leads(b) and b.term == 1  # at once, before the TTL
        assert holder(app) == workers[1].id
        assert not await leads(a)  # a comes back: the term is b's
        assert not await leads(c)  # b holds the lock now
        # b stays alive but stops renewing: after its TTL, c takes over; b's next step is refused
        clock.advance(3.5)
        assert await leads(c) and c.term == 1
        assert not await leads(b) and not b.leading
        # b let go of the lock: c, which took the term by its TTL, takes the lock on its next renewal, so
        # that its own death is noticed at once
        assert await leads(c)
        assert c.session is not None
        await c.session.close()
        assert await soon_leads(a) and a.term == 2
    finally:
        for lead in (a, b, c):
            await lead.close()
        for worker in workers:
            await worker.store.aclose()
            worker.store.close()


async def test_a_candidate_waits_for_the_leaders_fenced_transaction(
    clock_app: tuple[pageq.App, pageq.FrozenClock],
) -> None:
    app, clock = clock_app
    workers = [app.worker(["q"], 1, maintenance_interval=1.0) for _ in range(2)]
    a, b = (Leadership(w) for w in workers)
    order: list[str] = []
    try:
        assert await leads(a)
        inside = asyncio.Event()

        async def slow_step() -> None:
            async with a.fenced() as run:
                await run(ops.promote(clock.now()))
                inside.set()
                clock.advance(10)  # a's term runs out while its step is still inside the transaction
                await asyncio.sleep(0.5)
                order.append("a's step done")

        async def candidate() -> None:
            await inside.wait()
            took = await leads(b)  # waits for a's transaction, then takes the expired term
            order.append(f"b leads: {took}")

        await asyncio.gather(slow_step(), candidate())
        assert order == ["a's step done", "b leads: True"]
        assert not await leads(a)
    finally:
        for lead in (a, b):
            await lead.close()
        for worker in workers:
            await worker.store.aclose()
            worker.store.close()
