"""Connections: pools, executing named queries (sync and async), transactions and LISTEN."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import psycopg
import psycopg.errors
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from pageq.errors import (
    DatabaseError,
    DuplicateJobError,
    InvalidOptionError,
    JobNotFoundError,
    MigrationError,
)
from pageq.store.queries import channel_for, queries_for

T = TypeVar("T")
RECONNECT_TIMEOUT = 5.0
"""How long a pool tries to replace a lost connection (waits of 1, 2, then 2 s) before it gives up; the next
request starts over. psycopg_pool's backoff doubles without a cap, so this caps it: after a server restart,
connections come back within about 5 s of the server."""
Rows = list[tuple[Any, ...]]
SyncConn = psycopg.Connection[tuple[Any, ...]]
AsyncConn = psycopg.AsyncConnection[tuple[Any, ...]]


@dataclass(frozen=True, slots=True)
class Copy:
    """A COPY (text format) of `count` rows before an `Op`: the `reserve` query hands out one row of prefix
    columns per row (a job's id, then its partition); `chunks` turns those into the COPY data, chunk by chunk,
    so that the server inserts one chunk while Python builds the next.
    """

    reserve: str
    copy: str
    count: int
    chunks: Callable[[Rows], Iterable[str]]


@dataclass(frozen=True, slots=True)
class Op(Generic[T]):
    """One named query with its parameters and how to read its result: sans-I/O, run sync or async.

    With ``copy``, the executor first reserves one id per row, COPYs the rows with their ids, then runs the
    query; ``decode`` then receives the reserved ids as rows.
    """

    query: str
    params: Mapping[str, object]
    decode: Callable[[Rows, int], T]
    copy: Copy | None = None
    prepare: bool | None = None  # None: psycopg decides (prepared after 5 runs); False: always planned anew


def _joined(conn: SyncConn) -> contextlib.AbstractContextManager[object]:
    """A block around the COPY's three statements that joins the caller's transaction: `transaction()` on an
    idle connection that is not in autocommit would BEGIN and COMMIT on its own, committing an enqueue that
    the caller meant to roll back. Without autocommit the first statement opens the transaction that the
    caller (or the pool) ends; with autocommit the block makes the three statements one transaction.
    (Found by the chaos suite's R14.)"""
    return conn.transaction() if conn.autocommit else contextlib.nullcontext()


def _ajoined(conn: AsyncConn) -> contextlib.AbstractAsyncContextManager[object]:
    """Async twin of `_joined`."""
    return conn.transaction() if conn.autocommit else contextlib.nullcontext()


def translate(exc: psycopg.Error, schema: str) -> Exception:
    """Map a driver error to a pageq error with a one-line message."""
    if isinstance(exc, psycopg.errors.UndefinedTable | psycopg.errors.InvalidSchemaName):
        return MigrationError(f"pageq schema {schema!r} is not set up: run `pageq migrate`")
    if isinstance(exc, psycopg.errors.RaiseException):  # raised on purpose by pageq's SQL functions
        kind, _, value = (exc.diag.message_primary or "").partition(":")
        if kind == "pageq.unique" and value.isdigit():
            return DuplicateJobError(f"the unique key is held by job {value}", int(value))
        if kind == "pageq.parent" and value.isdigit():
            return JobNotFoundError(f"after=: no job with id {value}")
        if kind == "pageq.invalid":  # a request the schema refuses, e.g. webhooks above the audit level
            return InvalidOptionError(value)
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DatabaseError(f"database error: {first}")


def cannot_connect(exc: Exception) -> DatabaseError:
    """A connection failure as one line (libpq adds a hint on a second line)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return DatabaseError(f"cannot connect to the database: {first}")


class Store:
    """Executes named queries for one schema, with lazily opened sync and async pools."""

    def __init__(
        self, dsn: str, schema: str, *, max_size: int = 10, prepare: bool = True,
        principal: str | None = None, wait: float = 30.0,
    ) -> None:  # fmt: skip
        self.dsn = dsn
        self.principal = principal
        # behind a transaction pooler, a prepared statement would outlive its server session, and so would a
        # session setting: the acting principal is then named per transaction (`_attributed`)
        self._kwargs: dict[str, Any] = {} if prepare else {"prepare_threshold": None}
        self._session_settings = prepare
        self.schema = schema
        self.channel = channel_for(schema)
        self.queries = queries_for(schema)
        self._max_size = max_size
        self._wait = wait  # seconds a request waits for a pooled connection before it fails
        self._sync_pool: ConnectionPool[SyncConn] | None = None
        self._async_pools: dict[asyncio.AbstractEventLoop, AsyncConnectionPool[AsyncConn]] = {}
        self._lock = threading.Lock()

    # ----- pools
    def _sync(self) -> ConnectionPool[SyncConn]:
        with self._lock:
            if self._sync_pool is None:
                self.connect().close()  # fail at once with libpq's reason, not after the pool's timeout
                pool: ConnectionPool[SyncConn] = ConnectionPool(
                    self.dsn,
                    min_size=1,
                    max_size=self._max_size,
                    open=False,
                    name="pageq-sync",
                    kwargs=self._kwargs,
                    reconnect_timeout=RECONNECT_TIMEOUT,
                    timeout=self._wait,
                    configure=self._configure if self.principal and self._session_settings else None,
                )
                try:
                    pool.open(wait=True, timeout=15)
                except Exception as exc:
                    pool.close()
                    raise cannot_connect(exc) from None
                self._sync_pool = pool
            return self._sync_pool

    async def _async(self) -> AsyncConnectionPool[AsyncConn]:
        loop = asyncio.get_running_loop()
        pool = self._async_pools.get(loop)
        if pool is None:
            pool = AsyncConnectionPool(
                self.dsn,
                min_size=1,
                max_size=self._max_size,
                open=False,
                name="pageq-async",
                kwargs=self._kwargs,
                reconnect_timeout=RECONNECT_TIMEOUT,
                timeout=self._wait,
                configure=self._aconfigure if self.principal and self._session_settings else None,
            )
            try:
                await pool.open(wait=True, timeout=15)
            except Exception as exc:
                await pool.close()
                raise cannot_connect(exc) from None
            self._async_pools[loop] = pool
        return pool

    def _configure(self, conn: SyncConn) -> None:
        """Name the acting principal on each new connection: audit rows written on it record it."""
        conn.execute(self.queries["set_principal"], {"principal": self.principal})
        conn.commit()

    async def _aconfigure(self, conn: AsyncConn) -> None:
        await conn.execute(self.queries["set_principal"], {"principal": self.principal})
        await conn.commit()

    def __repr__(self) -> str:
        return f"Store(schema={self.schema!r}, principal={self.principal!r})"  # never the DSN (password)

    def close(self) -> None:
        if self._sync_pool is not None:
            self._sync_pool.close()
            self._sync_pool = None

    async def aclose(self) -> None:
        pool = self._async_pools.pop(asyncio.get_running_loop(), None)
        if pool is not None:
            await pool.close()

    # ----- running ops
    def run(self, op: Op[T], conn: SyncConn | None = None) -> T:
        """Run ``op`` on ``conn`` (inside the caller's transaction) or on a pooled connection."""
        try:
            if conn is not None:
                return self._attributed(conn, op) if self.principal else self._exec(conn, op)
            with self._sync().connection() as pooled:
                if self.principal and not self._session_settings:
                    return self._attributed(pooled, op)
                return self._exec(pooled, op)
        except psycopg.Error as exc:
            raise translate(exc, self.schema) from exc

    async def arun(self, op: Op[T], conn: AsyncConn | None = None) -> T:
        """Async twin of `run`, sharing the same `Op`."""
        try:
            if conn is not None:
                return await (self._aattributed(conn, op) if self.principal else self._aexec(conn, op))
            async with (await self._async()).connection() as pooled:
                if self.principal and not self._session_settings:
                    return await self._aattributed(pooled, op)
                return await self._aexec(pooled, op)
        except psycopg.Error as exc:
            raise translate(exc, self.schema) from exc

    def _attributed(self, conn: SyncConn, op: Op[T]) -> T:
        """``op`` with the acting principal named for its transaction only (one more statement), where the
        session cannot carry it: the caller's connection, or a transaction pooler's."""
        with _joined(conn):
            conn.execute(self.queries["set_principal_local"], {"principal": self.principal})
            return self._exec(conn, op)

    async def _aattributed(self, conn: AsyncConn, op: Op[T]) -> T:
        """Async twin of `_attributed`."""
        async with _ajoined(conn):
            await conn.execute(self.queries["set_principal_local"], {"principal": self.principal})
            return await self._aexec(conn, op)

    def _exec(self, conn: SyncConn, op: Op[T]) -> T:
        if op.copy is not None:
            with _joined(conn):
                ids = conn.execute(self.queries[op.copy.reserve], {"n": op.copy.count}).fetchall()
                with conn.cursor().copy(self.queries[op.copy.copy]) as copy:
                    for chunk in op.copy.chunks(ids):
                        copy.write(chunk)
                conn.execute(self.queries[op.query], {**op.params, "copied": [row[0] for row in ids]})
            return op.decode(ids, len(ids))
        cur = conn.execute(self.queries[op.query], op.params, prepare=op.prepare)
        rows = cur.fetchall() if cur.description else []
        return op.decode(rows, cur.rowcount)

    async def _aexec(self, conn: AsyncConn, op: Op[T]) -> T:
        if op.copy is not None:
            async with _ajoined(conn):
                cur = await conn.execute(self.queries[op.copy.reserve], {"n": op.copy.count})
                ids = await cur.fetchall()
                async with conn.cursor().copy(self.queries[op.copy.copy]) as copy:
                    for chunk in op.copy.chunks(ids):
                        await copy.write(chunk)
                await conn.execute(self.queries[op.query], {**op.params, "copied": [row[0] for row in ids]})
            return op.decode(ids, len(ids))
        cur = await conn.execute(self.queries[op.query], op.params, prepare=op.prepare)
        rows = await cur.fetchall() if cur.description else []
        return op.decode(rows, cur.rowcount)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[SyncConn]:
        """A pooled connection inside one transaction: committed on success, rolled back on error."""
        try:
            with self._sync().connection() as conn, conn.transaction():
                yield conn
        except psycopg.Error as exc:
            raise translate(exc, self.schema) from exc

    @contextlib.asynccontextmanager
    async def atransaction(self) -> AsyncIterator[AsyncConn]:
        """Async twin of `transaction`."""
        try:
            async with (await self._async()).connection() as conn, conn.transaction():
                yield conn
        except psycopg.Error as exc:
            raise translate(exc, self.schema) from exc

    @contextlib.contextmanager
    def joined(self, conn: SyncConn | None) -> Iterator[SyncConn]:
        """One transaction for several ops: a pooled one without ``conn``; else the caller's (joined as
        `_joined` does: a connection in autocommit gets a block of its own)."""
        if conn is None:
            with self.transaction() as tx:
                yield tx
            return
        try:
            with _joined(conn):
                yield conn
        except psycopg.Error as exc:
            raise translate(exc, self.schema) from exc

    @contextlib.asynccontextmanager
    async def ajoined(self, conn: AsyncConn | None) -> AsyncIterator[AsyncConn]:
        """Async twin of `joined`."""
        if conn is None:
            async with self.atransaction() as tx:
                yield tx
            return
        try:
            async with _ajoined(conn):
                yield conn
        except psycopg.Error as exc:
            raise translate(exc, self.schema) from exc

    def connect(self) -> SyncConn:
        """A new dedicated connection (autocommit off), for migrations and tools."""
        try:
            return psycopg.connect(self.dsn, connect_timeout=15, **self._kwargs)
        except psycopg.Error as exc:
            raise cannot_connect(exc) from None


class Session:
    """A dedicated autocommit connection of one `Store`, opened on demand and opened again after it broke: a
    session that must stay the same across statements (the maintenance leader's, which holds a
    session-level advisory lock while it leads). ``generation`` counts the connections made, so that the
    owner knows when what its session held was lost."""

    def __init__(self, store: Store, dsn: str) -> None:
        self._store = store
        self._dsn = dsn
        self._conn: AsyncConn | None = None
        self.generation = 0

    async def _connection(self) -> AsyncConn:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        self._conn = None
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._dsn, autocommit=True, connect_timeout=15, **self._store._kwargs
            )
        except psycopg.Error as exc:
            raise cannot_connect(exc) from None
        self.generation += 1
        if self._store.principal and self._store._session_settings:
            try:
                await self._store._aconfigure(conn)
            except psycopg.Error as exc:
                await conn.close()
                raise translate(exc, self._store.schema) from exc
        self._conn = conn
        return conn

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConn]:
        """The session inside one transaction: committed on success, rolled back on error."""
        conn = await self._connection()
        try:
            async with conn.transaction():
                yield conn
        except psycopg.Error as exc:
            await self._drop_if_broken()
            raise translate(exc, self._store.schema) from exc
        except Exception:  # the caller's: rolled back, the session stays (closed if it broke meanwhile)
            raise
        except BaseException:  # cancelled mid-statement: start afresh next time
            await self.close()
            raise

    async def run(self, op: Op[T]) -> T:
        conn = await self._connection()
        try:
            return await self._store._aexec(conn, op)
        except psycopg.Error as exc:
            await self._drop_if_broken()
            raise translate(exc, self._store.schema) from exc

    async def _drop_if_broken(self) -> None:
        if self._conn is not None and (self._conn.broken or self._conn.closed):
            await self.close()

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None


class Listener:
    """A dedicated autocommit connection LISTENing on the schema's channel (or, with ``query``, the one that
    named query listens on); reconnects on demand."""

    def __init__(self, dsn: str, schema: str, query: str = "listen") -> None:
        self._dsn = dsn
        self._listen = queries_for(schema)[query]
        self._conn: AsyncConn | None = None

    async def connect(self) -> None:
        await self.close()
        try:
            self._conn = await psycopg.AsyncConnection.connect(self._dsn, autocommit=True, connect_timeout=15)
            await self._conn.execute(self._listen)
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot LISTEN: {exc}") from None

    async def notifications(self) -> AsyncIterator[str]:
        """Payloads as they arrive; raises `DatabaseError` when the connection drops."""
        if self._conn is None:
            await self.connect()
        assert self._conn is not None
        try:
            async for note in self._conn.notifies():
                yield note.payload
        except psycopg.Error as exc:
            raise DatabaseError(f"LISTEN connection lost: {exc}") from None

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None
