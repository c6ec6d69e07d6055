-- Follow-up jobs (on_complete= / on_success= / on_failure=) and dispatcher sweeps whose cost follows the
-- work to do rather than the size of the backlog (issue 5). See docs/dispatching.md.

-- A dependency may now want its parent to FAIL: 'only' (the policy of on_failure= follow-ups) is satisfied
-- when the parent died or was cancelled, and cancels the child when the parent succeeded.
ALTER TABLE {schema}.job_deps DROP CONSTRAINT job_deps_on_failure_check;
ALTER TABLE {schema}.job_deps ADD CONSTRAINT job_deps_on_failure_check
    CHECK (on_failure IN ('cancel', 'run', 'only'));

-- Linked jobs that may finish without their dependents and group being settled in the same transaction:
-- a job that got its first dependent while running (its worker claimed it unlinked) and a linked job whose
-- lease expired (the rescuer may bury it). The leader's sweep settles each once it has left `jobs`, so it
-- reads only these rows, not every open dependency.
CREATE TABLE {schema}.job_watch (
    job_id    bigint PRIMARY KEY,
    group_key text
);

-- The leader's cleanup of unique keys reads these indexes instead of the whole table.
CREATE INDEX unique_keys_expires_idx ON {schema}.unique_keys (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX unique_keys_job_idx ON {schema}.unique_keys (job_id);

-- resolve(): as in 0005, set-based (one statement settles every dependency of the finished jobs, however
-- many children they have) and with the 'only' policy. Ids in p_done that are still live are ignored.
CREATE OR REPLACE FUNCTION {schema}.resolve(p_done bigint[], p_groups text[], p_now timestamptz)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_done bigint[];
    v_groups text[] := coalesce(p_groups, '{}');
    v_candidates bigint[] := '{}';
    v_settled bigint[];
    v_failed bigint[];
    v_unwanted bigint[];
    v_cancelled integer := 0;
    v_gone bigint[];
    v_gone_groups text[];
BEGIN
    v_done := ARRAY(SELECT DISTINCT i FROM unnest(p_done) AS i
                    WHERE NOT EXISTS (SELECT 1 FROM {schema}.jobs l WHERE l.id = i));
    WHILE cardinality(v_done) > 0 LOOP
        -- the open dependencies on these parents, locked in one order first (the completer and the sweep
        -- may settle one parent at once), then judged and settled in one statement
        PERFORM 1 FROM {schema}.job_deps d
        WHERE d.parent_id = ANY(v_done) AND NOT d.satisfied
        ORDER BY d.child_id, d.parent_id FOR UPDATE;
        WITH open AS (
            SELECT d.child_id, d.parent_id,
                   CASE WHEN coalesce(f.state, 'succeeded') = 'succeeded'
                        THEN CASE WHEN d.on_failure = 'only' THEN 'unwanted' ELSE 'ok' END
                        ELSE CASE WHEN d.on_failure = 'cancel' THEN 'failed' ELSE 'ok' END
                   END AS verdict
            FROM {schema}.job_deps d LEFT JOIN {schema}.finished_jobs f ON f.id = d.parent_id
            WHERE d.parent_id = ANY(v_done) AND NOT d.satisfied
        ), settled AS (
            UPDATE {schema}.job_deps d SET satisfied = true
            FROM open o
            WHERE o.verdict = 'ok' AND d.child_id = o.child_id AND d.parent_id = o.parent_id
            RETURNING d.child_id
        )
        SELECT ARRAY(SELECT DISTINCT s.child_id FROM settled s),
               ARRAY(SELECT DISTINCT o.child_id FROM open o WHERE o.verdict = 'failed' ORDER BY 1),
               ARRAY(SELECT DISTINCT o.child_id FROM open o WHERE o.verdict = 'unwanted' ORDER BY 1)
        INTO v_settled, v_failed, v_unwanted;
        v_candidates := v_candidates || v_settled;
        DELETE FROM {schema}.job_deps WHERE child_id = ANY(v_done);
        WITH gone AS (
            SELECT c.id, c.group_key FROM {schema}.move_cancelled(v_failed, p_now,
                'ParentFailed: a job it depends on is dead or cancelled') AS c
            UNION ALL
            SELECT c.id, c.group_key FROM {schema}.move_cancelled(v_unwanted, p_now,
                'ParentSucceeded: it was to run only if the job it follows failed') AS c
        )
        SELECT ARRAY(SELECT g.id FROM gone g),
               ARRAY(SELECT g.group_key FROM gone g WHERE g.group_key IS NOT NULL)
        INTO v_gone, v_gone_groups;
        v_cancelled := v_cancelled + cardinality(v_gone);
        v_groups := v_groups || v_gone_groups;
        v_done := v_gone;  -- their own dependents next
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

-- enqueue_one(): as in 0005, with three changes. A parent that is running when it gets its first dependent
-- is watched (its worker claimed it unlinked and will not settle it). The dependencies are inserted in one
-- statement (a group callback with thousands of members). A unique key pruned between our conflicting
-- INSERT and our lock of its row is taken again instead of being lost.
CREATE OR REPLACE FUNCTION {schema}.enqueue_one(
    p_task text, p_queue text, p_args jsonb, p_priority smallint, p_run_at timestamptz,
    p_max_attempts integer, p_timeout double precision, p_now timestamptz,
    p_unique_key text, p_unique_states text[], p_unique_window double precision, p_on_conflict text,
    p_group_key text, p_after bigint[], p_on_parent_failure text, p_id bigint DEFAULT NULL
) RETURNS TABLE (job_id bigint, inserted boolean) LANGUAGE plpgsql AS $$
DECLARE
    v_id bigint;
    v_key record;
    v_holder_state text;
    v_missing bigint;
    v_pending integer := 0;
    v_doomed boolean := false;
    v_state text;
BEGIN
    IF cardinality(p_after) > 0 THEN
        -- parents cannot finish until we commit, so their resolve() sees our job_deps rows; taken before
        -- the group lock (resolve() takes group locks after finishing its jobs)
        PERFORM 1 FROM {schema}.jobs j WHERE j.id = ANY(p_after) ORDER BY j.id FOR KEY SHARE;
        WITH flagged AS (
            UPDATE {schema}.jobs j SET linked = true WHERE j.id = ANY(p_after) AND NOT j.linked
            RETURNING j.id, j.state, j.group_key
        )
        INSERT INTO {schema}.job_watch (job_id, group_key)
        SELECT l.id, l.group_key FROM flagged l WHERE l.state = 'running'
        ON CONFLICT DO NOTHING;
    END IF;
    IF p_group_key IS NOT NULL THEN
        PERFORM {schema}.lock_group(p_group_key);
    END IF;
    v_id := coalesce(p_id, nextval('{schema}.job_id_seq'));
    IF p_unique_key IS NOT NULL THEN
        LOOP
            INSERT INTO {schema}.unique_keys AS k (key, job_id, states, expires_at)
            VALUES (p_unique_key, v_id, p_unique_states, p_now + make_interval(secs => p_unique_window))
            ON CONFLICT (key) DO NOTHING;
            EXIT WHEN FOUND;
            SELECT k.job_id, k.expires_at, k.states INTO v_key FROM {schema}.unique_keys k
            WHERE k.key = p_unique_key FOR UPDATE;
            CONTINUE WHEN NOT FOUND;  -- pruned meanwhile: insert it again
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
            EXIT;
        END LOOP;
    END IF;
    IF cardinality(p_after) > 0 THEN
        WITH parents AS (
            SELECT a.parent, a.ord::integer AS ord, coalesce(l.state, f.state) AS state
            FROM unnest(p_after) WITH ORDINALITY AS a(parent, ord)
            LEFT JOIN {schema}.jobs l ON l.id = a.parent
            LEFT JOIN {schema}.finished_jobs f ON f.id = a.parent
        ), added AS (
            INSERT INTO {schema}.job_deps (child_id, parent_id, ord, on_failure, satisfied)
            SELECT v_id, p.parent, p.ord, p_on_parent_failure, p.state IN ('succeeded', 'dead', 'cancelled')
            FROM parents p WHERE p.state IS NOT NULL
            ON CONFLICT DO NOTHING
        )
        SELECT min(p.parent) FILTER (WHERE p.state IS NULL),
               count(*) FILTER (WHERE p.state NOT IN ('succeeded', 'dead', 'cancelled')),
               coalesce(bool_or(CASE WHEN p.state = 'succeeded' THEN p_on_parent_failure = 'only'
                                     WHEN p.state IN ('dead', 'cancelled') THEN p_on_parent_failure = 'cancel'
                                END), false)
        INTO v_missing, v_pending, v_doomed
        FROM parents p;
        IF v_missing IS NOT NULL THEN
            RAISE EXCEPTION 'pageq.parent:%', v_missing;
        END IF;
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
        PERFORM {schema}.move_cancelled(ARRAY[v_id], p_now, CASE WHEN p_on_parent_failure = 'only'
            THEN 'ParentSucceeded: it was to run only if the job it follows failed'
            ELSE 'ParentFailed: a job it depends on is dead or cancelled' END);
    ELSIF v_state = 'queued' THEN
        PERFORM pg_notify('{channel}', p_queue);
    END IF;
    RETURN QUERY SELECT v_id, true;
END;
$$;

-- The leader's sweep, once a second: (1) watched jobs that have left `jobs`; (2) one page of at most
-- p_limit parents with open dependencies after the cursor p_parent_after, and (3) one page of at most
-- p_limit groups after p_group_after, a safety net for anything else (cost: one index probe per parent or
-- group of the page, whatever the backlog). Returns the cursors of the next pages (NULL: start again) and
-- how many jobs it cancelled.
DROP FUNCTION {schema}.resolve_sweep(timestamptz);
CREATE FUNCTION {schema}.resolve_sweep(
    p_now timestamptz, p_parent_after bigint, p_group_after text, p_limit integer
) RETURNS TABLE (parent_cursor bigint, group_cursor text, cancelled integer) LANGUAGE plpgsql AS $$
DECLARE
    v_watched bigint[];
    v_watched_groups text[];
    v_parents bigint[];
    v_groups text[];
    v_heads text[];
BEGIN
    WITH gone AS (
        DELETE FROM {schema}.job_watch w
        WHERE w.job_id IN (
            SELECT x.job_id FROM {schema}.job_watch x
            WHERE NOT EXISTS (SELECT 1 FROM {schema}.jobs j WHERE j.id = x.job_id)
            ORDER BY x.job_id LIMIT p_limit)
        RETURNING w.job_id, w.group_key
    )
    SELECT ARRAY(SELECT g.job_id FROM gone g),
           ARRAY(SELECT g.group_key FROM gone g WHERE g.group_key IS NOT NULL)
    INTO v_watched, v_watched_groups;
    -- loose index scans: the next distinct parent (group) after the previous one, p_limit times
    v_parents := ARRAY(
        WITH RECURSIVE p(id, n) AS (
            (SELECT d.parent_id, 1 FROM {schema}.job_deps d
             WHERE NOT d.satisfied AND d.parent_id > coalesce(p_parent_after, 0)
             ORDER BY d.parent_id LIMIT 1)
            UNION ALL
            SELECT (SELECT d.parent_id FROM {schema}.job_deps d
                    WHERE NOT d.satisfied AND d.parent_id > p.id ORDER BY d.parent_id LIMIT 1), p.n + 1
            FROM p WHERE p.id IS NOT NULL AND p.n < p_limit
        )
        SELECT p.id FROM p WHERE p.id IS NOT NULL);
    v_groups := ARRAY(
        WITH RECURSIVE g(key, n) AS (
            (SELECT j.group_key, 1 FROM {schema}.jobs j
             WHERE j.group_key > coalesce(p_group_after, '') ORDER BY j.group_key LIMIT 1)
            UNION ALL
            SELECT (SELECT j.group_key FROM {schema}.jobs j
                    WHERE j.group_key > g.key ORDER BY j.group_key LIMIT 1), g.n + 1
            FROM g WHERE g.key IS NOT NULL AND g.n < p_limit
        )
        SELECT g.key FROM g WHERE g.key IS NOT NULL);
    parent_cursor := CASE WHEN cardinality(v_parents) >= p_limit THEN v_parents[cardinality(v_parents)] END;
    group_cursor := CASE WHEN cardinality(v_groups) >= p_limit THEN v_groups[cardinality(v_groups)] END;
    v_heads := ARRAY(
        SELECT g FROM unnest(v_groups) AS g
        CROSS JOIN LATERAL (
            SELECT j.state FROM {schema}.jobs j WHERE j.group_key = g ORDER BY j.id LIMIT 1
        ) h
        WHERE h.state = 'blocked');
    v_parents := v_watched || ARRAY(
        SELECT i FROM unnest(v_parents) AS i WHERE NOT EXISTS (SELECT 1 FROM {schema}.jobs j WHERE j.id = i));
    cancelled := 0;
    IF cardinality(v_parents) > 0 OR cardinality(v_heads) > 0 OR cardinality(v_watched_groups) > 0 THEN
        cancelled := {schema}.resolve(v_parents, v_watched_groups || v_heads, p_now);
    END IF;
    RETURN NEXT;
END;
$$;

-- Roles: 0005's setup_db_roles() is kept (renamed) and called first; the watch table is written by whoever
-- links a running parent (producers cannot: after= needs UPDATE on jobs) and read by the leader.
ALTER FUNCTION {schema}.setup_db_roles() RENAME TO setup_db_roles_0005;

CREATE FUNCTION {schema}.setup_db_roles() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    s text := '{schema}';
BEGIN
    PERFORM {schema}.setup_db_roles_0005();
    EXECUTE format('GRANT SELECT, INSERT, DELETE ON %I.job_watch TO %I, %I', s, s || '_worker', s || '_admin');
END
$$;

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{schema}_worker') THEN
        PERFORM {schema}.setup_db_roles();
    END IF;
END
$$;
