"""The schema as a reviewed artifact: the catalogs rendered as deterministic SQL-like text. Not public API.

`describe` is what ``src/pageq/sql/schema.sql`` holds; ``python scripts/dump_schema.py >
src/pageq/sql/schema.sql`` regenerates it and tests/test_schema.py checks that the migrations build exactly
that on every supported PostgreSQL. pg_dump is not used: its output changes between server versions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pageq.store.engine import Op, Rows, Store
from pageq.store.queries import channel_for

HEADER = """\
-- The pageq schema as the migrations build it, read from the catalogs (src/pageq/store/schema_dump.py).
-- Do not edit: regenerate with `python scripts/dump_schema.py > src/pageq/sql/schema.sql`.
-- tests/test_schema.py checks that the migrations produce exactly this. {schema} is the schema name.
"""


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a table or view, as the catalogs describe it."""

    table: str
    name: str
    type: str
    not_null: bool
    default: str | None
    identity: str
    generated: str
    collation: str | None


@dataclass(frozen=True, slots=True, order=True)
class Definition:
    """A named object of a table (constraint, index, trigger) with its definition."""

    table: str
    name: str
    definition: str


def _rows(rows: Rows, _count: int) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in rows]


def _run(store: Store, name: str) -> list[tuple[Any, ...]]:
    return store.run(Op(name, {"schema": store.schema}, _rows))


HISTORY_PARTITION = re.compile(r"^finished_jobs_\d{8}t\d{6}$")


def tables(store: Store) -> dict[str, list[str]]:
    """Table name -> its storage options (``reloptions``), sorted. History partitions are data, not schema
    (one per period, made by the leader): left out."""
    rows = _run(store, "introspect_tables")
    return {row[0]: sorted(row[1]) for row in rows if not HISTORY_PARTITION.match(row[0])}


def partitioning(store: Store) -> dict[str, tuple[str | None, str | None]]:
    """Table name -> (``PARTITION BY ...`` of a partitioned table, ``PARTITION OF ...`` of a partition)."""
    return {row[0]: (row[2], row[3]) for row in _run(store, "introspect_tables")}


def views(store: Store) -> dict[str, str]:
    """View name -> ``VIEW`` or ``MATERIALIZED VIEW``."""
    kinds = {"v": "VIEW", "m": "MATERIALIZED VIEW"}
    return {name: kinds[kind] for name, kind in _run(store, "introspect_views")}


def columns(store: Store) -> list[Column]:
    """Every column of every table and view, in table order then column order."""
    return [Column(*row) for row in _run(store, "introspect_columns")]


def constraints(store: Store) -> list[Definition]:
    """Primary key, unique, check, foreign key and exclusion constraints, as pg_get_constraintdef shows."""
    return sorted(Definition(*row) for row in _run(store, "introspect_constraints"))


def indexes(store: Store) -> list[Definition]:
    """Indexes that no constraint created, as CREATE INDEX statements."""
    return sorted(Definition(*row) for row in _run(store, "introspect_indexes"))


def triggers(store: Store) -> list[Definition]:
    """User triggers, as CREATE TRIGGER statements."""
    return sorted(Definition(*row) for row in _run(store, "introspect_triggers"))


def functions(store: Store) -> list[str]:
    """Functions and procedures as CREATE OR REPLACE statements, by name and arguments."""
    return [definition.strip() for _, _, definition in sorted(_run(store, "introspect_functions"))]


def applied_migrations(store: Store) -> list[str]:
    """Applied migrations as ``NNNN_name``, in order."""
    return [f"{version:04d}_{name}" for version, name in _run(store, "introspect_migrations")]


def _sequences(store: Store) -> list[str]:
    return [
        f"CREATE SEQUENCE {{schema}}.{name} AS {kind} START {start} INCREMENT {step} "
        f"MINVALUE {low} MAXVALUE {high} CACHE {cache}{' CYCLE' if cycle else ''};"
        for name, kind, start, step, low, high, cache, cycle in sorted(_run(store, "introspect_sequences"))
    ]


def _column(column: Column) -> str:
    parts = [column.name, column.type]
    if column.collation:
        parts.append(f'COLLATE "{column.collation}"')
    if column.identity:
        parts.append(f"GENERATED {'ALWAYS' if column.identity == 'a' else 'BY DEFAULT'} AS IDENTITY")
    if column.not_null:
        parts.append("NOT NULL")
    if column.generated:
        kind = "STORED" if column.generated == "s" else "VIRTUAL"
        parts.append(f"GENERATED ALWAYS AS ({column.default}) {kind}")
    elif column.default is not None:
        parts.append(f"DEFAULT {column.default}")
    return " ".join(parts)


def _relation(kind: str, name: str, body: list[str], options: list[str], suffix: str = "") -> str:
    with_options = f" WITH ({', '.join(options)})" if options else ""
    return (
        f"CREATE {kind} {{schema}}.{name} (\n"
        + ",\n".join(f"    {b}" for b in body)
        + f"\n){suffix}{with_options};"
    )


def _tables(store: Store, cols: list[Column]) -> list[str]:
    cons, idxs, trigs = constraints(store), indexes(store), triggers(store)
    parts = partitioning(store)
    blocks = []
    for name, options in sorted(tables(store).items()):
        body = [_column(c) for c in cols if c.table == name]
        body += [f"CONSTRAINT {c.name} {c.definition}" for c in cons if c.table == name]
        partitioned, partition_of = parts[name]
        block = [f"-- {partition_of}"] if partition_of else []
        block += [_relation("TABLE", name, body, options, f" {partitioned}" if partitioned else "")]
        block += [f"{d.definition};" for d in [*idxs, *trigs] if d.table == name]
        blocks.append("\n".join(block))
    return blocks


def _views(store: Store, cols: list[Column]) -> list[str]:
    # Columns only: the definition text differs between PostgreSQL versions (see introspect.sql).
    return [
        _relation(kind, name, [_column(c) for c in cols if c.table == name], [])
        for name, kind in sorted(views(store).items())
    ]


def placeholders(text: str, schema: str) -> str:
    """``text`` with the schema's NOTIFY channel and name replaced by ``{channel}`` and ``{schema}``."""
    text = text.replace(channel_for(schema), "{channel}")
    return re.sub(rf'(?<![\w$"])"?{re.escape(schema)}"?(?![\w$"])', "{schema}", text)


def describe(store: Store) -> str:
    """The schema of ``store`` as deterministic SQL-like text, with ``{schema}`` for its name."""
    cols = columns(store)
    sections = [
        f"-- Migrations: {', '.join(applied_migrations(store)) or 'none'}",
        *_sequences(store),
        *_tables(store, cols),
        *_views(store, cols),
        *(f"{f};" for f in functions(store)),
    ]
    return HEADER + "\n" + placeholders("\n\n".join(sections), store.schema) + "\n"
