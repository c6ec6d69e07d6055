"""Forward-only migrations, tracked in `<schema>.migrations`, applied under an advisory lock."""

from __future__ import annotations

from dataclasses import dataclass

from pageq.errors import MigrationError
from pageq.store import sqlapi
from pageq.store.engine import Store, SyncConn
from pageq.store.queries import migrations, render

SQL_API = 11
"""The migration that creates the SQL API (the `q_<name>` functions are made once it is applied)."""


@dataclass(frozen=True)
class MigrationStatus:
    """Which migrations a schema has and which it still needs."""

    applied: list[int]
    pending: list[str]
    sql_api_current: bool = False
    """Whether the SQL API's query functions were made from this pageq's queries (else `migrate` remakes
    them; until then the SQL API runs the statements of the pageq version that made them)."""

    @property
    def up_to_date(self) -> bool:
        return not self.pending


def _applied(store: Store, conn: SyncConn) -> list[int]:
    table = f"{store.schema}.migrations"
    exists = conn.execute(store.queries["migrations_table_exists"], {"table": table}).fetchone()
    if not exists or not exists[0]:
        return []
    return [row[0] for row in conn.execute(store.queries["migrations_applied"]).fetchall()]


def status(store: Store) -> MigrationStatus:
    with store.connect() as conn:
        applied = _applied(store, conn)
        api = SQL_API in applied and sqlapi.current(conn, store.queries, store.schema)
    known = migrations()
    unknown = sorted(set(applied) - {version for version, _, _ in known})
    if unknown:
        raise MigrationError(f"schema {store.schema!r} has migrations this pageq does not know: {unknown}")
    pending = [f"{version:04d}_{name}" for version, name, _ in known if version not in applied]
    return MigrationStatus(applied=applied, pending=pending, sql_api_current=api)


def migrate(store: Store) -> list[str]:
    """Apply pending migrations in one transaction, then remake the SQL API's query functions if the queries
    changed (`sqlapi.publish`); returns the names of the migrations applied."""
    done: list[str] = []
    with store.connect() as conn, conn.transaction():
        conn.execute(store.queries["migrate_lock"], {"schema": store.schema})
        conn.execute(store.queries["migrate_bootstrap"])
        applied = set(_applied(store, conn))
        for version, name, text in migrations():
            if version in applied:
                continue
            conn.execute(render(text, store.schema))
            conn.execute(store.queries["migration_record"], {"version": version, "name": name})
            done.append(f"{version:04d}_{name}")
        sqlapi.publish(conn, store.queries, store.schema)
    return done


def drop(store: Store) -> None:
    """Drop the whole schema: every job is gone. For tests and `pageq db reset`."""
    with store.connect() as conn, conn.transaction():
        conn.execute(store.queries["migrate_lock"], {"schema": store.schema})
        conn.execute(store.queries["db_roles_drop"])  # roles are cluster-wide: they go with their schema
        conn.execute(store.queries["schema_drop"])
