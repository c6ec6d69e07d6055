-- The dispatcher: queue controls, unique keys, ordered groups, dependencies (the `blocked` state) and
-- periodic schedules. Everything that only some jobs use lives in side tables or in columns the hot path
-- never reads, so plain jobs pay nothing: see docs/dispatching.md.

-- A job waiting for its parents (after=...) or for the jobs before it in its group is `blocked`: it is
-- outside jobs_claim_idx, so claims never see it.
ALTER TABLE {schema}.jobs DROP CONSTRAINT jobs_state_check;
ALTER TABLE {schema}.jobs ADD CONSTRAINT jobs_state_check
    CHECK (state IN ('scheduled', 'queued', 'running', 'retrying', 'blocked'));
-- group_key: jobs of one group run one at a time in id (enqueue) order.
-- linked: the job has a group or dependents, so finishing it must release the next ones (resolve()).
ALTER TABLE {schema}.jobs ADD COLUMN group_key text, ADD COLUMN linked boolean NOT NULL DEFAULT false;
CREATE INDEX jobs_group_idx ON {schema}.jobs (group_key, id) WHERE group_key IS NOT NULL;

-- Queue controls, changed at run time; a queue without a row has none. Workers cache these rows (refreshed
-- every second and on a '!queues' notification) and use the plain claim for queues without controls.
CREATE TABLE {schema}.queues (
    name         text PRIMARY KEY,
    paused       boolean          NOT NULL DEFAULT false,
    concurrency  integer,            -- at most this many running jobs across all workers
    rate_limit   integer,            -- at most this many starts per rate_period seconds, cluster-wide
    rate_period  double precision,
    weight       integer          NOT NULL DEFAULT 1,  -- share of a claim among a worker's queues
    window_start timestamptz,        -- the current rate window and the starts counted in it
    window_count integer          NOT NULL DEFAULT 0,
    updated_at   timestamptz      NOT NULL,
    CONSTRAINT queues_concurrency_check CHECK (concurrency >= 0),
    CONSTRAINT queues_rate_check CHECK ((rate_limit IS NULL) = (rate_period IS NULL)
                                        AND rate_limit >= 0 AND rate_period > 0),
    CONSTRAINT queues_weight_check CHECK (weight BETWEEN 1 AND 1000)
);

-- Workers publish their load with each refresh.
ALTER TABLE {schema}.workers ADD COLUMN running integer NOT NULL DEFAULT 0;

-- Unique keys: a plain table (never a unique index on jobs, which is partitioned). A key is held by a job
-- while that job's state is one of `states` and, with a window, until `expires_at`; a new job with the
-- same key then conflicts. Evaluated when a new job asks for the key, under the key row's lock.
CREATE TABLE {schema}.unique_keys (
    key        text PRIMARY KEY,
    job_id     bigint      NOT NULL,
    states     text[]      NOT NULL,
    expires_at timestamptz
);

-- Dependencies: the child waits (blocked) until every parent finished; a dead or cancelled parent
-- cancels the child or, with on_failure = 'run', counts as done.
CREATE TABLE {schema}.job_deps (
    child_id   bigint  NOT NULL,
    parent_id  bigint  NOT NULL,
    ord        integer NOT NULL,
    on_failure text    NOT NULL,
    satisfied  boolean NOT NULL DEFAULT false,
    PRIMARY KEY (child_id, parent_id),
    CONSTRAINT job_deps_on_failure_check CHECK (on_failure IN ('cancel', 'run'))
);
CREATE INDEX job_deps_parent_idx ON {schema}.job_deps (parent_id) WHERE NOT satisfied;

-- Periodic schedules: the last tick enqueued, locked by whoever fires the next one.
CREATE TABLE {schema}.periodic (
    name      text PRIMARY KEY,
    last_tick timestamptz NOT NULL
);

-- Serialises everything that decides the order of one group (enqueue and release).
CREATE FUNCTION {schema}.lock_group(p_group text) RETURNS void LANGUAGE sql AS $$
    SELECT pg_advisory_xact_lock(hashtextextended('{schema}.group:' || p_group, 0));
$$;

-- Release the blocked jobs that became ready (no unsatisfied parent, first live job of their group);
-- returns how many. The caller holds the locks of the candidates' groups.
CREATE FUNCTION {schema}.release_ready(p_candidates bigint[], p_now timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_queues text[];
BEGIN
    WITH released AS (
        UPDATE {schema}.jobs AS j
        SET state = CASE WHEN j.run_at > p_now THEN 'scheduled' ELSE 'queued' END
        WHERE j.id = ANY(p_candidates) AND j.state = 'blocked'
          AND NOT EXISTS (SELECT 1 FROM {schema}.job_deps d WHERE d.child_id = j.id AND NOT d.satisfied)
          AND (j.group_key IS NULL OR NOT EXISTS (
                SELECT 1 FROM {schema}.jobs e WHERE e.group_key = j.group_key AND e.id < j.id))
        RETURNING j.queue, j.state
    )
    SELECT array_agg(DISTINCT queue) FILTER (WHERE state = 'queued') INTO v_queues FROM released;
    PERFORM pg_notify('{channel}', q) FROM unnest(v_queues) AS q;
    RETURN coalesce(cardinality(v_queues), 0);
END;
$$;

-- Move live jobs to finished_jobs as cancelled (with a reason in their error history); running ones are
-- announced ('!cancel:<id>') so their worker stops them. Audited ('cancel', with the reason) at level >= 1,
-- like the job_cancel statement. Returns (id, group_key, linked) of each.
CREATE FUNCTION {schema}.move_cancelled(p_ids bigint[], p_now timestamptz, p_reason text)
RETURNS TABLE (id bigint, group_key text, linked boolean) LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY
    WITH gone AS (
        DELETE FROM {schema}.jobs AS j WHERE j.id = ANY(p_ids) RETURNING j.*
    ), moved AS (
        INSERT INTO {schema}.finished_jobs
            (id, task, queue, args, state, priority, run_at, attempts, max_attempts, timeout, lease_token,
             worker, created_at, started_at, finished_at, result, errors)
        SELECT g.id, g.task, g.queue, g.args, 'cancelled', g.priority, g.run_at, g.attempts, g.max_attempts,
               g.timeout, g.lease_token, g.worker, g.created_at, g.started_at, p_now, NULL,
               CASE WHEN p_reason IS NULL THEN g.errors ELSE g.errors || jsonb_build_array(jsonb_build_object(
                   'attempt', g.attempts, 'error', p_reason, 'traceback', NULL, 'worker', NULL, 'at', p_now))
               END
        FROM gone g
        RETURNING 1
    ), audited AS (
        INSERT INTO {schema}.audit (action, job_id, queue, task, reason)
        SELECT 'cancel', g.id, g.queue, g.task, p_reason FROM gone g
        WHERE (SELECT c.level FROM {schema}.audit_config c) >= 1
        RETURNING 1
    ), announced AS (
        SELECT count(pg_notify('{channel}', '!cancel:' || g.id)) FROM gone g WHERE g.state = 'running'
    )
    SELECT g.id, g.group_key, g.linked
    FROM gone g, (SELECT count(*) FROM moved) m, (SELECT count(*) FROM audited) a, announced;
END;
$$;

-- After jobs finished (p_done, with the groups they belonged to): settle their dependents (satisfied, or
-- cancelled when a parent died, recursively), then release what became ready. Returns how many jobs it
-- cancelled. Called in the transaction that finished them, and by the leader's sweep as a safety net.
CREATE FUNCTION {schema}.resolve(p_done bigint[], p_groups text[], p_now timestamptz) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_done bigint[] := coalesce(p_done, '{}');
    v_groups text[] := coalesce(p_groups, '{}');
    v_candidates bigint[] := '{}';
    v_doomed bigint[];
    v_cancelled integer := 0;
    r record;
BEGIN
    WHILE cardinality(v_done) > 0 LOOP
        v_doomed := '{}';
        FOR r IN
            SELECT d.child_id, d.parent_id, d.on_failure, f.state AS parent_state
            FROM {schema}.job_deps d LEFT JOIN {schema}.finished_jobs f ON f.id = d.parent_id
            WHERE d.parent_id = ANY(v_done) AND NOT d.satisfied
              AND NOT EXISTS (SELECT 1 FROM {schema}.jobs l WHERE l.id = d.parent_id)
            ORDER BY d.child_id, d.parent_id
        LOOP
            IF r.parent_state IS NULL OR r.parent_state = 'succeeded' OR r.on_failure = 'run' THEN
                UPDATE {schema}.job_deps SET satisfied = true
                WHERE child_id = r.child_id AND parent_id = r.parent_id;
                v_candidates := v_candidates || r.child_id;
            ELSE
                v_doomed := v_doomed || r.child_id;
            END IF;
        END LOOP;
        DELETE FROM {schema}.job_deps WHERE child_id = ANY(v_done);
        v_done := '{}';
        FOR r IN SELECT * FROM {schema}.move_cancelled(
            ARRAY(SELECT DISTINCT c FROM unnest(v_doomed) AS c ORDER BY c), p_now,
            'ParentFailed: a job it depends on is dead or cancelled')
        LOOP
            v_cancelled := v_cancelled + 1;
            v_done := v_done || r.id;
            IF r.group_key IS NOT NULL THEN
                v_groups := v_groups || r.group_key;
            END IF;
        END LOOP;
    END LOOP;
    -- lock every group involved in one order (no deadlock between two resolvers), then look again
    v_groups := ARRAY(
        SELECT DISTINCT g FROM (
            SELECT unnest(v_groups) AS g
            UNION ALL
            SELECT j.group_key FROM {schema}.jobs j WHERE j.id = ANY(v_candidates) AND j.group_key IS NOT NULL
        ) s WHERE g IS NOT NULL ORDER BY g);
    PERFORM {schema}.lock_group(g) FROM unnest(v_groups) AS g;
    v_candidates := v_candidates || ARRAY(
        SELECT h.id FROM unnest(v_groups) AS g
        CROSS JOIN LATERAL (
            SELECT j.id, j.state FROM {schema}.jobs j WHERE j.group_key = g ORDER BY j.id LIMIT 1
        ) h
        WHERE h.state = 'blocked');
    -- two parents of one child finishing in two transactions: each must see the other's settled dependency,
    -- so candidates are locked (in id order) and release_ready() reads after the lock (a new snapshot)
    PERFORM 1 FROM {schema}.jobs j WHERE j.id = ANY(v_candidates) ORDER BY j.id FOR NO KEY UPDATE;
    PERFORM {schema}.release_ready(v_candidates, p_now);
    RETURN v_cancelled;
END;
$$;

-- Cancel live jobs (any state) and settle what depended on them. Returns the ids cancelled.
CREATE FUNCTION {schema}.cancel_jobs(p_ids bigint[], p_now timestamptz) RETURNS SETOF bigint
LANGUAGE plpgsql AS $$
DECLARE
    v_ids bigint[] := '{}';
    v_linked bigint[] := '{}';
    v_groups text[] := '{}';
    r record;
BEGIN
    FOR r IN SELECT * FROM {schema}.move_cancelled(
        ARRAY(SELECT DISTINCT i FROM unnest(p_ids) AS i ORDER BY i), p_now, NULL)
    LOOP
        v_ids := v_ids || r.id;
        IF r.linked THEN
            v_linked := v_linked || r.id;
            IF r.group_key IS NOT NULL THEN
                v_groups := v_groups || r.group_key;
            END IF;
        END IF;
    END LOOP;
    IF cardinality(v_linked) > 0 THEN
        PERFORM {schema}.resolve(v_linked, v_groups, p_now);
    END IF;
    RETURN QUERY SELECT unnest(v_ids);
END;
$$;

-- The leader's safety net: parents that finished without settling their dependents (rescued to dead,
-- or finished by a worker that did not know the job had dependents yet), and groups whose first live
-- job is still blocked. Cheap when nothing uses these features: two empty index ranges.
CREATE FUNCTION {schema}.resolve_sweep(p_now timestamptz) RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_parents bigint[];
    v_groups text[];
BEGIN
    v_parents := ARRAY(
        SELECT DISTINCT d.parent_id FROM {schema}.job_deps d
        WHERE NOT d.satisfied AND NOT EXISTS (SELECT 1 FROM {schema}.jobs j WHERE j.id = d.parent_id)
        LIMIT 1000);
    v_groups := ARRAY(
        SELECT h.group_key FROM (
            SELECT DISTINCT ON (j.group_key) j.group_key, j.state FROM {schema}.jobs j
            WHERE j.group_key IS NOT NULL ORDER BY j.group_key, j.id
        ) h WHERE h.state = 'blocked' LIMIT 1000);
    IF cardinality(v_parents) = 0 AND cardinality(v_groups) = 0 THEN
        RETURN 0;
    END IF;
    RETURN {schema}.resolve(v_parents, v_groups, p_now);
END;
$$;

-- The state of a live or finished job, and nothing else of it: whether a unique key's holder still holds
-- it. SECURITY DEFINER so that a producer role (no privilege on finished_jobs) can enqueue unique jobs.
CREATE FUNCTION {schema}.job_state(p_id bigint) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT s.state FROM (
        SELECT j.state FROM {schema}.jobs j WHERE j.id = p_id
        UNION ALL
        SELECT f.state FROM {schema}.finished_jobs f WHERE f.id = p_id) s
    LIMIT 1
$$;

-- Enqueue one job that uses a dispatcher feature (unique key, group, dependencies). Returns the job's id
-- and whether it was inserted (false: the unique key was held by the returned job and on_conflict was
-- 'ignore'). on_conflict 'raise' raises 'pageq.unique:<holder id>' (SQLSTATE P0001); 'replace' cancels a
-- holder that has not started yet (scheduled, queued, retrying, blocked) and takes its key. `p_id`: a
-- reserved id (arguments encrypted for it), else the sequence's. Audited ('enqueue') at level >= 1.
CREATE FUNCTION {schema}.enqueue_one(
    p_task text, p_queue text, p_args jsonb, p_priority smallint, p_run_at timestamptz,
    p_max_attempts integer, p_timeout double precision, p_now timestamptz,
    p_unique_key text, p_unique_states text[], p_unique_window double precision, p_on_conflict text,
    p_group_key text, p_after bigint[], p_on_parent_failure text, p_id bigint DEFAULT NULL
) RETURNS TABLE (job_id bigint, inserted boolean) LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
    v_key record;
    v_holder_state text;
    v_pending integer := 0;
    v_doomed boolean := false;
    v_state text;
    r record;
BEGIN
    IF cardinality(p_after) > 0 THEN
        -- parents cannot finish until we commit, so their resolve() sees our job_deps rows; taken before
        -- the group lock (resolve() takes group locks after finishing its jobs)
        PERFORM 1 FROM {schema}.jobs j WHERE j.id = ANY(p_after) ORDER BY j.id FOR KEY SHARE;
        UPDATE {schema}.jobs j SET linked = true WHERE j.id = ANY(p_after) AND NOT j.linked;
    END IF;
    IF p_group_key IS NOT NULL THEN
        PERFORM {schema}.lock_group(p_group_key);
    END IF;
    v_id := coalesce(p_id, nextval('{schema}.job_id_seq'));
    IF p_unique_key IS NOT NULL THEN
        INSERT INTO {schema}.unique_keys AS k (key, job_id, states, expires_at)
        VALUES (p_unique_key, v_id, p_unique_states, p_now + make_interval(secs => p_unique_window))
        ON CONFLICT (key) DO NOTHING;
        IF NOT FOUND THEN
            SELECT k.job_id, k.expires_at, k.states INTO v_key FROM {schema}.unique_keys k
            WHERE k.key = p_unique_key FOR UPDATE;
            v_holder_state := {schema}.job_state(v_key.job_id);
            IF v_holder_state = ANY(v_key.states)
               AND (v_key.expires_at IS NULL OR v_key.expires_at > p_now) THEN
                IF p_on_conflict = 'replace'
                   AND v_holder_state IN ('scheduled', 'queued', 'retrying', 'blocked') THEN
                    PERFORM {schema}.cancel_jobs(ARRAY[v_key.job_id], p_now);
                ELSIF p_on_conflict = 'raise' THEN
                    RAISE EXCEPTION 'pageq.unique:%', v_key.job_id;
                ELSE
                    RETURN QUERY SELECT v_key.job_id, false;
                    RETURN;
                END IF;
            END IF;
            UPDATE {schema}.unique_keys k
            SET job_id = v_id, states = p_unique_states,
                expires_at = p_now + make_interval(secs => p_unique_window)
            WHERE k.key = p_unique_key;
        END IF;
    END IF;
    IF cardinality(p_after) > 0 THEN
        FOR r IN
            SELECT a.parent, a.ord::integer AS ord, coalesce(l.state, f.state) AS state
            FROM unnest(p_after) WITH ORDINALITY AS a(parent, ord)
            LEFT JOIN {schema}.jobs l ON l.id = a.parent
            LEFT JOIN {schema}.finished_jobs f ON f.id = a.parent
        LOOP
            IF r.state IS NULL THEN
                RAISE EXCEPTION 'pageq.parent:%', r.parent;
            END IF;
            IF r.state IN ('dead', 'cancelled') AND p_on_parent_failure = 'cancel' THEN
                v_doomed := true;
            END IF;
            INSERT INTO {schema}.job_deps (child_id, parent_id, ord, on_failure, satisfied)
            VALUES (v_id, r.parent, r.ord, p_on_parent_failure,
                    r.state IN ('succeeded', 'dead', 'cancelled'))
            ON CONFLICT DO NOTHING;
            IF r.state NOT IN ('succeeded', 'dead', 'cancelled') THEN
                v_pending := v_pending + 1;
            END IF;
        END LOOP;
    END IF;
    IF v_pending > 0 OR v_doomed OR (p_group_key IS NOT NULL AND EXISTS (
            SELECT 1 FROM {schema}.jobs j WHERE j.group_key = p_group_key)) THEN
        v_state := 'blocked';
    ELSIF p_run_at > p_now THEN
        v_state := 'scheduled';
    ELSE
        v_state := 'queued';
    END IF;
    INSERT INTO {schema}.jobs (id, task, queue, args, state, priority, run_at, max_attempts, timeout,
                               created_at, group_key, linked)
    VALUES (v_id, p_task, p_queue, p_args, v_state, p_priority, p_run_at, p_max_attempts, p_timeout,
            p_now, p_group_key, p_group_key IS NOT NULL OR coalesce(cardinality(p_after), 0) > 0);
    IF (SELECT c.level FROM {schema}.audit_config c) >= 1 THEN
        INSERT INTO {schema}.audit (action, job_id, queue, task) VALUES ('enqueue', v_id, p_queue, p_task);
    END IF;
    IF v_doomed THEN
        PERFORM {schema}.move_cancelled(ARRAY[v_id], p_now,
                                        'ParentFailed: a job it depends on is dead or cancelled');
    ELSIF v_state = 'queued' THEN
        PERFORM pg_notify('{channel}', p_queue);
    END IF;
    RETURN QUERY SELECT v_id, true;
END;
$$;

-- Whether the principal mapped to a database role may do any of `actions` in queue `q` (any task: a deny
-- counts only when it covers every task). The policies on queue controls use it (issue 6's acl_allows()
-- is per task; a queue's controls belong to no task).
CREATE FUNCTION {schema}.acl_allows_queue(who text, actions text[], q text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(bool_or(s.ok), false) FROM (
        SELECT bool_or(g.allow) AND NOT bool_or(NOT g.allow AND g.task_like = '%') AS ok
        FROM {schema}.db_roles r
        JOIN {schema}.principals p ON p.name = r.principal AND p.disabled_at IS NULL
        JOIN {schema}.grants g ON g.principal = p.name
        CROSS JOIN unnest(actions) AS a(action)
        WHERE r.role = who AND (g.action = '*' OR g.action = a.action) AND q LIKE g.queue_like
        GROUP BY a.action
    ) AS s
$$;

-- The restricted database roles of migration 0004, extended to the dispatcher's tables: 0004's function
-- is kept (renamed) and called first (it drops every `restricted_*` policy, these included, and recreates
-- its own). What each kind gets:
--   producer: unique keys (read, take) and dependency rows (insert) for the jobs it enqueues;
--   worker:   its queues' controls (read, and only the rate-window counters to write), unique keys and
--             dependencies (the leader prunes them, completions settle them), periodic schedules;
--   admin:    everything on these tables, queue controls limited by `manage` grants.
-- Queue controls have row-level security (a row is a queue); unique keys, dependencies and schedules carry
-- no queue or task of their own and are reached through the jobs that the job policies already guard.
ALTER FUNCTION {schema}.setup_db_roles() RENAME TO setup_db_roles_0004;
ALTER TABLE {schema}.queues ENABLE ROW LEVEL SECURITY;
DO $$
BEGIN
    EXECUTE format('CREATE POLICY owner_all ON {schema}.queues TO %I USING (true) WITH CHECK (true)', current_user);
END
$$;

CREATE FUNCTION {schema}.setup_db_roles() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    s text := '{schema}';
    producer text := s || '_producer';
    worker text := s || '_worker';
    admin text := s || '_admin';
BEGIN
    PERFORM {schema}.setup_db_roles_0004();
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON %I.unique_keys TO %I, %I, %I', s, producer, worker, admin);
    EXECUTE format('GRANT DELETE ON %I.unique_keys TO %I, %I', s, worker, admin);
    EXECUTE format('GRANT SELECT, INSERT ON %I.job_deps TO %I', s, producer);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I.job_deps TO %I, %I', s, worker, admin);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE ON %I.periodic TO %I', s, worker);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I.periodic TO %I', s, admin);
    EXECUTE format('GRANT SELECT, UPDATE (window_start, window_count) ON %I.queues TO %I', s, worker);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I.queues TO %I', s, admin);
    EXECUTE format('GRANT EXECUTE ON FUNCTION %I.acl_allows_queue(text, text[], text) TO %I, %I, %I',
                   s, producer, worker, admin);
    EXECUTE format('ALTER TABLE %I.queues ENABLE ROW LEVEL SECURITY', s);
    EXECUTE format($p$CREATE POLICY restricted_select ON %1$I.queues FOR SELECT TO %2$I, %3$I
        USING (%1$I.acl_allows_queue(current_user, '{read,work,manage}', name))$p$, s, worker, admin);
    EXECUTE format($p$CREATE POLICY restricted_update ON %1$I.queues FOR UPDATE TO %2$I, %3$I
        USING (%1$I.acl_allows_queue(current_user, '{work,manage}', name))
        WITH CHECK (%1$I.acl_allows_queue(current_user, '{work,manage}', name))$p$, s, worker, admin);
    EXECUTE format($p$CREATE POLICY restricted_insert ON %1$I.queues FOR INSERT TO %2$I
        WITH CHECK (%1$I.acl_allows_queue(current_user, '{manage}', name))$p$, s, admin);
    EXECUTE format($p$CREATE POLICY restricted_delete ON %1$I.queues FOR DELETE TO %2$I
        USING (%1$I.acl_allows_queue(current_user, '{manage}', name))$p$, s, admin);
END
$$;

-- Roles set up before this migration get the new privileges now.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{schema}_worker') THEN
        PERFORM {schema}.setup_db_roles();
    END IF;
END
$$;
