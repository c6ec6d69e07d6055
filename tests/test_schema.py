"""The schema is a reviewed artifact: the migrations build exactly src/pageq/sql/schema.sql (PG 15 and 18)."""

from __future__ import annotations

import difflib
import re
import threading
from pathlib import Path

import psycopg

import pageq
from pageq.store import schema_dump
from pageq.store.queries import migrations, query_names
from pageq.types import FINAL_STATES, LIVE_STATES

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_SQL = ROOT / "src" / "pageq" / "sql" / "schema.sql"
STATE_MACHINE = ROOT / "docs" / "state-machine.md"
REGENERATE = "python scripts/dump_schema.py > src/pageq/sql/schema.sql"

# The named queries of sql/queries/introspect.sql, each run by `describe` (and so by these tests).
INTROSPECT_QUERIES = {
    "introspect_columns",
    "introspect_constraints",
    "introspect_functions",
    "introspect_indexes",
    "introspect_migrations",
    "introspect_sequences",
    "introspect_tables",
    "introspect_triggers",
    "introspect_views",
}


def all_migrations() -> list[str]:
    return [f"{version:04d}_{name}" for version, name, _ in migrations()]


def check_values(definition: str) -> set[str]:
    """The string literals of a CHECK constraint, e.g. ``state = ANY (ARRAY['queued'::text, ...])``."""
    return set(re.findall(r"'([a-z_]+)'::text", definition))


def test_migrations_build_the_committed_schema(app: pageq.App) -> None:
    described = schema_dump.describe(app.store)
    committed = SCHEMA_SQL.read_text()
    diff = "".join(
        difflib.unified_diff(
            committed.splitlines(keepends=True), described.splitlines(keepends=True), "schema.sql", "migrated"
        )
    )
    assert described == committed, f"the schema changed; review it and regenerate: {REGENERATE}\n{diff}"


def test_state_checks_list_exactly_the_job_states(app: pageq.App) -> None:
    checks = {c.name: c.definition for c in schema_dump.constraints(app.store)}
    live = check_values(checks["jobs_state_check"])
    finished = check_values(checks["finished_jobs_state_check"])
    assert live == {s.value for s in LIVE_STATES}
    assert finished == {s.value for s in FINAL_STATES}
    assert live | finished == {s.value for s in pageq.JobState}


def test_state_machine_doc_mentions_every_state() -> None:
    text = STATE_MACHINE.read_text()
    missing = [s.value for s in pageq.JobState if f"`{s.value}`" not in text]
    assert not missing, f"docs/state-machine.md does not describe {missing}"


def test_describe_uses_placeholders_and_sorted_objects(app: pageq.App) -> None:
    described = schema_dump.describe(app.store)
    assert app.schema not in described
    tables = re.findall(r"^CREATE TABLE \{schema\}\.(\w+) \($", described, re.MULTILINE)
    assert tables == sorted(tables) == sorted(schema_dump.tables(app.store))
    assert schema_dump.describe(app.store) == described


def test_describe_shows_views_functions_and_triggers(app: pageq.App, dsn: str) -> None:
    s = app.schema
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE VIEW {s}.dead AS SELECT id, queue FROM {s}.finished_jobs WHERE state = 'dead'")
        conn.execute(
            f"CREATE FUNCTION {s}.announce() RETURNS trigger LANGUAGE plpgsql AS $$ "
            f"BEGIN PERFORM pg_notify('pageq_jobs_{s}', NEW.queue); RETURN NEW; END $$"
        )
        conn.execute(
            f"CREATE TRIGGER jobs_announce AFTER INSERT ON {s}.jobs "
            f"FOR EACH ROW EXECUTE FUNCTION {s}.announce()"
        )
    described = schema_dump.describe(app.store)
    assert "CREATE VIEW {schema}.dead (\n    id bigint,\n    queue text\n);" in described
    assert "CREATE OR REPLACE FUNCTION {schema}.announce()" in described
    assert "pg_notify('{channel}', NEW.queue)" in described
    assert (
        "CREATE TRIGGER jobs_announce AFTER INSERT ON {schema}.jobs FOR EACH ROW "
        "EXECUTE FUNCTION {schema}.announce();"
    ) in described
    assert s not in described


def test_introspect_queries_are_the_ones_covered_here() -> None:
    assert {name for name in query_names() if name.startswith("introspect_")} == INTROSPECT_QUERIES


def test_migrate_twice_is_a_no_op(app: pageq.App) -> None:
    before = schema_dump.describe(app.store)
    assert app.migrate() == []
    assert schema_dump.describe(app.store) == before
    assert schema_dump.applied_migrations(app.store) == all_migrations()


def test_concurrent_migrations_apply_once(dsn: str, schema: str) -> None:
    apps = [pageq.App(dsn, schema=schema) for _ in range(2)]
    barrier = threading.Barrier(len(apps))
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def migrate(app: pageq.App) -> None:
        barrier.wait(timeout=30)
        try:
            results.append(app.migrate())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=migrate, args=(app,)) for app in apps]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert not errors
        assert sorted(results, key=len) == [[], all_migrations()]
        assert schema_dump.applied_migrations(apps[0].store) == all_migrations()
        assert schema_dump.describe(apps[0].store) == SCHEMA_SQL.read_text()
    finally:
        for app in apps:
            app.close()
        apps[0].drop_schema()


def test_migration_status_before_and_after(dsn: str, schema: str) -> None:
    app = pageq.App(dsn, schema=schema)
    try:
        before = app.migration_status()
        assert before.applied == []
        assert before.pending == all_migrations()
        assert not before.up_to_date
        app.migrate()
        after = app.migration_status()
        assert after.applied == [version for version, _, _ in migrations()]
        assert after.pending == []
        assert after.up_to_date
    finally:
        app.close()
        app.drop_schema()
