-- name: migrate_lock
-- Serialise migrations of one schema across processes (held until the transaction ends).
SELECT pg_advisory_xact_lock(hashtext('pageq.migrate.' || %(schema)s));

-- name: migrate_bootstrap
-- Create the schema and the table that tracks applied migrations.
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {schema}.migrations (
    version    integer PRIMARY KEY,
    name       text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- name: migrations_table_exists
-- Whether the migrations table exists (without creating anything).
SELECT to_regclass(%(table)s) IS NOT NULL;

-- name: migrations_applied
-- Versions already applied, in order.
SELECT version FROM {schema}.migrations ORDER BY version;

-- name: migration_record
-- Record one applied migration.
INSERT INTO {schema}.migrations (version, name) VALUES (%(version)s, %(name)s);

-- name: schema_drop
-- Drop a whole pageq schema (tests and `pageq db reset`).
DROP SCHEMA IF EXISTS {schema} CASCADE;
