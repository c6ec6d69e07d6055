"""SQLAlchemy 2: enqueue in the transaction of a Session or Connection (sync or async), which must use the
psycopg 3 driver (``postgresql+psycopg://``). Docs: docs/integrations/sqlalchemy.md.

Example::

    with Session(engine) as session, session.begin():
        session.add(Order(id=7))
        pageq.contrib.sqlalchemy.enqueue(session, send_receipt, order_id=7)
    # the order and its job commit together, or neither does
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import psycopg
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

from pageq.app import App
from pageq.errors import ConfigError
from pageq.task import Task
from pageq.types import JobSpec

_DRIVER = "pageq needs SQLAlchemy's psycopg 3 driver: a URL of the form postgresql+psycopg://..., got {}"


def psycopg_connection(bind: Session | Connection) -> psycopg.Connection[Any]:
    """The psycopg connection under ``bind``, in its transaction (a Session begins one if it has none)."""
    conn = bind.connection() if isinstance(bind, Session) else bind
    driver = conn.connection.driver_connection
    if not isinstance(driver, psycopg.Connection):
        raise ConfigError(_DRIVER.format(type(driver).__module__))
    return driver


async def psycopg_connection_async(bind: AsyncSession | AsyncConnection) -> psycopg.AsyncConnection[Any]:
    """Async twin of `psycopg_connection`."""
    conn = await bind.connection() if isinstance(bind, AsyncSession) else bind
    driver = (await conn.get_raw_connection()).driver_connection
    if not isinstance(driver, psycopg.AsyncConnection):
        raise ConfigError(_DRIVER.format(type(driver).__module__))
    return driver


def enqueue(bind: Session | Connection, task: Task, /, **kwargs: Any) -> int:
    """Enqueue a job of ``task`` in ``bind``'s transaction: it commits (and runs) only if that does.
    ``kwargs``: the job's arguments and enqueue options, as for `Task.enqueue`. Returns the job id."""
    return task.enqueue(conn=psycopg_connection(bind), **kwargs)


def enqueue_many(bind: Session | Connection, app: App, specs: Iterable[JobSpec], /) -> list[int]:
    """`App.enqueue_many` in ``bind``'s transaction."""
    return app.enqueue_many(specs, conn=psycopg_connection(bind))


async def enqueue_async(bind: AsyncSession | AsyncConnection, task: Task, /, **kwargs: Any) -> int:
    """Async twin of `enqueue`, for an `AsyncSession` or `AsyncConnection`."""
    return await task.enqueue_async(conn=await psycopg_connection_async(bind), **kwargs)


async def enqueue_many_async(
    bind: AsyncSession | AsyncConnection, app: App, specs: Iterable[JobSpec], /
) -> list[int]:
    """Async twin of `enqueue_many`."""
    return await app.enqueue_many_async(specs, conn=await psycopg_connection_async(bind))


__all__ = [
    "enqueue",
    "enqueue_async",
    "enqueue_many",
    "enqueue_many_async",
    "psycopg_connection",
    "psycopg_connection_async",
]
