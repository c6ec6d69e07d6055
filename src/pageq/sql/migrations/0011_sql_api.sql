-- The SQL API (docs/sql-api.md): functions that any PostgreSQL client calls to enqueue, claim, heartbeat,
-- complete, fail, release and cancel jobs, with the rules of the Python API. They run the named queries of
-- sql/queries/ (the worker's own statements), which `migrate` publishes as functions `q_<name>` made from the
-- current query text (store/sqlapi.py): nothing here is a copy of a hot statement.
--
-- Security: every function runs with the caller's privileges (SECURITY INVOKER), so the restricted roles'
-- row-level security applies exactly as to the Python API (a worker role claims, sees and finishes only jobs
-- of task types its grants allow); enqueue and cancel also check the grants explicitly, for a clear error.
-- Errors: 22023 invalid input, 42501 denied, 55000 stale lease or a job no longer live, P0002 no such job,
-- 23505 a unique key held (on_conflict 'raise').

-- What the SQL API knows of the Python apps' tasks, by task name or alias (`App.publish_routes()`, `pageq
-- routes --publish`, and each worker at start): defaults, argument names, retry policy, and whether its
-- workers decrypt its arguments (then they refuse clear ones, which is all SQL can write).
CREATE TABLE {schema}.tasks (
    name          text             PRIMARY KEY,
    task          text             NOT NULL,  -- the name jobs are stored under (an alias names another)
    queue         text             NOT NULL,
    priority      smallint         NOT NULL,
    max_attempts  integer          NOT NULL,
    timeout       double precision,
    required_args text[]           NOT NULL,
    optional_args text[]           NOT NULL,
    any_args      boolean          NOT NULL,  -- the handler takes **kwargs
    retry_base    double precision NOT NULL,  -- backoff: min(cap, factor * base ^ attempts), +- jitter
    retry_cap     double precision NOT NULL,
    retry_factor  double precision NOT NULL,
    retry_jitter  double precision NOT NULL,
    encrypted     boolean          NOT NULL,
    published_at  timestamptz      NOT NULL
);

-- The routing rules of the Python apps, in order (the first matching rule decides): a task glob (and its
-- regular expression), argument values to equal, the queue and priority it sets. A rule with a Python
-- predicate (`when=`) cannot be evaluated here: an enqueue it would decide is refused.
CREATE TABLE {schema}.routes (
    ord       integer  PRIMARY KEY,
    task_glob text     NOT NULL,
    task_re   text     NOT NULL,
    args      jsonb    NOT NULL,
    queue     text,
    priority  smallint,
    predicate text
);

-- The digest of the queries the `q_<name>` functions were last made from (store/sqlapi.py).
CREATE TABLE {schema}.sql_api (
    singleton    boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    digest       text        NOT NULL,
    generated_at timestamptz NOT NULL
);

-- One job of an enqueue, checked, with its defaults and route applied: the columns of the batch insert.
CREATE TYPE {schema}.api_job AS (
    task text, queue text, args text, priority smallint, run_at timestamptz, max_attempts integer,
    timeout double precision, unique_key text, unique_states text, unique_window double precision,
    on_conflict text, group_key text, after text, on_failure text, idempotency_key text, special boolean
);

-- A claimed job, as the claim statements return it.
CREATE TYPE {schema}.api_claimed AS (
    id bigint, task text, queue text, args jsonb, priority smallint, attempts integer, max_attempts integer,
    run_at timestamptz, created_at timestamptz, timeout double precision, lease_token text, group_key text,
    linked boolean
);

CREATE FUNCTION {schema}.api_invalid(message text, hint text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'pageq: %', message USING ERRCODE = '22023', HINT = coalesce(hint, '');
END
$$;

-- A number of a job's JSON (NULL when absent or null), within [lo, hi], an integer when `whole`.
CREATE FUNCTION {schema}.api_num(j jsonb, key text, lo numeric, hi numeric, whole boolean, n bigint)
RETURNS numeric LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v jsonb := j -> key;
BEGIN
    IF v IS NULL OR v = 'null' THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(v) <> 'number' OR v::numeric < lo OR v::numeric > hi
       OR (whole AND v::numeric <> trunc(v::numeric)) THEN
        PERFORM {schema}.api_invalid(format('job %s: %s must be %s from %s to %s, got %s',
            n, key, CASE WHEN whole THEN 'an integer' ELSE 'a number' END, lo, hi, v));
    END IF;
    RETURN v::numeric;
END
$$;

-- A string of a job's JSON (NULL when absent or null), of 1 to `longest` characters.
CREATE FUNCTION {schema}.api_text(j jsonb, key text, longest integer, n bigint) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v jsonb := j -> key;
BEGIN
    IF v IS NULL OR v = 'null' THEN
        RETURN NULL;
    END IF;
    IF jsonb_typeof(v) <> 'string' OR length(v #>> '{}') NOT BETWEEN 1 AND longest THEN
        PERFORM {schema}.api_invalid(format('job %s: %s must be a string of 1 to %s characters, got %s',
                                            n, key, longest, left(v::text, 200)));
    END IF;
    RETURN v #>> '{}';
END
$$;

-- Queue and task names: 1-128 letters, digits and '_' '.' ':' '-' (as the Python API).
CREATE FUNCTION {schema}.api_name(kind text, value text) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF value IS NULL OR value !~ '^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$' THEN
        PERFORM {schema}.api_invalid(format('invalid %s name %s: use 1-128 letters, digits, ''_'', ''.'', '
                                            ''':'' or ''-''', kind, coalesce(quote_literal(left(value, 200)), 'NULL')));
    END IF;
    RETURN value;
END
$$;

-- The first published routing rule that matches a task and its arguments.
CREATE FUNCTION {schema}.route(p_task text, p_args jsonb)
RETURNS TABLE (rule integer, queue text, priority smallint, predicate text)
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT r.ord, r.queue, r.priority, r.predicate FROM {schema}.routes r
    WHERE p_task ~ r.task_re
      AND NOT EXISTS (SELECT FROM jsonb_each(r.args) AS c(k, v) WHERE p_args -> c.k IS DISTINCT FROM c.v)
    ORDER BY r.ord
    LIMIT 1
$$;

-- One job of an enqueue (a JSON object, the n-th of its batch) checked, with its task's defaults and its
-- route applied, as the Python API does in Task.job().
CREATE FUNCTION {schema}.api_check_job(j jsonb, n bigint, p_now timestamptz) RETURNS {schema}.api_job
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    d {schema}.tasks;
    r record;
    v {schema}.api_job;
    v_args jsonb;
    v_bad text;
    v_delay numeric;
    v_after bigint[];
    v_states text[];
BEGIN
    IF jsonb_typeof(j) IS DISTINCT FROM 'object' THEN
        PERFORM {schema}.api_invalid(format('job %s: a JSON object is expected, got %s', n, left(j::text, 200)));
    END IF;
    SELECT string_agg(k, ', ' ORDER BY k) INTO v_bad FROM jsonb_object_keys(j) AS k
    WHERE k <> ALL ('{task,args,queue,priority,run_at,delay,max_attempts,timeout,unique_key,unique_states,'
                    'unique_window,on_conflict,group_key,after,on_parent_failure,idempotency_key}'::text[]);
    IF v_bad IS NOT NULL THEN
        PERFORM {schema}.api_invalid(format('job %s: unknown keys %s', n, left(v_bad, 200)));
    END IF;
    SELECT * INTO d FROM {schema}.tasks t WHERE t.name = {schema}.api_text(j, 'task', 128, n);
    IF NOT FOUND THEN
        PERFORM {schema}.api_invalid(format('job %s: unknown task %s', n, left(coalesce(j ->> 'task', 'null'), 200)),
            'a task must be published by the Python app that defines it: its workers do at start, or run '
            '`pageq routes --publish --app module:app`');
    END IF;
    v_args := coalesce(nullif(j -> 'args', 'null'), '{}');
    IF jsonb_typeof(v_args) <> 'object' THEN
        PERFORM {schema}.api_invalid(format('job %s: args must be a JSON object', n));
    END IF;
    SELECT string_agg(a, ', ' ORDER BY a) INTO v_bad FROM unnest(d.required_args) AS a WHERE NOT v_args ? a;
    IF v_bad IS NOT NULL THEN
        PERFORM {schema}.api_invalid(format('job %s: task %s needs the arguments %s', n, d.task, v_bad));
    END IF;
    IF NOT d.any_args THEN
        SELECT string_agg(k, ', ' ORDER BY k) INTO v_bad FROM jsonb_object_keys(v_args) AS k
        WHERE k <> ALL (d.required_args || d.optional_args);
        IF v_bad IS NOT NULL THEN
            PERFORM {schema}.api_invalid(format('job %s: task %s takes no arguments %s', n, d.task, left(v_bad, 200)));
        END IF;
    END IF;
    IF d.encrypted THEN
        PERFORM {schema}.api_invalid(format('job %s: the workers of task %s decrypt its arguments and refuse '
            'clear ones', n, d.task), 'enqueue it from Python with the keyring, or declare the task with '
            'accept_clear=True (docs/sql-api.md)');
    END IF;
    v.task := d.task;
    v.args := v_args::text;
    v.queue := {schema}.api_text(j, 'queue', 128, n);
    v.priority := {schema}.api_num(j, 'priority', -32768, 32767, true, n);
    IF v.queue IS NULL OR v.priority IS NULL THEN
        SELECT * INTO r FROM {schema}.route(d.task, v_args);
        IF r.predicate IS NOT NULL THEN
            PERFORM {schema}.api_invalid(format('job %s: the queue of task %s depends on routing rule %s, whose '
                'predicate %s is Python code', n, d.task, r.rule, r.predicate),
                'give both queue and priority, or enqueue it from Python');
        END IF;
        v.queue := coalesce(v.queue, r.queue, d.queue);
        v.priority := coalesce(v.priority, r.priority, d.priority);
    END IF;
    PERFORM {schema}.api_name('queue', v.queue);
    v_delay := {schema}.api_num(j, 'delay', 0, 315360000, false, n);
    IF v_delay IS NOT NULL AND j ? 'run_at' AND j -> 'run_at' <> 'null' THEN
        PERFORM {schema}.api_invalid(format('job %s: give delay or run_at, not both', n));
    END IF;
    v.run_at := coalesce({schema}.api_text(j, 'run_at', 64, n)::timestamptz,
                         p_now + make_interval(secs => coalesce(v_delay, 0)::float8));
    v.max_attempts := coalesce({schema}.api_num(j, 'max_attempts', 1, 1000, true, n), d.max_attempts);
    v.timeout := coalesce({schema}.api_num(j, 'timeout', 0.001, 315360000, false, n), d.timeout);
    v.unique_key := {schema}.api_text(j, 'unique_key', 512, n);
    IF j ? 'unique_states' AND j -> 'unique_states' <> 'null' THEN
        IF jsonb_typeof(j -> 'unique_states') <> 'array' THEN
            PERFORM {schema}.api_invalid(format('job %s: unique_states must be an array of states', n));
        END IF;
        v_states := ARRAY(SELECT DISTINCT s FROM jsonb_array_elements_text(j -> 'unique_states') AS s ORDER BY s);
        IF cardinality(v_states) = 0 OR NOT v_states <@ '{scheduled,queued,running,retrying,succeeded,dead,'
                                                         'cancelled,blocked}'::text[] THEN
            PERFORM {schema}.api_invalid(format('job %s: unique_states must name job states', n));
        END IF;
    END IF;
    v.unique_states := array_to_string(coalesce(v_states, '{blocked,queued,retrying,running,scheduled}'), ',');
    v.unique_window := {schema}.api_num(j, 'unique_window', 0.001, 315360000, false, n);
    v.on_conflict := coalesce({schema}.api_text(j, 'on_conflict', 16, n), 'ignore');
    IF v.on_conflict NOT IN ('ignore', 'replace', 'raise') THEN
        PERFORM {schema}.api_invalid(format('job %s: on_conflict must be ignore, replace or raise', n));
    END IF;
    v.group_key := {schema}.api_text(j, 'group_key', 512, n);
    IF j ? 'after' AND j -> 'after' <> 'null' THEN
        IF jsonb_typeof(j -> 'after') <> 'array' OR EXISTS (
                SELECT FROM jsonb_array_elements(j -> 'after') AS e
                WHERE jsonb_typeof(e) <> 'number' OR e::numeric < 1 OR e::numeric <> trunc(e::numeric)) THEN
            PERFORM {schema}.api_invalid(format('job %s: after must be an array of job ids', n));
        END IF;
        v_after := ARRAY(SELECT a.id FROM (
            SELECT e::numeric::bigint AS id, min(k) AS first
            FROM jsonb_array_elements(j -> 'after') WITH ORDINALITY AS x(e, k) GROUP BY 1) a ORDER BY a.first);
        v.after := nullif(array_to_string(v_after, ','), '');
    END IF;
    v.on_failure := coalesce({schema}.api_text(j, 'on_parent_failure', 16, n), 'cancel');
    IF v.on_failure NOT IN ('cancel', 'run') THEN
        PERFORM {schema}.api_invalid(format('job %s: on_parent_failure must be cancel or run', n));
    END IF;
    v.idempotency_key := {schema}.api_text(j, 'idempotency_key', 200, n);
    v.special := v.unique_key IS NOT NULL OR v.group_key IS NOT NULL OR v.after IS NOT NULL;
    RETURN v;
END
$$;

-- Write checked jobs as the Python API does (one batch insert, or the dispatcher's insert when a job has a
-- unique key, a group or dependencies), under reserved ids when given; returns their ids in order.
CREATE FUNCTION {schema}.api_write(p_jobs {schema}.api_job[], p_ids bigint[], p_now timestamptz)
RETURNS bigint[] LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_kind text;
    v_value text;
BEGIN
    IF NOT EXISTS (SELECT FROM unnest(p_jobs) AS j WHERE j.special) THEN
        RETURN ARRAY(
            SELECT e.id FROM {schema}.q_enqueue(
                p_ids => p_ids, p_now => p_now,
                p_tasks => ARRAY(SELECT (p_jobs[i]).task FROM generate_subscripts(p_jobs, 1) AS i ORDER BY i),
                p_queues => ARRAY(SELECT (p_jobs[i]).queue FROM generate_subscripts(p_jobs, 1) AS i ORDER BY i),
                p_args => ARRAY(SELECT (p_jobs[i]).args FROM generate_subscripts(p_jobs, 1) AS i ORDER BY i),
                p_priorities => ARRAY(SELECT (p_jobs[i]).priority FROM generate_subscripts(p_jobs, 1) AS i ORDER BY i),
                p_run_ats => ARRAY(SELECT (p_jobs[i]).run_at FROM generate_subscripts(p_jobs, 1) AS i ORDER BY i),
                p_max_attempts => ARRAY(SELECT (p_jobs[i]).max_attempts FROM generate_subscripts(p_jobs, 1) AS i ORDER BY i),
                p_timeouts => ARRAY(SELECT (p_jobs[i]).timeout FROM generate_subscripts(p_jobs, 1) AS i ORDER BY i),
                p_channel => '{channel}',
                p_notify => ARRAY(SELECT DISTINCT j.queue FROM unnest(p_jobs) AS j WHERE j.run_at <= p_now)
            ) AS e);
    END IF;
    BEGIN
        RETURN ARRAY(
            SELECT e.job_id FROM {schema}.q_enqueue_special(
                p_ids => p_ids, p_now => p_now,
                p_tasks => ARRAY(SELECT (p_jobs[i]).task FROM generate_subscripts(p_jobs, 1) AS i ORDER BY i),
                p_queues => ARRAY(SELECT (p_jobs[i]).queue FROM generate_subscripts(p_jobs, 1) AS i ORDER BY i),
                p_args => ARRAY(SELECT (p_jobs[i]).args FROM generate_subscripts(p_jobs, 1) AS i ORDER BY i),
                p_priorities => ARRAY(SELECT (p_jobs[i]).priority FROM generate_subscripts(p_jobs, 1) AS i ORDER BY i),
                p_run_ats => ARRAY(SELECT (p_jobs[i]).run_at FROM generate_subscripts(p_jobs, 1) AS i ORDER BY i),
                p_max_attempts => ARRAY(SELECT (p_jobs[i]).max_attempts FROM generate_subscripts(p_jobs, 1) AS i ORDER BY i),
                p_timeouts => ARRAY(SELECT (p_jobs[i]).timeout FROM generate_subscripts(p_jobs, 1) AS i ORDER BY i),
                p_unique_keys => ARRAY(SELECT (p_jobs[i]).unique_key FROM generate_subscripts(p_jobs, 1) AS i ORDER BY i),
                p_unique_states => ARRAY(SELECT (p_jobs[i]).unique_states FROM generate_subscripts(p_jobs, 1) AS i ORDER BY i),
                p_unique_windows => ARRAY(SELECT (p_jobs[i]).unique_window FROM generate_subscripts(p_jobs, 1) AS i ORDER BY i),
                p_on_conflicts => ARRAY(SELECT (p_jobs[i]).on_conflict FROM generate_subscripts(p_jobs, 1) AS i ORDER BY i),
                p_group_keys => ARRAY(SELECT (p_jobs[i]).group_key FROM generate_subscripts(p_jobs, 1) AS i ORDER BY i),
                p_afters => ARRAY(SELECT (p_jobs[i]).after FROM generate_subscripts(p_jobs, 1) AS i ORDER BY i),
                p_on_failures => ARRAY(SELECT (p_jobs[i]).on_failure FROM generate_subscripts(p_jobs, 1) AS i ORDER BY i)
            ) AS e);
    EXCEPTION WHEN raise_exception THEN  -- enqueue_one()'s 'pageq.unique:<id>' and 'pageq.parent:<id>'
        GET STACKED DIAGNOSTICS v_value = MESSAGE_TEXT;
        v_kind := split_part(v_value, ':', 1);
        v_value := split_part(v_value, ':', 2);
        IF v_kind = 'pageq.unique' THEN
            RAISE EXCEPTION 'pageq: the unique key is held by job %', v_value USING ERRCODE = '23505';
        ELSIF v_kind = 'pageq.parent' THEN
            RAISE EXCEPTION 'pageq: after: no job with id %', v_value USING ERRCODE = 'P0002';
        END IF;
        RAISE;
    END;
END
$$;

-- Enqueue a batch of jobs, all or none: `jobs` is a JSON array of objects with the keys of enqueue(); returns
-- their ids in order. Idempotency keys first, as the Python API (a known key answers its job's id).
CREATE FUNCTION {schema}.enqueue_many(jobs jsonb) RETURNS TABLE (id bigint)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz := statement_timestamp();
    v_jobs {schema}.api_job[];
    v_ids bigint[];
    v_taken boolean[];
    v_fresh integer[];
    v_reserved bigint[];
    v_made bigint[];
    v_denied record;
BEGIN
    IF jsonb_typeof(jobs) IS DISTINCT FROM 'array' THEN
        PERFORM {schema}.api_invalid('enqueue_many takes a JSON array of jobs');
    END IF;
    v_jobs := ARRAY(SELECT {schema}.api_check_job(e.j, e.n, v_now)
                    FROM jsonb_array_elements(jobs) WITH ORDINALITY AS e(j, n) ORDER BY e.n);
    IF cardinality(v_jobs) = 0 THEN
        RETURN;
    END IF;
    IF row_security_active('{schema}.jobs') THEN  -- a restricted role (RLS would refuse the row anyway)
        SELECT j.queue, j.task INTO v_denied FROM unnest(v_jobs) AS j
        WHERE NOT {schema}.acl_allows(current_user, '{enqueue,manage}', j.queue, j.task) LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'pageq: % may not enqueue task % in queue %', current_user, v_denied.task,
                v_denied.queue USING ERRCODE = '42501';
        END IF;
    END IF;
    IF EXISTS (SELECT FROM unnest(v_jobs) AS j WHERE j.idempotency_key IS NOT NULL) THEN
        SELECT array_agg(t.job_id ORDER BY t.n), array_agg(t.taken ORDER BY t.n) INTO v_ids, v_taken
        FROM {schema}.idempotency_take(
            ARRAY(SELECT (v_jobs[i]).idempotency_key FROM generate_subscripts(v_jobs, 1) AS i ORDER BY i),
            v_now) AS t;
        v_fresh := ARRAY(SELECT i FROM generate_subscripts(v_taken, 1) AS i WHERE v_taken[i] ORDER BY i);
        v_reserved := ARRAY(SELECT v_ids[i] FROM unnest(v_fresh) AS i);
    ELSE
        v_fresh := ARRAY(SELECT generate_series(1, cardinality(v_jobs)));
    END IF;
    IF cardinality(v_fresh) > 0 THEN
        v_made := {schema}.api_write(ARRAY(SELECT v_jobs[i] FROM unnest(v_fresh) AS i), v_reserved, v_now);
        IF v_ids IS NULL THEN
            v_ids := v_made;
        ELSE
            -- a keyed job whose unique key was held got the holder's id: its key names that job
            PERFORM {schema}.idempotency_relink(
                ARRAY(SELECT (v_jobs[f.i]).idempotency_key FROM unnest(v_fresh, v_reserved, v_made) AS f(i, r, m)
                      WHERE f.r <> f.m AND (v_jobs[f.i]).idempotency_key IS NOT NULL),
                ARRAY(SELECT f.m FROM unnest(v_fresh, v_reserved, v_made) AS f(i, r, m)
                      WHERE f.r <> f.m AND (v_jobs[f.i]).idempotency_key IS NOT NULL));
            v_ids := ARRAY(SELECT coalesce(m.made, x.id)
                           FROM unnest(v_ids) WITH ORDINALITY AS x(id, k)
                           LEFT JOIN unnest(v_reserved, v_made) AS m(reserved, made) ON m.reserved = x.id
                           ORDER BY x.k);
        END IF;
    END IF;
    RETURN QUERY SELECT x.id FROM unnest(v_ids) WITH ORDINALITY AS x(id, k) ORDER BY x.k;
END
$$;

-- Enqueue one job; returns its id (the holder's id when its unique key is held and on_conflict is
-- 'ignore', the id the key's first enqueue made for a known idempotency key).
CREATE FUNCTION {schema}.enqueue(
    task text, args jsonb DEFAULT '{}', queue text DEFAULT NULL, priority integer DEFAULT NULL,
    run_at timestamptz DEFAULT NULL, delay double precision DEFAULT NULL, max_attempts integer DEFAULT NULL,
    timeout double precision DEFAULT NULL, unique_key text DEFAULT NULL, unique_states text[] DEFAULT NULL,
    unique_window double precision DEFAULT NULL, on_conflict text DEFAULT NULL, group_key text DEFAULT NULL,
    after bigint[] DEFAULT NULL, on_parent_failure text DEFAULT NULL, idempotency_key text DEFAULT NULL
) RETURNS bigint LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT e.id FROM {schema}.enqueue_many(jsonb_build_array(jsonb_build_object(
        'task', $1, 'args', $2, 'queue', $3, 'priority', $4, 'run_at', $5, 'delay', $6, 'max_attempts', $7,
        'timeout', $8, 'unique_key', $9, 'unique_states', to_jsonb($10), 'unique_window', $11,
        'on_conflict', $12, 'group_key', $13, 'after', to_jsonb($14), 'on_parent_failure', $15,
        'idempotency_key', $16))) AS e
$$;

-- The delay before the next attempt of a job of `p_task` after `p_attempts` failed attempts: its published
-- backoff (the default policy, 2 ^ attempts seconds up to an hour +- 10 %, for a task not published).
CREATE FUNCTION {schema}.retry_delay(p_task text, p_attempts integer) RETURNS double precision
LANGUAGE sql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
    SELECT greatest(0, least(p.cap, p.factor * exp(least(p_attempts * ln(p.base), 700)))
                       * (1 + p.jitter * (2 * random() - 1)))
    FROM (SELECT coalesce(t.retry_base, 2) AS base, coalesce(t.retry_cap, 3600) AS cap,
                 coalesce(t.retry_factor, 1) AS factor, coalesce(t.retry_jitter, 0.1) AS jitter
          FROM (SELECT 1) AS one LEFT JOIN {schema}.tasks t ON t.name = p_task) AS p
$$;

CREATE FUNCTION {schema}.api_stale(p_id bigint) RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION 'pageq: job % is not running under this lease token', p_id USING ERRCODE = '55000',
        HINT = 'its lease expired and it was rescued, or it was cancelled or finished: nothing was written';
END
$$;

-- Lease up to `max_jobs` runnable jobs of `queues` (paused ones skipped, concurrency and rate limits
-- applied) for `lease` seconds, with the worker's claim statement; `tasks`: only these task names. Jobs
-- whose arguments are encrypted cannot run here: they go to `dead` (reason decrypt_failed), as with a Python
-- worker without the keys.
CREATE FUNCTION {schema}.claim(
    queues text[], max_jobs integer DEFAULT 1, lease double precision DEFAULT 30, worker text DEFAULT NULL,
    tasks text[] DEFAULT NULL
) RETURNS TABLE (id bigint, task text, queue text, args jsonb, priority smallint, attempts integer,
                 max_attempts integer, run_at timestamptz, created_at timestamptz, timeout double precision,
                 lease_token uuid, lease_expires_at timestamptz)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    v_now timestamptz := statement_timestamp();
    v_worker text := coalesce(claim.worker, 'sql:' || current_user || ':' || pg_backend_pid());
    v_queues text[];
    v_claimed {schema}.api_claimed[];
    v_bad {schema}.api_claimed[];
    v_bad_ids bigint[];
    c {schema}.api_claimed;
BEGIN
    IF cardinality(claim.queues) IS NOT DISTINCT FROM 0 OR cardinality(claim.queues) > 100 THEN
        PERFORM {schema}.api_invalid('claim needs 1 to 100 queues');
    END IF;
    v_queues := ARRAY(SELECT DISTINCT {schema}.api_name('queue', q) FROM unnest(claim.queues) AS q);
    PERFORM {schema}.api_name('task', t) FROM unnest(claim.tasks) AS t;
    IF claim.max_jobs IS NULL OR claim.max_jobs NOT BETWEEN 1 AND 1000 THEN
        PERFORM {schema}.api_invalid(format('max_jobs must be 1 to 1000, got %s', claim.max_jobs));
    END IF;
    IF claim.lease IS NULL OR claim.lease NOT BETWEEN 1 AND 86400 THEN
        PERFORM {schema}.api_invalid(format('lease must be 1 to 86400 seconds, got %s', claim.lease));
    END IF;
    IF length(v_worker) NOT BETWEEN 1 AND 200 THEN
        PERFORM {schema}.api_invalid('worker must be a name of 1 to 200 characters');
    END IF;
    IF EXISTS (SELECT FROM {schema}.queues q WHERE q.name = ANY (v_queues)) THEN  -- controls: the worker's
        PERFORM FROM {schema}.q_queues_lock(p_queues => v_queues);                -- controlled claim
        v_claimed := ARRAY(
            SELECT (q.id, q.task, q.queue, q.args, q.priority, q.attempts, q.max_attempts, q.run_at,
                    q.created_at, q.timeout, q.lease_token, q.group_key, q.linked)::{schema}.api_claimed
            FROM {schema}.q_claim_controlled(p_queues => v_queues, p_limit => claim.max_jobs, p_now => v_now,
                p_lease => claim.lease, p_worker => v_worker, p_tasks => claim.tasks,
                p_suspect => 2147483647) AS q);
    ELSE
        v_claimed := ARRAY(
            SELECT (q.id, q.task, q.queue, q.args, q.priority, q.attempts, q.max_attempts, q.run_at,
                    q.created_at, q.timeout, q.lease_token, q.group_key, q.linked)::{schema}.api_claimed
            FROM {schema}.q_claim(p_queues => v_queues, p_limit => claim.max_jobs, p_now => v_now,
                p_lease => claim.lease, p_worker => v_worker, p_tasks => claim.tasks,
                p_suspect => 2147483647) AS q);
    END IF;
    v_bad := ARRAY(SELECT x FROM unnest(v_claimed) AS x WHERE jsonb_typeof(x.args) = 'object' AND x.args ? '$enc');
    IF cardinality(v_bad) > 0 THEN
        PERFORM FROM {schema}.q_bury(
            p_ids => ARRAY(SELECT b.id FROM unnest(v_bad) AS b),
            p_tokens => ARRAY(SELECT b.lease_token::uuid FROM unnest(v_bad) AS b),
            p_errors => ARRAY(SELECT jsonb_build_object('attempt', b.attempts, 'error', format(
                    'DecryptError: the args of job %s are encrypted: a SQL worker cannot decrypt them', b.id),
                'traceback', NULL, 'worker', v_worker, 'at', v_now, 'reason', 'decrypt_failed')::text
                FROM unnest(v_bad) AS b),
            p_now => v_now);
        IF EXISTS (SELECT FROM unnest(v_bad) AS b WHERE b.linked) THEN
            PERFORM FROM {schema}.q_resolve(
                p_ids => ARRAY(SELECT b.id FROM unnest(v_bad) AS b WHERE b.linked),
                p_groups => ARRAY(SELECT DISTINCT b.group_key FROM unnest(v_bad) AS b
                                  WHERE b.linked AND b.group_key IS NOT NULL),
                p_now => v_now);
        END IF;
    END IF;
    v_bad_ids := ARRAY(SELECT b.id FROM unnest(v_bad) AS b);
    FOREACH c IN ARRAY v_claimed LOOP
        CONTINUE WHEN c.id = ANY (v_bad_ids);
        id := c.id; task := c.task; queue := c.queue; args := c.args; priority := c.priority;
        attempts := c.attempts; max_attempts := c.max_attempts; run_at := c.run_at; created_at := c.created_at;
        timeout := c.timeout; lease_token := c.lease_token::uuid;
        lease_expires_at := v_now + make_interval(secs => claim.lease);
        RETURN NEXT;
    END LOOP;
END
$$;

-- The running job `p_id` if it is leased with `p_token` (else the stale-lease error).
CREATE FUNCTION {schema}.api_held(p_id bigint, p_token uuid)
RETURNS TABLE (attempts integer, max_attempts integer, task text, worker text, linked boolean, group_key text)
LANGUAGE plpgsql STABLE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN QUERY SELECT j.attempts, j.max_attempts, j.task, j.worker, j.linked, j.group_key
    FROM {schema}.jobs j WHERE j.id = p_id AND j.state = 'running' AND j.lease_token = p_token;
    IF NOT FOUND THEN
        PERFORM {schema}.api_stale(p_id);
    END IF;
END
$$;

-- Extend a running job's lease to `lease` seconds from now; returns when it now expires.
CREATE FUNCTION {schema}.heartbeat(id bigint, lease_token uuid, lease double precision DEFAULT 30)
RETURNS timestamptz LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_now timestamptz := statement_timestamp();
BEGIN
    IF heartbeat.lease IS NULL OR heartbeat.lease NOT BETWEEN 1 AND 86400 THEN
        PERFORM {schema}.api_invalid(format('lease must be 1 to 86400 seconds, got %s', heartbeat.lease));
    END IF;
    IF NOT EXISTS (SELECT FROM {schema}.q_heartbeat(p_ids => ARRAY[heartbeat.id],
                   p_tokens => ARRAY[heartbeat.lease_token], p_now => v_now, p_lease => heartbeat.lease)) THEN
        PERFORM {schema}.api_stale(heartbeat.id);
    END IF;
    RETURN v_now + make_interval(secs => heartbeat.lease);
END
$$;

-- Finish a running job as succeeded with `result` (JSON); its group and dependents are settled in the same
-- transaction. Returns 'succeeded'. Run it in the transaction of the work's own writes: a stale lease
-- raises, and they roll back with it.
CREATE FUNCTION {schema}.complete(id bigint, lease_token uuid, result jsonb DEFAULT NULL)
RETURNS text LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_now timestamptz := statement_timestamp();
    v_held record;
BEGIN
    SELECT * INTO v_held FROM {schema}.api_held(complete.id, complete.lease_token);
    IF NOT EXISTS (SELECT FROM {schema}.q_complete(p_ids => ARRAY[complete.id],
                   p_tokens => ARRAY[complete.lease_token], p_results => ARRAY[complete.result::text],
                   p_now => v_now)) THEN
        PERFORM {schema}.api_stale(complete.id);
    END IF;
    IF v_held.linked THEN
        PERFORM FROM {schema}.q_resolve(p_ids => ARRAY[complete.id],
            p_groups => ARRAY(SELECT v_held.group_key WHERE v_held.group_key IS NOT NULL), p_now => v_now);
    END IF;
    RETURN 'succeeded';
END
$$;

-- Record a failed attempt of a running job: retried after `retry_in` seconds (else the task's published
-- backoff), or `dead` when `retryable` is false or its attempts are spent. Returns the new state.
CREATE FUNCTION {schema}.fail(
    id bigint, lease_token uuid, error text, retry_in double precision DEFAULT NULL,
    retryable boolean DEFAULT true, traceback text DEFAULT NULL
) RETURNS text LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_now timestamptz := statement_timestamp();
    v_held record;
    v_error text;
    v_dead boolean;
BEGIN
    IF fail.retry_in < 0 OR fail.retry_in > 315360000 THEN
        PERFORM {schema}.api_invalid(format('retry_in must be 0 to 315360000 seconds, got %s', fail.retry_in));
    END IF;
    SELECT * INTO v_held FROM {schema}.api_held(fail.id, fail.lease_token);
    v_error := jsonb_build_object('attempt', v_held.attempts, 'error', left(coalesce(fail.error, ''), 2000),
        'traceback', right(fail.traceback, 8192), 'worker', v_held.worker, 'at', v_now)::text;
    v_dead := fail.retryable IS FALSE OR v_held.attempts >= v_held.max_attempts;
    IF v_dead THEN
        PERFORM FROM {schema}.q_bury(p_ids => ARRAY[fail.id], p_tokens => ARRAY[fail.lease_token],
                                     p_errors => ARRAY[v_error], p_now => v_now);
        IF v_held.linked THEN
            PERFORM FROM {schema}.q_resolve(p_ids => ARRAY[fail.id],
                p_groups => ARRAY(SELECT v_held.group_key WHERE v_held.group_key IS NOT NULL), p_now => v_now);
        END IF;
        RETURN 'dead';
    END IF;
    PERFORM FROM {schema}.q_retry(p_ids => ARRAY[fail.id], p_tokens => ARRAY[fail.lease_token],
        p_run_ats => ARRAY[v_now + make_interval(secs => coalesce(
            fail.retry_in, {schema}.retry_delay(v_held.task, v_held.attempts)))],
        p_errors => ARRAY[v_error]);
    RETURN 'retrying';
END
$$;

-- Give a running job back at once (a worker shutting down): queued again, the attempt not counted.
CREATE FUNCTION {schema}.release(id bigint, lease_token uuid) RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF NOT EXISTS (SELECT FROM {schema}.q_release(p_ids => ARRAY[release.id],
                   p_tokens => ARRAY[release.lease_token], p_now => statement_timestamp())) THEN
        PERFORM {schema}.api_stale(release.id);
    END IF;
    RETURN 'queued';
END
$$;

-- Cancel a live job (needs `manage` on it); a running one's worker is told at once. Jobs that depend on it
-- are settled. Returns 'cancelled'.
CREATE FUNCTION {schema}.cancel(id bigint) RETURNS text
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_job record;
    v_state text;
BEGIN
    SELECT j.queue, j.task INTO v_job FROM {schema}.jobs j WHERE j.id = cancel.id;
    IF NOT FOUND THEN
        SELECT f.state INTO v_state FROM {schema}.finished_jobs f WHERE f.id = cancel.id;
        IF FOUND THEN
            RAISE EXCEPTION 'pageq: job % is % and cannot be cancelled', cancel.id, v_state USING ERRCODE = '55000';
        END IF;
        RAISE EXCEPTION 'pageq: no job with id %', cancel.id USING ERRCODE = 'P0002';
    END IF;
    IF row_security_active('{schema}.jobs')
       AND NOT {schema}.acl_allows(current_user, '{manage}', v_job.queue, v_job.task) THEN
        RAISE EXCEPTION 'pageq: % may not cancel task % in queue %', current_user, v_job.task, v_job.queue
            USING ERRCODE = '42501';
    END IF;
    IF NOT EXISTS (SELECT FROM {schema}.cancel_jobs(ARRAY[cancel.id], statement_timestamp())) THEN
        RAISE EXCEPTION 'pageq: job % finished meanwhile and cannot be cancelled', cancel.id USING ERRCODE = '55000';
    END IF;
    RETURN 'cancelled';
END
$$;

-- The restricted roles (0004, 0005, 0008, 0009) get the SQL API: producers enqueue, workers and admins also claim,
-- heartbeat, complete, fail, release and cancel (cancel checks `manage`), each with the published query
-- functions it runs (`q_<name>`, made by migrate; granted again each time they are made). Nothing here is
-- executable by PUBLIC.
-- Workers also lose UPDATE on whole job rows: they may change only the columns their statements (claims,
-- acknowledgements, heartbeats, the rescuer, settling dependents) write, never a job's task, queue,
-- arguments, priority or limits; in finished_jobs only the result (ctx.transaction()'s).
ALTER FUNCTION {schema}.setup_db_roles() RENAME TO setup_db_roles_0009;

CREATE FUNCTION {schema}.setup_db_roles() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    s text := '{schema}';
    f record;
BEGIN
    PERFORM {schema}.setup_db_roles_0009();
    EXECUTE format('GRANT SELECT ON %I.tasks, %I.routes, %I.sql_api TO %I, %I, %I', s, s, s,
                   s || '_producer', s || '_worker', s || '_admin');
    EXECUTE format('REVOKE UPDATE ON %I.jobs, %I.finished_jobs FROM %I', s, s, s || '_worker');
    EXECUTE format('GRANT UPDATE (state, attempts, run_at, lease_token, lease_expires_at, worker, started_at, '
                   'errors, crashes, linked) ON %I.jobs TO %I', s, s || '_worker');
    EXECUTE format('GRANT UPDATE (result) ON %I.finished_jobs TO %I', s, s || '_worker');
    FOR f IN SELECT p.oid::regprocedure AS fn,
                    p.proname IN ('enqueue', 'enqueue_many', 'api_check_job', 'api_write', 'api_num', 'api_text',
                                  'api_name', 'api_invalid', 'route', 'q_enqueue', 'q_enqueue_special') AS enqueues
             FROM pg_proc p
             WHERE p.pronamespace = s::regnamespace
               AND (p.proname LIKE 'q\_%' OR p.proname LIKE 'api\_%' OR p.proname IN (
                    'enqueue', 'enqueue_many', 'route', 'retry_delay', 'claim', 'heartbeat', 'complete', 'fail',
                    'release', 'cancel'))
    LOOP
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I, %I', f.fn, s || '_worker', s || '_admin');
        IF f.enqueues THEN
            EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO %I', f.fn, s || '_producer');
        END IF;
    END LOOP;
END
$$;

DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
             WHERE p.pronamespace = '{schema}'::regnamespace AND (p.proname LIKE 'api\_%' OR p.proname IN (
                 'enqueue', 'enqueue_many', 'route', 'retry_delay', 'claim', 'heartbeat', 'complete', 'fail',
                 'release', 'cancel'))
    LOOP
        EXECUTE format('REVOKE EXECUTE ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{schema}_worker') THEN
        PERFORM {schema}.setup_db_roles();
    END IF;
END
$$;
