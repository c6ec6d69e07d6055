-- The SQL API (docs/sql-api.md): the named queries it runs, published as functions `q_<name>` by `migrate`
-- (store/sqlapi.py), and the tasks and routing rules of Python apps, published for it.

-- name: sqlapi_digest
-- The digest of the queries the `q_<name>` functions were made from (no row: never made).
SELECT digest FROM {schema}.sql_api;

-- name: sqlapi_digest_set
-- Record the digest of the queries the `q_<name>` functions were just made from.
INSERT INTO {schema}.sql_api AS a (digest, generated_at) VALUES (%(digest)s, now())
ON CONFLICT (singleton) DO UPDATE SET digest = excluded.digest, generated_at = excluded.generated_at;

-- name: sqlapi_drop
-- Drop every published query function (they are made again from the current queries).
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
             WHERE p.pronamespace = '{schema}'::regnamespace AND p.proname LIKE 'q\_%' LOOP
        EXECUTE format('DROP FUNCTION %s', f);
    END LOOP;
END
$$;

-- name: sqlapi_types
-- The SQL names of types given by oid and modifier (what the server inferred for a query's parameters and
-- result columns), in order.
SELECT format_type(t.oid, nullif(t.mod, -1))
FROM unnest(%(oids)s::oid[], %(mods)s::int4[]) WITH ORDINALITY AS t(oid, mod, n)
ORDER BY t.n;

-- name: sqlapi_function
-- Template, filled in by store/sqlapi.py: the named query {name} as a function, its %(x)s parameters become
-- p_x (types as the server reads the query), its result the function's table. No plan is cached across
-- calls: the batch statements want a plan for each batch (see jobs.sql).
CREATE FUNCTION {schema}.q_{name}({params}) RETURNS {returns}
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_custom_plan
AS $pageq_query$
{body}
$pageq_query$;

-- name: sqlapi_grant
-- Keep the published query functions from PUBLIC and give them to the restricted roles, if set up.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
             WHERE p.pronamespace = '{schema}'::regnamespace AND p.proname LIKE 'q\_%' LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{schema}_worker') THEN
        PERFORM {schema}.setup_db_roles();
    END IF;
END
$$;

-- name: tasks_publish
-- Write the defaults of tasks, by name or alias, for the SQL API's enqueue and fail; returns how many rows
-- were new or changed (those are audited).
WITH published AS (
    INSERT INTO {schema}.tasks AS t
        (name, task, queue, priority, max_attempts, timeout, required_args, optional_args, any_args,
         retry_base, retry_cap, retry_factor, retry_jitter, encrypted, published_at)
    SELECT u.name, u.task, u.queue, u.priority, u.max_attempts, u.timeout,
           string_to_array(u.required, ','), string_to_array(u.optional, ','), u.any_args,
           u.base, u.cap, u.factor, u.jitter, u.encrypted, %(now)s
    FROM unnest(%(names)s::text[], %(tasks)s::text[], %(queues)s::text[], %(priorities)s::int2[],
                %(max_attempts)s::int4[], %(timeouts)s::float8[], %(required)s::text[], %(optional)s::text[],
                %(any_args)s::bool[], %(bases)s::float8[], %(caps)s::float8[], %(factors)s::float8[],
                %(jitters)s::float8[], %(encrypted)s::bool[])
         AS u(name, task, queue, priority, max_attempts, timeout, required, optional, any_args, base, cap,
              factor, jitter, encrypted)
    ON CONFLICT (name) DO UPDATE SET
        task = excluded.task, queue = excluded.queue, priority = excluded.priority,
        max_attempts = excluded.max_attempts, timeout = excluded.timeout,
        required_args = excluded.required_args, optional_args = excluded.optional_args,
        any_args = excluded.any_args, retry_base = excluded.retry_base, retry_cap = excluded.retry_cap,
        retry_factor = excluded.retry_factor, retry_jitter = excluded.retry_jitter,
        encrypted = excluded.encrypted, published_at = excluded.published_at
    WHERE (t.task, t.queue, t.priority, t.max_attempts, t.timeout, t.required_args, t.optional_args, t.any_args,
           t.retry_base, t.retry_cap, t.retry_factor, t.retry_jitter, t.encrypted)
          IS DISTINCT FROM (excluded.task, excluded.queue, excluded.priority, excluded.max_attempts,
           excluded.timeout, excluded.required_args, excluded.optional_args, excluded.any_args,
           excluded.retry_base, excluded.retry_cap, excluded.retry_factor, excluded.retry_jitter,
           excluded.encrypted)
    RETURNING t.name
), audited AS (
    INSERT INTO {schema}.audit (action, detail)
    SELECT 'tasks.publish', jsonb_build_object('tasks', array_agg(name ORDER BY name)) FROM published
    HAVING count(*) > 0
)
SELECT count(*) FROM published;

-- name: routes_lock
-- Serialise the publishers of routing rules (until the transaction ends; then routes_clear, routes_publish).
LOCK TABLE {schema}.routes IN EXCLUSIVE MODE;

-- name: routes_clear
-- Forget the published routing rules (before publishing an app's rules in the same transaction).
DELETE FROM {schema}.routes;

-- name: routes_publish
-- Publish routing rules in order (after routes_clear, same transaction); audited.
WITH published AS (
    INSERT INTO {schema}.routes (ord, task_glob, task_re, args, queue, priority, predicate)
    SELECT u.n, u.glob, u.re, u.args::jsonb, u.queue, u.priority, u.predicate
    FROM unnest(%(globs)s::text[], %(res)s::text[], %(args)s::text[], %(queues)s::text[],
                %(priorities)s::int2[], %(predicates)s::text[])
         WITH ORDINALITY AS u(glob, re, args, queue, priority, predicate, n)
    RETURNING ord
), audited AS (
    INSERT INTO {schema}.audit (action, detail)
    SELECT 'routes.publish', jsonb_build_object('rules', count(*)) FROM published
)
SELECT count(*) FROM published;

-- name: routes_published
-- The published routing rules in order: (glob, regular expression, argument values, queue, priority,
-- predicate name).
SELECT task_glob, task_re, args, queue, priority, predicate FROM {schema}.routes ORDER BY ord;
