-- The schema as the catalogs describe it, for the committed schema.sql and its test.
-- Each query takes the schema name as %(schema)s; the caller replaces it by the {schema} placeholder.

-- name: introspect_tables
-- Tables of the schema with their storage options (reloptions) and partitioning, by name.
SELECT c.relname, coalesce(c.reloptions, '{}'::text[]),
       CASE WHEN c.relkind = 'p' THEN 'PARTITION BY ' || pg_get_partkeydef(c.oid) END,
       CASE WHEN c.relispartition
            THEN 'PARTITION OF ' || (SELECT p.relname FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhparent
                                     WHERE i.inhrelid = c.oid)
                 || ' ' || pg_get_expr(c.relpartbound, c.oid) END
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p')
ORDER BY c.relname;

-- name: introspect_columns
-- Columns of every table and view in order: name, type, NOT NULL, default, identity, generated, collation.
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, a.attgenerated::text,
       CASE WHEN a.attcollation <> t.typcollation THEN co.collname END
FROM pg_attribute a
JOIN pg_class c ON c.oid = a.attrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
LEFT JOIN pg_collation co ON co.oid = a.attcollation
WHERE n.nspname = %(schema)s AND c.relkind IN ('r', 'p', 'v', 'm') AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY c.relname, a.attnum;

-- name: introspect_constraints
-- Table constraints (primary key, unique, check, foreign key, exclusion), by table and name.
-- NOT NULL constraints (catalogued since PostgreSQL 18) are left out: columns show them.
SELECT c.relname, k.conname, pg_get_constraintdef(k.oid)
FROM pg_constraint k
JOIN pg_class c ON c.oid = k.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND k.contype IN ('p', 'u', 'c', 'f', 'x')
ORDER BY c.relname, k.conname;

-- name: introspect_indexes
-- Indexes other than those a constraint creates, as CREATE INDEX statements, by table and name.
SELECT c.relname, i.relname, pg_get_indexdef(x.indexrelid)
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class c ON c.oid = x.indrelid
JOIN pg_namespace n ON n.oid = i.relnamespace
WHERE n.nspname = %(schema)s
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k
                  WHERE k.conindid = x.indexrelid AND k.contype IN ('p', 'u', 'x'))
ORDER BY c.relname, i.relname;

-- name: introspect_sequences
-- Sequences: type, start, increment, bounds, cache and cycle, by name.
SELECT c.relname, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin, s.seqmax,
       s.seqcache, s.seqcycle
FROM pg_sequence s
JOIN pg_class c ON c.oid = s.seqrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s
ORDER BY c.relname;

-- name: introspect_views
-- Views and materialized views (relkind 'v' or 'm'), by name. Their columns say what they offer; their
-- definition text is left out because PostgreSQL 16 changed how pg_get_viewdef qualifies columns.
SELECT c.relname, c.relkind::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND c.relkind IN ('v', 'm')
ORDER BY c.relname;

-- name: introspect_functions
-- Functions and procedures as CREATE OR REPLACE statements, by name and arguments.
SELECT p.proname, pg_get_function_identity_arguments(p.oid), pg_get_functiondef(p.oid)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = %(schema)s AND p.prokind IN ('f', 'p')
ORDER BY p.proname, 2;

-- name: introspect_triggers
-- Triggers as CREATE TRIGGER statements, by table and name.
SELECT c.relname, t.tgname, pg_get_triggerdef(t.oid)
FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(schema)s AND NOT t.tgisinternal
ORDER BY c.relname, t.tgname;

-- name: introspect_migrations
-- Applied migrations (version, name), in order.
SELECT version, name FROM {schema}.migrations ORDER BY version;
