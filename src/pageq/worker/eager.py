"""Eager start: run a coroutine synchronously up to its first suspension, and only then make it a Task.

A handler that finishes without waiting for anything (common for quick jobs) then costs no Task and no trip
through the event loop. This is what ``asyncio.eager_task_factory`` does on Python 3.12+, for our tasks only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Generator
from typing import Any


class _Continue:
    """An awaitable that goes on driving a coroutine that `start_eager` already started."""

    __slots__ = ("_coro", "_first")

    def __init__(self, coro: Coroutine[Any, Any, None], first: Any) -> None:
        self._coro = coro
        self._first = first

    def __await__(self) -> Generator[Any, Any, None]:
        coro, pending = self._coro, self._first
        while True:
            try:
                sent = yield pending
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:  # thrown in by the Task: cancellation
                try:
                    pending = coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    pending = coro.send(sent)
                except StopIteration:
                    return


async def _run(awaitable: _Continue) -> None:
    await awaitable


def start_eager(coro: Coroutine[Any, Any, None]) -> asyncio.Task[None] | None:
    """Run ``coro`` until it first suspends; returns the Task that finishes it, or None if it is done."""
    try:
        first = coro.send(None)
    except StopIteration:
        return None
    return asyncio.get_running_loop().create_task(_run(_Continue(coro, first)))
