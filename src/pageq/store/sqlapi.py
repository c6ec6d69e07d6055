"""The SQL API's statements: named queries published as SQL functions ``q_<name>``. Not public API.

The functions of migration 0011 (enqueue, claim, complete, fail, ...) run the worker's own statements
through these, so they are not hand-kept copies: `publish` (part of `migrate`) makes each ``q_<name>`` from
the current text of its named query whenever that text changed. ``%(x)s`` / ``%(x)b`` become the parameters
``p_x``, typed as the server reads the query (libpq's describe of the prepared statement), and the query's
result columns become the function's table. See docs/sql-api.md.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pageq.errors import MigrationError
from pageq.store.engine import Op, Rows, SyncConn
from pageq.store.queries import queries_for

PUBLISHED = (
    "enqueue", "enqueue_special", "claim", "queues_lock", "claim_controlled", "complete", "retry", "bury",
    "heartbeat", "release", "resolve",
)  # fmt: skip
"""The named queries the SQL API runs (jobs.sql and dispatch.sql)."""

GENERATION = "1"
"""Changes when the way functions are made changes (the digest then differs: they are made again)."""

_PLACEHOLDER = re.compile(r"%(%|\((\w+)\)[sbt])")
HINTS = {"now": 1184}
"""Parameter types the server cannot always infer (``now + interval``), by name: pg_type oids (timestamptz).
psycopg sends these parameters with that type, so the function is called as the query is."""


@dataclass(frozen=True, slots=True)
class Positional:
    """A named query with ``$n`` parameters, and the names they stand for (in order)."""

    text: str
    names: tuple[str, ...]


def positional(query: str) -> Positional:
    """``%(x)s`` -> ``$n`` (the n-th distinct name, by first use), ``%%`` -> ``%``."""
    names: list[str] = []

    def sub(match: re.Match[str]) -> str:
        if match.group(1) == "%":
            return "%"
        name = match.group(2)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return Positional(_PLACEHOLDER.sub(sub, query), tuple(names))


def digest(schema: str) -> str:
    """What the functions of ``schema`` are made from: the published queries' text, and the generation."""
    queries = queries_for(schema)
    h = hashlib.sha256(GENERATION.encode())
    for name in PUBLISHED:
        h.update(f"\0{name}\0{queries[name]}".encode())
    return h.hexdigest()


def current(conn: SyncConn, queries: dict[str, str], schema: str) -> bool:
    """Whether the functions were made from the current queries (False when never made)."""
    row = conn.execute(queries["sqlapi_digest"]).fetchone()
    return row is not None and row[0] == digest(schema)


def publish(conn: SyncConn, queries: dict[str, str], schema: str) -> bool:
    """(Re)make every ``q_<name>`` if the queries changed since they were made, in the caller's transaction
    (migrate's, under its lock); grants them to the restricted roles. True if it made them."""
    if current(conn, queries, schema):
        return False
    conn.execute(queries["sqlapi_drop"])
    for name in PUBLISHED:
        conn.execute(_function(conn, queries, name))
    conn.execute(queries["sqlapi_grant"])
    conn.execute(queries["sqlapi_digest_set"], {"digest": digest(schema)})
    return True


def _function(conn: SyncConn, queries: dict[str, str], name: str) -> str:
    query = positional(queries[name])
    params, columns = _describe(conn, queries, name, query)
    if len(params) != len(query.names):
        raise MigrationError(
            f"query {name!r}: the server reads {len(params)} parameters, not {len(query.names)}"
        )
    signature = ", ".join(f"p_{arg} {kind}" for arg, kind in zip(query.names, params, strict=True))
    returns = "void"
    if columns:
        seen: set[str] = set()
        outs = []
        for i, (column, kind) in enumerate(columns):
            label = column if column.isidentifier() and column not in seen else f"c{i + 1}"
            seen.add(label)
            outs.append(f"{label} {kind}")
        returns = f"TABLE ({', '.join(outs)})"
    body = query.text.strip().rstrip(";")
    return (
        queries["sqlapi_function"]
        .replace("{name}", name)
        .replace("{params}", signature)
        .replace("{returns}", returns)
        .replace("{body}", body)
    )


def _describe(
    conn: SyncConn, queries: dict[str, str], name: str, query: Positional
) -> tuple[list[str], list[tuple[str, str]]]:
    """The server's types of the query's parameters, and its result columns (name, type)."""
    pgconn = conn.pgconn
    hints = [HINTS.get(arg, 0) for arg in query.names]
    prepared = pgconn.prepare(b"", query.text.encode(), hints)
    if prepared.error_message:
        raise MigrationError(f"query {name!r} cannot be published: {prepared.error_message.decode().strip()}")
    described = pgconn.describe_prepared(b"")
    oids = [described.param_type(i) for i in range(described.nparams)]
    fields = [
        (described.fname(i) or b"", described.ftype(i), described.fmod(i)) for i in range(described.nfields)
    ]
    params = {"oids": oids + [f[1] for f in fields], "mods": [-1] * len(oids) + [f[2] for f in fields]}
    names = [str(row[0]) for row in conn.execute(queries["sqlapi_types"], params).fetchall()]
    columns = [(f[0].decode(), kind) for f, kind in zip(fields, names[len(oids) :], strict=True)]
    return names[: len(oids)], columns


# ----- the tasks and routing rules of Python apps, published for the SQL API
@dataclass(frozen=True, slots=True)
class TaskRows:
    """Parallel arrays of task defaults, one row per task name or alias (names sorted: concurrent publishers
    lock the rows in one order)."""

    names: list[str]
    tasks: list[str]
    queues: list[str]
    priorities: list[int]
    max_attempts: list[int]
    timeouts: list[float | None]
    required: list[str]  # comma-separated argument names
    optional: list[str]
    any_args: list[bool]
    bases: list[float]
    caps: list[float]
    factors: list[float]
    jitters: list[float]
    encrypted: list[bool]


@dataclass(frozen=True, slots=True)
class RouteRow:
    """One published routing rule."""

    glob: str
    regex: str
    args: str  # JSON object
    queue: str | None
    priority: int | None
    predicate: str | None


def tasks_publish(rows: TaskRows, now: datetime) -> Op[int]:
    """Write the rows that changed; returns how many did."""
    params = {
        "names": rows.names, "tasks": rows.tasks, "queues": rows.queues, "priorities": rows.priorities,
        "max_attempts": rows.max_attempts, "timeouts": rows.timeouts, "required": rows.required,
        "optional": rows.optional, "any_args": rows.any_args, "bases": rows.bases, "caps": rows.caps,
        "factors": rows.factors, "jitters": rows.jitters, "encrypted": rows.encrypted, "now": now,
    }  # fmt: skip
    return Op("tasks_publish", params, _first_int)


def routes_lock() -> Op[int]:
    """Serialise publishers of routing rules (until the transaction ends)."""
    return Op("routes_lock", {}, lambda _rows, count: count)


def routes_clear() -> Op[int]:
    return Op("routes_clear", {}, lambda _rows, count: count)


def routes_published() -> Op[list[RouteRow]]:
    return Op(
        "routes_published", {}, lambda rows, _n: [RouteRow(r[0], r[1], _json(r[2]), *r[3:]) for r in rows]
    )


def routes_publish(routes: Sequence[RouteRow]) -> Op[int]:
    """Replace the published rules (after `routes_lock`, same transaction)."""
    params = {
        "globs": [r.glob for r in routes], "res": [r.regex for r in routes], "args": [r.args for r in routes],
        "queues": [r.queue for r in routes], "priorities": [r.priority for r in routes],
        "predicates": [r.predicate for r in routes],
    }  # fmt: skip
    return Op("routes_publish", params, _first_int)


def _first_int(rows: Rows, _count: int) -> int:
    return int(rows[0][0]) if rows else 0


def _json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
