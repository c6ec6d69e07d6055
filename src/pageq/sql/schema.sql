-- The pageq schema as the migrations build it, read from the catalogs (src/pageq/store/schema_dump.py).
-- Do not edit: regenerate with `python scripts/dump_schema.py > src/pageq/sql/schema.sql`.
-- tests/test_schema.py checks that the migrations produce exactly this. {schema} is the schema name.

-- Migrations: 0001_initial, 0002_rotation, 0004_security, 0005_dispatch, 0006_history

CREATE SEQUENCE {schema}.audit_id_seq AS bigint START 1 INCREMENT 1 MINVALUE 1 MAXVALUE 9223372036854775807 CACHE 1;

CREATE SEQUENCE {schema}.grants_id_seq AS bigint START 1 INCREMENT 1 MINVALUE 1 MAXVALUE 9223372036854775807 CACHE 1;

CREATE SEQUENCE {schema}.job_id_seq AS bigint START 1 INCREMENT 1 MINVALUE 1 MAXVALUE 9223372036854775807 CACHE 1;

CREATE SEQUENCE {schema}.tokens_id_seq AS bigint START 1 INCREMENT 1 MINVALUE 1 MAXVALUE 9223372036854775807 CACHE 1;

CREATE TABLE {schema}.audit (
    id bigint GENERATED ALWAYS AS IDENTITY NOT NULL,
    xid bigint NOT NULL DEFAULT ((pg_current_xact_id())::text)::bigint,
    at timestamp with time zone NOT NULL DEFAULT now(),
    db_role text NOT NULL DEFAULT CURRENT_USER,
    principal text DEFAULT NULLIF(current_setting('pageq.principal'::text, true), ''::text),
    action text NOT NULL,
    decision text NOT NULL DEFAULT 'allow'::text,
    reason text,
    job_id bigint,
    queue text,
    task text,
    detail jsonb,
    CONSTRAINT audit_decision_check CHECK ((decision = ANY (ARRAY['allow'::text, 'deny'::text]))),
    CONSTRAINT audit_pkey PRIMARY KEY (id)
);
CREATE INDEX audit_at_brin ON {schema}.audit USING brin (at);
CREATE INDEX audit_xid_brin ON {schema}.audit USING brin (xid);
CREATE TRIGGER audit_append_only BEFORE DELETE OR UPDATE ON {schema}.audit FOR EACH ROW EXECUTE FUNCTION {schema}.refuse_change();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON {schema}.audit FOR EACH STATEMENT EXECUTE FUNCTION {schema}.refuse_change();

CREATE TABLE {schema}.audit_config (
    singleton boolean NOT NULL DEFAULT true,
    level smallint NOT NULL DEFAULT 2,
    CONSTRAINT audit_config_level_check CHECK (((level >= 0) AND (level <= 2))),
    CONSTRAINT audit_config_pkey PRIMARY KEY (singleton),
    CONSTRAINT audit_config_singleton_check CHECK (singleton)
);

CREATE TABLE {schema}.audit_seals (
    seq bigint NOT NULL,
    from_xid bigint NOT NULL,
    to_xid bigint NOT NULL,
    ids bigint[] NOT NULL,
    hashes bytea NOT NULL,
    prev_digest bytea NOT NULL,
    digest bytea NOT NULL,
    sealed_at timestamp with time zone NOT NULL DEFAULT now(),
    sealed_by text,
    CONSTRAINT audit_seals_pkey PRIMARY KEY (seq)
);
CREATE TRIGGER seals_append_only BEFORE DELETE OR UPDATE ON {schema}.audit_seals FOR EACH ROW EXECUTE FUNCTION {schema}.refuse_change();
CREATE TRIGGER seals_no_truncate BEFORE TRUNCATE ON {schema}.audit_seals FOR EACH STATEMENT EXECUTE FUNCTION {schema}.refuse_change();

CREATE TABLE {schema}.db_roles (
    role text NOT NULL,
    principal text NOT NULL,
    kind text NOT NULL,
    CONSTRAINT db_roles_kind_check CHECK ((kind = ANY (ARRAY['producer'::text, 'worker'::text, 'admin'::text]))),
    CONSTRAINT db_roles_pkey PRIMARY KEY (role),
    CONSTRAINT db_roles_principal_fkey FOREIGN KEY (principal) REFERENCES {schema}.principals(name) ON DELETE CASCADE
);

CREATE TABLE {schema}.finished_jobs (
    id bigint NOT NULL,
    task text NOT NULL,
    queue text NOT NULL,
    args jsonb NOT NULL,
    state text NOT NULL,
    priority smallint NOT NULL,
    run_at timestamp with time zone NOT NULL,
    attempts integer NOT NULL,
    max_attempts integer NOT NULL,
    timeout double precision,
    lease_token uuid,
    worker text,
    created_at timestamp with time zone NOT NULL,
    started_at timestamp with time zone,
    finished_at timestamp with time zone NOT NULL,
    result jsonb,
    errors jsonb NOT NULL DEFAULT '[]'::jsonb,
    CONSTRAINT finished_jobs_pkey PRIMARY KEY (id, finished_at),
    CONSTRAINT finished_jobs_state_check CHECK ((state = ANY (ARRAY['succeeded'::text, 'dead'::text, 'cancelled'::text])))
) PARTITION BY RANGE (finished_at);
CREATE INDEX finished_jobs_failed_idx ON ONLY {schema}.finished_jobs USING btree (state, finished_at) WHERE (state = ANY (ARRAY['dead'::text, 'cancelled'::text]));
CREATE INDEX finished_jobs_finished_brin ON ONLY {schema}.finished_jobs USING brin (finished_at);

-- PARTITION OF finished_jobs DEFAULT
CREATE TABLE {schema}.finished_jobs_default (
    id bigint NOT NULL,
    task text NOT NULL,
    queue text NOT NULL,
    args jsonb NOT NULL,
    state text NOT NULL,
    priority smallint NOT NULL,
    run_at timestamp with time zone NOT NULL,
    attempts integer NOT NULL,
    max_attempts integer NOT NULL,
    timeout double precision,
    lease_token uuid,
    worker text,
    created_at timestamp with time zone NOT NULL,
    started_at timestamp with time zone,
    finished_at timestamp with time zone NOT NULL,
    result jsonb,
    errors jsonb NOT NULL DEFAULT '[]'::jsonb,
    CONSTRAINT finished_jobs_default_pkey PRIMARY KEY (id, finished_at),
    CONSTRAINT finished_jobs_state_check CHECK ((state = ANY (ARRAY['succeeded'::text, 'dead'::text, 'cancelled'::text])))
);
CREATE INDEX finished_jobs_default_finished_at_idx ON {schema}.finished_jobs_default USING brin (finished_at);
CREATE INDEX finished_jobs_default_state_finished_at_idx ON {schema}.finished_jobs_default USING btree (state, finished_at) WHERE (state = ANY (ARRAY['dead'::text, 'cancelled'::text]));

CREATE TABLE {schema}.grants (
    id bigint GENERATED ALWAYS AS IDENTITY NOT NULL,
    principal text NOT NULL,
    action text NOT NULL,
    queue_pattern text NOT NULL,
    task_pattern text NOT NULL,
    allow boolean NOT NULL,
    queue_like text NOT NULL,
    task_like text NOT NULL,
    created_at timestamp with time zone NOT NULL DEFAULT now(),
    CONSTRAINT grants_action_check CHECK ((action = ANY (ARRAY['*'::text, 'enqueue'::text, 'work'::text, 'read'::text, 'manage'::text]))),
    CONSTRAINT grants_pkey PRIMARY KEY (id),
    CONSTRAINT grants_principal_fkey FOREIGN KEY (principal) REFERENCES {schema}.principals(name) ON DELETE CASCADE
);
CREATE INDEX grants_principal_idx ON {schema}.grants USING btree (principal);

CREATE TABLE {schema}.history (
    one boolean NOT NULL DEFAULT true,
    period interval NOT NULL,
    CONSTRAINT history_one_check CHECK (one),
    CONSTRAINT history_period_check CHECK ((period >= '00:00:01'::interval)),
    CONSTRAINT history_pkey PRIMARY KEY (one)
);

CREATE TABLE {schema}.job_deps (
    child_id bigint NOT NULL,
    parent_id bigint NOT NULL,
    ord integer NOT NULL,
    on_failure text NOT NULL,
    satisfied boolean NOT NULL DEFAULT false,
    CONSTRAINT job_deps_on_failure_check CHECK ((on_failure = ANY (ARRAY['cancel'::text, 'run'::text]))),
    CONSTRAINT job_deps_pkey PRIMARY KEY (child_id, parent_id)
);
CREATE INDEX job_deps_parent_idx ON {schema}.job_deps USING btree (parent_id) WHERE (NOT satisfied);

CREATE TABLE {schema}.jobs (
    id bigint NOT NULL DEFAULT nextval('{schema}.job_id_seq'::regclass),
    task text NOT NULL,
    queue text NOT NULL,
    args jsonb NOT NULL,
    state text NOT NULL,
    priority smallint NOT NULL DEFAULT 0,
    run_at timestamp with time zone NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL,
    timeout double precision,
    lease_token uuid,
    lease_expires_at timestamp with time zone,
    worker text,
    created_at timestamp with time zone NOT NULL,
    started_at timestamp with time zone,
    errors jsonb NOT NULL DEFAULT '[]'::jsonb,
    slot smallint NOT NULL DEFAULT {schema}.current_slot(),
    group_key text,
    linked boolean NOT NULL DEFAULT false,
    CONSTRAINT jobs_attempts_check CHECK (((attempts >= 0) AND (max_attempts >= 1))),
    CONSTRAINT jobs_lease_check CHECK (((state = 'running'::text) = (lease_token IS NOT NULL))),
    CONSTRAINT jobs_pkey PRIMARY KEY (id, slot),
    CONSTRAINT jobs_state_check CHECK ((state = ANY (ARRAY['scheduled'::text, 'queued'::text, 'running'::text, 'retrying'::text, 'blocked'::text])))
) PARTITION BY LIST (slot);
CREATE INDEX jobs_claim_idx ON ONLY {schema}.jobs USING btree (queue, priority DESC, run_at, id) WHERE (state = ANY (ARRAY['scheduled'::text, 'queued'::text, 'retrying'::text]));
CREATE INDEX jobs_group_idx ON ONLY {schema}.jobs USING btree (group_key, id) WHERE (group_key IS NOT NULL);
CREATE INDEX jobs_lease_idx ON ONLY {schema}.jobs USING btree (lease_expires_at) WHERE (state = 'running'::text);

-- PARTITION OF jobs FOR VALUES IN ('0')
CREATE TABLE {schema}.jobs_p0 (
    id bigint NOT NULL DEFAULT nextval('{schema}.job_id_seq'::regclass),
    task text NOT NULL,
    queue text NOT NULL,
    args jsonb NOT NULL,
    state text NOT NULL,
    priority smallint NOT NULL DEFAULT 0,
    run_at timestamp with time zone NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL,
    timeout double precision,
    lease_token uuid,
    lease_expires_at timestamp with time zone,
    worker text,
    created_at timestamp with time zone NOT NULL,
    started_at timestamp with time zone,
    errors jsonb NOT NULL DEFAULT '[]'::jsonb,
    slot smallint NOT NULL DEFAULT {schema}.current_slot(),
    group_key text,
    linked boolean NOT NULL DEFAULT false,
    CONSTRAINT jobs_attempts_check CHECK (((attempts >= 0) AND (max_attempts >= 1))),
    CONSTRAINT jobs_lease_check CHECK (((state = 'running'::text) = (lease_token IS NOT NULL))),
    CONSTRAINT jobs_p0_pkey PRIMARY KEY (id, slot),
    CONSTRAINT jobs_state_check CHECK ((state = ANY (ARRAY['scheduled'::text, 'queued'::text, 'running'::text, 'retrying'::text, 'blocked'::text])))
) WITH (autovacuum_analyze_scale_factor=0.02, autovacuum_vacuum_cost_delay=0, autovacuum_vacuum_scale_factor=0.01, fillfactor=80);
CREATE INDEX jobs_p0_group_key_id_idx ON {schema}.jobs_p0 USING btree (group_key, id) WHERE (group_key IS NOT NULL);
CREATE INDEX jobs_p0_lease_expires_at_idx ON {schema}.jobs_p0 USING btree (lease_expires_at) WHERE (state = 'running'::text);
CREATE INDEX jobs_p0_queue_priority_run_at_id_idx ON {schema}.jobs_p0 USING btree (queue, priority DESC, run_at, id) WHERE (state = ANY (ARRAY['scheduled'::text, 'queued'::text, 'retrying'::text]));

-- PARTITION OF jobs FOR VALUES IN ('1')
CREATE TABLE {schema}.jobs_p1 (
    id bigint NOT NULL DEFAULT nextval('{schema}.job_id_seq'::regclass),
    task text NOT NULL,
    queue text NOT NULL,
    args jsonb NOT NULL,
    state text NOT NULL,
    priority smallint NOT NULL DEFAULT 0,
    run_at timestamp with time zone NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    max_attempts integer NOT NULL,
    timeout double precision,
    lease_token uuid,
    lease_expires_at timestamp with time zone,
    worker text,
    created_at timestamp with time zone NOT NULL,
    started_at timestamp with time zone,
    errors jsonb NOT NULL DEFAULT '[]'::jsonb,
    slot smallint NOT NULL DEFAULT {schema}.current_slot(),
    group_key text,
    linked boolean NOT NULL DEFAULT false,
    CONSTRAINT jobs_attempts_check CHECK (((attempts >= 0) AND (max_attempts >= 1))),
    CONSTRAINT jobs_lease_check CHECK (((state = 'running'::text) = (lease_token IS NOT NULL))),
    CONSTRAINT jobs_p1_pkey PRIMARY KEY (id, slot),
    CONSTRAINT jobs_state_check CHECK ((state = ANY (ARRAY['scheduled'::text, 'queued'::text, 'running'::text, 'retrying'::text, 'blocked'::text])))
) WITH (autovacuum_analyze_scale_factor=0.02, autovacuum_vacuum_cost_delay=0, autovacuum_vacuum_scale_factor=0.01, fillfactor=80);
CREATE INDEX jobs_p1_group_key_id_idx ON {schema}.jobs_p1 USING btree (group_key, id) WHERE (group_key IS NOT NULL);
CREATE INDEX jobs_p1_lease_expires_at_idx ON {schema}.jobs_p1 USING btree (lease_expires_at) WHERE (state = 'running'::text);
CREATE INDEX jobs_p1_queue_priority_run_at_id_idx ON {schema}.jobs_p1 USING btree (queue, priority DESC, run_at, id) WHERE (state = ANY (ARRAY['scheduled'::text, 'queued'::text, 'retrying'::text]));

CREATE TABLE {schema}.leader (
    name text NOT NULL,
    holder text NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    CONSTRAINT leader_pkey PRIMARY KEY (name)
);

CREATE TABLE {schema}.migrations (
    version integer NOT NULL,
    name text NOT NULL,
    applied_at timestamp with time zone NOT NULL DEFAULT now(),
    CONSTRAINT migrations_pkey PRIMARY KEY (version)
);

CREATE TABLE {schema}.periodic (
    name text NOT NULL,
    last_tick timestamp with time zone NOT NULL,
    CONSTRAINT periodic_pkey PRIMARY KEY (name)
);

CREATE TABLE {schema}.principals (
    name text NOT NULL,
    created_at timestamp with time zone NOT NULL DEFAULT now(),
    disabled_at timestamp with time zone,
    note text,
    CONSTRAINT principals_pkey PRIMARY KEY (name)
);

CREATE TABLE {schema}.queues (
    name text NOT NULL,
    paused boolean NOT NULL DEFAULT false,
    concurrency integer,
    rate_limit integer,
    rate_period double precision,
    weight integer NOT NULL DEFAULT 1,
    window_start timestamp with time zone,
    window_count integer NOT NULL DEFAULT 0,
    updated_at timestamp with time zone NOT NULL,
    CONSTRAINT queues_concurrency_check CHECK ((concurrency >= 0)),
    CONSTRAINT queues_pkey PRIMARY KEY (name),
    CONSTRAINT queues_rate_check CHECK ((((rate_limit IS NULL) = (rate_period IS NULL)) AND (rate_limit >= 0) AND (rate_period > (0)::double precision))),
    CONSTRAINT queues_weight_check CHECK (((weight >= 1) AND (weight <= 1000)))
);

CREATE TABLE {schema}.rotation (
    one boolean NOT NULL DEFAULT true,
    slot smallint NOT NULL,
    rotated_at timestamp with time zone NOT NULL,
    last_id bigint NOT NULL,
    CONSTRAINT rotation_one_check CHECK (one),
    CONSTRAINT rotation_pkey PRIMARY KEY (one),
    CONSTRAINT rotation_slot_check CHECK ((slot = ANY (ARRAY[0, 1])))
);

CREATE TABLE {schema}.tokens (
    id bigint GENERATED ALWAYS AS IDENTITY NOT NULL,
    hash bytea NOT NULL,
    principal text NOT NULL,
    hint text NOT NULL,
    created_at timestamp with time zone NOT NULL DEFAULT now(),
    revoked_at timestamp with time zone,
    CONSTRAINT tokens_hash_key UNIQUE (hash),
    CONSTRAINT tokens_pkey PRIMARY KEY (id),
    CONSTRAINT tokens_principal_fkey FOREIGN KEY (principal) REFERENCES {schema}.principals(name) ON DELETE CASCADE
);

CREATE TABLE {schema}.unique_keys (
    key text NOT NULL,
    job_id bigint NOT NULL,
    states text[] NOT NULL,
    expires_at timestamp with time zone,
    CONSTRAINT unique_keys_pkey PRIMARY KEY (key)
);

CREATE TABLE {schema}.workers (
    id text NOT NULL,
    host text NOT NULL,
    pid integer NOT NULL,
    queues text[] NOT NULL,
    concurrency integer NOT NULL,
    started_at timestamp with time zone NOT NULL,
    last_seen_at timestamp with time zone NOT NULL,
    running integer NOT NULL DEFAULT 0,
    CONSTRAINT workers_pkey PRIMARY KEY (id)
);

CREATE OR REPLACE FUNCTION {schema}.acl_allows(who text, actions text[], q text, t text)
 RETURNS boolean
 LANGUAGE sql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT coalesce(bool_or(s.ok), false) FROM (
        SELECT bool_or(g.allow) AND NOT bool_or(NOT g.allow) AS ok
        FROM {schema}.db_roles r
        JOIN {schema}.principals p ON p.name = r.principal AND p.disabled_at IS NULL
        JOIN {schema}.grants g ON g.principal = p.name
        CROSS JOIN unnest(actions) AS a(action)
        WHERE r.role = who AND (g.action = '*' OR g.action = a.action)
          AND q LIKE g.queue_like AND t LIKE g.task_like
        GROUP BY a.action
    ) AS s
$function$;

CREATE OR REPLACE FUNCTION {schema}.acl_allows_queue(who text, actions text[], q text)
 RETURNS boolean
 LANGUAGE sql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT coalesce(bool_or(s.ok), false) FROM (
        SELECT bool_or(g.allow) AND NOT bool_or(NOT g.allow AND g.task_like = '%') AS ok
        FROM {schema}.db_roles r
        JOIN {schema}.principals p ON p.name = r.principal AND p.disabled_at IS NULL
        JOIN {schema}.grants g ON g.principal = p.name
        CROSS JOIN unnest(actions) AS a(action)
        WHERE r.role = who AND (g.action = '*' OR g.action = a.action) AND q LIKE g.queue_like
        GROUP BY a.action
    ) AS s
$function$;

CREATE OR REPLACE FUNCTION {schema}.audit_row_hash(a {schema}.audit)
 RETURNS bytea
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$
    SELECT sha256(convert_to(concat_ws('|', a.id, a.xid, (extract(epoch FROM a.at) * 1000000)::bigint,
        quote_nullable(a.db_role), quote_nullable(a.principal), quote_nullable(a.action),
        quote_nullable(a.decision), quote_nullable(a.reason), quote_nullable(a.job_id),
        quote_nullable(a.queue), quote_nullable(a.task), quote_nullable(a.detail::text)), 'UTF8'))
$function$;

CREATE OR REPLACE FUNCTION {schema}.cancel_jobs(p_ids bigint[], p_now timestamp with time zone)
 RETURNS SETOF bigint
 LANGUAGE plpgsql
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION {schema}.create_db_login(who text, kind text, secret text)
 RETURNS text
 LANGUAGE plpgsql
AS $function$
DECLARE
    login text := '{schema}' || '_u_' || replace(who, '-', '_');
BEGIN
    PERFORM {schema}.setup_db_roles();
    IF length(login) > 63 THEN
        RAISE EXCEPTION 'role name % is longer than 63 characters', login;
    END IF;
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = login) THEN
        EXECUTE format('ALTER ROLE %I LOGIN PASSWORD %L', login, secret);
    ELSE
        EXECUTE format('CREATE ROLE %I LOGIN INHERIT NOSUPERUSER NOBYPASSRLS PASSWORD %L', login, secret);
    END IF;
    EXECUTE format('GRANT %I TO %I', '{schema}' || '_' || kind, login);
    INSERT INTO {schema}.db_roles (role, principal, kind) VALUES (login, who, kind)
    ON CONFLICT (role) DO UPDATE SET principal = excluded.principal, kind = excluded.kind;
    RETURN login;
END
$function$;

CREATE OR REPLACE FUNCTION {schema}.current_slot()
 RETURNS smallint
 LANGUAGE sql
 STABLE
AS $function$ SELECT slot FROM {schema}.rotation $function$;

CREATE OR REPLACE FUNCTION {schema}.drop_db_roles()
 RETURNS integer
 LANGUAGE plpgsql
AS $function$
DECLARE
    r text;
    n integer := 0;
BEGIN
    FOR r IN SELECT role FROM {schema}.db_roles
             UNION ALL SELECT '{schema}' || '_' || k FROM unnest(ARRAY['producer', 'worker', 'admin']) AS k
    LOOP
        IF EXISTS (SELECT FROM pg_roles WHERE rolname = r) THEN
            EXECUTE format('DROP OWNED BY %I', r);
            EXECUTE format('DROP ROLE %I', r);
            n := n + 1;
        END IF;
    END LOOP;
    RETURN n;
END
$function$;

CREATE OR REPLACE FUNCTION {schema}.enqueue_one(p_task text, p_queue text, p_args jsonb, p_priority smallint, p_run_at timestamp with time zone, p_max_attempts integer, p_timeout double precision, p_now timestamp with time zone, p_unique_key text, p_unique_states text[], p_unique_window double precision, p_on_conflict text, p_group_key text, p_after bigint[], p_on_parent_failure text, p_id bigint DEFAULT NULL::bigint)
 RETURNS TABLE(job_id bigint, inserted boolean)
 LANGUAGE plpgsql
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION {schema}.history_drop(before timestamp with time zone, wait text)
 RETURNS integer
 LANGUAGE plpgsql
AS $function$
DECLARE
    part    record;
    dropped integer := 0;
BEGIN
    PERFORM set_config('lock_timeout', wait, true);
    PERFORM set_config('idle_in_transaction_session_timeout', '5s', true);  -- see rotate() in 0002
    FOR part IN
        SELECT c.relname
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = '{schema}.finished_jobs'::regclass
          AND c.relname <> 'finished_jobs_default'
          AND (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''(.*)''\)'))[1]::timestamptz <= before
        ORDER BY c.relname
    LOOP
        EXECUTE format('ALTER TABLE {schema}.finished_jobs DETACH PARTITION {schema}.%I', part.relname);
        EXECUTE format('INSERT INTO {schema}.finished_jobs SELECT * FROM {schema}.%I WHERE state = %L',
                       part.relname, 'dead');
        EXECUTE format('DROP TABLE {schema}.%I', part.relname);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END
$function$;

CREATE OR REPLACE FUNCTION {schema}.history_prepare(at timestamp with time zone, ahead integer)
 RETURNS integer
 LANGUAGE plpgsql
AS $function$
DECLARE
    step    interval := (SELECT period FROM {schema}.history);
    origin  timestamptz := timestamptz '2000-01-01 00:00:00+00';
    lo      timestamptz;
    hi      timestamptz;
    name    text;
    created integer := 0;
BEGIN
    lo := origin + step * floor(extract(epoch FROM at - origin) / extract(epoch FROM step));
    FOR k IN 0..ahead LOOP
        hi := lo + step;
        name := 'finished_jobs_' || to_char(lo AT TIME ZONE 'UTC', 'YYYYMMDD"t"HH24MISS');
        IF to_regclass(format('{schema}.%I', name)) IS NULL
           AND NOT EXISTS (SELECT FROM {schema}.finished_jobs_default WHERE finished_at >= lo AND finished_at < hi)
        THEN
            BEGIN
                EXECUTE format('CREATE TABLE {schema}.%I PARTITION OF {schema}.finished_jobs '
                               'FOR VALUES FROM (%L) TO (%L)', name, lo, hi);
                created := created + 1;
            EXCEPTION WHEN invalid_object_definition THEN  -- overlaps an existing partition
                NULL;
            END;
        END IF;
        lo := hi;
    END LOOP;
    RETURN created;
END
$function$;

CREATE OR REPLACE FUNCTION {schema}.job_state(p_id bigint)
 RETURNS text
 LANGUAGE sql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT s.state FROM (
        SELECT j.state FROM {schema}.jobs j WHERE j.id = p_id
        UNION ALL
        SELECT f.state FROM {schema}.finished_jobs f WHERE f.id = p_id) s
    LIMIT 1
$function$;

CREATE OR REPLACE FUNCTION {schema}.lock_group(p_group text)
 RETURNS void
 LANGUAGE sql
AS $function$
    SELECT pg_advisory_xact_lock(hashtextextended('{schema}.group:' || p_group, 0));
$function$;

CREATE OR REPLACE FUNCTION {schema}.move_cancelled(p_ids bigint[], p_now timestamp with time zone, p_reason text)
 RETURNS TABLE(id bigint, group_key text, linked boolean)
 LANGUAGE plpgsql
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION {schema}.refuse_change()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    RAISE EXCEPTION 'pageq: % on %.% is refused: the audit trail is append-only',
        TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END
$function$;

CREATE OR REPLACE FUNCTION {schema}.release_ready(p_candidates bigint[], p_now timestamp with time zone)
 RETURNS integer
 LANGUAGE plpgsql
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION {schema}.resolve(p_done bigint[], p_groups text[], p_now timestamp with time zone)
 RETURNS integer
 LANGUAGE plpgsql
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION {schema}.resolve_sweep(p_now timestamp with time zone)
 RETURNS integer
 LANGUAGE plpgsql
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION {schema}.rotate(min_jobs bigint, max_age interval, max_move bigint, wait text)
 RETURNS bigint
 LANGUAGE plpgsql
AS $function$
DECLARE
    rot    {schema}.rotation;
    newest bigint;
    old    smallint;
    cols   text;
    moved  bigint;
BEGIN
    -- never wait long for a lock, and never hold these locks long: if the caller vanishes (a host cut off
    -- the network) before it commits, the server ends its session within seconds instead of leaving the
    -- partition locked (and every claim waiting) until TCP notices, which may take hours
    PERFORM set_config('lock_timeout', wait, true);
    PERFORM set_config('idle_in_transaction_session_timeout', '5s', true);
    SELECT * INTO rot FROM {schema}.rotation FOR UPDATE;
    SELECT CASE WHEN is_called THEN last_value ELSE 0 END INTO newest FROM {schema}.job_id_seq;
    IF newest - rot.last_id < min_jobs
       AND (newest = rot.last_id OR clock_timestamp() - rot.rotated_at < max_age) THEN
        RETURN NULL;
    END IF;
    old := 1 - rot.slot;
    EXECUTE format('LOCK TABLE {schema}.jobs_p%s IN ACCESS EXCLUSIVE MODE', old);
    EXECUTE format('SELECT count(*) FROM (SELECT FROM {schema}.jobs_p%s LIMIT %s) AS live', old, max_move + 1)
        INTO moved;
    IF moved > max_move THEN
        RETURN NULL;
    END IF;
    IF moved > 0 THEN
        SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) INTO cols
        FROM pg_attribute
        WHERE attrelid = '{schema}.jobs'::regclass AND attnum > 0 AND NOT attisdropped AND attname <> 'slot';
        EXECUTE format('INSERT INTO {schema}.jobs (%s, slot) SELECT %s, %s FROM {schema}.jobs_p%s',
                       cols, cols, rot.slot, old);
    END IF;
    EXECUTE format('TRUNCATE {schema}.jobs_p%s', old);
    UPDATE {schema}.rotation SET slot = old, rotated_at = clock_timestamp(), last_id = newest;
    RETURN moved;
END
$function$;

CREATE OR REPLACE FUNCTION {schema}.setup_db_roles()
 RETURNS void
 LANGUAGE plpgsql
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION {schema}.setup_db_roles_0004()
 RETURNS void
 LANGUAGE plpgsql
AS $function$
DECLARE
    s text := '{schema}';
    kind text;
    grp text;
    pol record;
BEGIN
    FOREACH kind IN ARRAY ARRAY['producer', 'worker', 'admin'] LOOP
        grp := s || '_' || kind;
        IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = grp) THEN
            EXECUTE format('CREATE ROLE %I NOLOGIN NOSUPERUSER NOBYPASSRLS', grp);
        END IF;
        EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', s, grp);
        EXECUTE format('GRANT SELECT, INSERT ON %I.jobs TO %I', s, grp);
        EXECUTE format('GRANT USAGE ON SEQUENCE %I.job_id_seq TO %I', s, grp);
        EXECUTE format('GRANT SELECT ON %I.audit_config, %I.migrations, %I.rotation TO %I', s, s, s, grp);
        EXECUTE format('GRANT INSERT ON %I.audit TO %I', s, grp);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %I.acl_allows(text, text[], text, text) TO %I', s, grp);
        IF kind IN ('worker', 'admin') THEN
            EXECUTE format('GRANT UPDATE, DELETE ON %I.jobs TO %I', s, grp);
            EXECUTE format('GRANT SELECT, INSERT, UPDATE ON %I.finished_jobs TO %I', s, grp);
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I.leader, %I.workers TO %I', s, s, grp);
        END IF;
        IF kind = 'admin' THEN
            EXECUTE format('GRANT DELETE ON %I.finished_jobs TO %I', s, grp);
            EXECUTE format('GRANT SELECT ON %I.audit, %I.audit_seals TO %I', s, s, grp);
            EXECUTE format('GRANT INSERT ON %I.audit_seals TO %I', s, grp);
        END IF;
    END LOOP;
    -- again here, not only in this migration: a later migration may recreate a job table
    EXECUTE format('ALTER TABLE %I.jobs ENABLE ROW LEVEL SECURITY', s);
    EXECUTE format('ALTER TABLE %I.finished_jobs ENABLE ROW LEVEL SECURITY', s);
    FOR pol IN SELECT tablename, policyname FROM pg_policies
               WHERE schemaname = s AND policyname LIKE 'restricted\_%' LOOP
        EXECUTE format('DROP POLICY %I ON %I.%I', pol.policyname, s, pol.tablename);
    END LOOP;
    EXECUTE format($p$CREATE POLICY restricted_select ON %1$I.jobs FOR SELECT TO %2$I, %3$I, %4$I
        USING (%1$I.acl_allows(current_user, '{read,work,enqueue,manage}', queue, task))$p$,
        s, s || '_producer', s || '_worker', s || '_admin');
    EXECUTE format($p$CREATE POLICY restricted_insert ON %1$I.jobs FOR INSERT TO %2$I, %3$I, %4$I
        WITH CHECK (%1$I.acl_allows(current_user, '{enqueue,manage}', queue, task))$p$,
        s, s || '_producer', s || '_worker', s || '_admin');
    EXECUTE format($p$CREATE POLICY restricted_update ON %1$I.jobs FOR UPDATE TO %2$I, %3$I
        USING (%1$I.acl_allows(current_user, '{work,manage}', queue, task))
        WITH CHECK (%1$I.acl_allows(current_user, '{work,manage}', queue, task))$p$,
        s, s || '_worker', s || '_admin');
    EXECUTE format($p$CREATE POLICY restricted_delete ON %1$I.jobs FOR DELETE TO %2$I, %3$I
        USING (%1$I.acl_allows(current_user, '{work,manage}', queue, task))$p$,
        s, s || '_worker', s || '_admin');
    EXECUTE format($p$CREATE POLICY restricted_select ON %1$I.finished_jobs FOR SELECT TO %2$I, %3$I
        USING (%1$I.acl_allows(current_user, '{read,work,manage}', queue, task))$p$,
        s, s || '_worker', s || '_admin');
    EXECUTE format($p$CREATE POLICY restricted_insert ON %1$I.finished_jobs FOR INSERT TO %2$I, %3$I
        WITH CHECK (%1$I.acl_allows(current_user, '{work,manage}', queue, task))$p$,
        s, s || '_worker', s || '_admin');
    EXECUTE format($p$CREATE POLICY restricted_update ON %1$I.finished_jobs FOR UPDATE TO %2$I, %3$I
        USING (%1$I.acl_allows(current_user, '{work,manage}', queue, task))
        WITH CHECK (%1$I.acl_allows(current_user, '{work,manage}', queue, task))$p$,
        s, s || '_worker', s || '_admin');
    EXECUTE format($p$CREATE POLICY restricted_delete ON %1$I.finished_jobs FOR DELETE TO %2$I
        USING (%1$I.acl_allows(current_user, '{manage}', queue, task))$p$, s, s || '_admin');
    EXECUTE format($p$CREATE POLICY restricted_insert ON %1$I.audit FOR INSERT TO %2$I, %3$I, %4$I
        WITH CHECK (db_role = current_user)$p$, s, s || '_producer', s || '_worker', s || '_admin');
    EXECUTE format($p$CREATE POLICY restricted_select ON %1$I.audit FOR SELECT TO %2$I USING (true)$p$,
        s, s || '_admin');
END
$function$;
