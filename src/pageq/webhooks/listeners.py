"""`App.on` handlers, run by the worker that leads maintenance: one process calls them for the whole cluster
(like periodic jobs), at most once per event: events committed while no leader listens are not replayed."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from pageq.retry import Backoff
from pageq.webhooks.events import Event, Handler, stream

if TYPE_CHECKING:
    from pageq.worker.daemon import Worker

log = logging.getLogger("pageq.events")
RECONNECT = Backoff.exponential(base=2.0, cap=5.0, factor=0.05)
MAX_RUNNING = 100
"""Handler calls running at once; past that, reading events waits (a slow handler slows the stream down,
it does not grow memory)."""


async def run(worker: Worker) -> None:
    """While this worker leads, read events and call the app's handlers; stop when it stops leading."""
    handlers = worker.app.event_handlers
    interval = worker.options.maintenance_interval
    if worker.app.database.listen_target is None:
        log.warning("App.on handlers need LISTEN: behind a transaction pooler, give the app a listen_dsn")
        return
    reader: asyncio.Task[None] | None = None
    failures = 0
    try:
        while True:
            if worker.leading and reader is None:
                reader = asyncio.create_task(_read(worker, handlers), name="pageq-events")
            elif reader is not None and (not worker.leading or reader.done()):
                if reader.done() and not reader.cancelled() and reader.exception() is not None:
                    failures += 1
                    log.warning("event stream lost (%s)", reader.exception())
                    await asyncio.sleep(RECONNECT.delay(failures))
                else:
                    failures = 0
                await _stop(reader)
                reader = None
                worker.events_ready.clear()
            await asyncio.sleep(interval)
    finally:
        if reader is not None:
            await _stop(reader)


async def _stop(reader: asyncio.Task[None]) -> None:
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)


async def _read(worker: Worker, handlers: Mapping[str, Sequence[Handler]]) -> None:
    running: set[asyncio.Task[None]] = set()
    slots = asyncio.Semaphore(MAX_RUNNING)
    try:
        events = stream(worker.app, worker.store, sorted(handlers), worker.events_ready)
        async with contextlib.aclosing(events) as found:
            async for event in found:
                for handler in [*handlers.get(event.type, ()), *handlers.get("*", ())]:
                    await slots.acquire()
                    call = asyncio.create_task(_call(handler, event))
                    running.add(call)

                    def finished(done: asyncio.Task[None]) -> None:
                        running.discard(done)
                        slots.release()

                    call.add_done_callback(finished)
    finally:
        if running:
            await asyncio.wait(running, timeout=5.0)


async def _call(handler: Handler, event: Event) -> None:
    try:
        if inspect.iscoroutinefunction(handler):
            await handler(event)
        else:
            await asyncio.to_thread(handler, event)
    except Exception:
        log.exception("event handler %s failed on event %d (%s)", _name(handler), event.id, event.type)


def _name(handler: Handler) -> str:
    return str(getattr(handler, "__qualname__", handler))
