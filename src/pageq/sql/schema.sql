-- The pageq schema as the migrations build it, read from the catalogs (src/pageq/store/schema_dump.py).
-- Do not edit: regenerate with `python scripts/dump_schema.py > src/pageq/sql/schema.sql`.
-- tests/test_schema.py checks that the migrations produce exactly this. {schema} is the schema name.

-- Migrations: 0001_initial, 0002_rotation, 0003_crashes_and_keys, 0004_security, 0005_dispatch, 0006_history, 0007_http, 0008_followups, 0009_stats, 0011_sql_api, 0012_webhooks

CREATE SEQUENCE {schema}.audit_id_seq AS bigint START 1 INCREMENT 1 MINVALUE 1 MAXVALUE 9223372036854775807 CACHE 1;

CREATE SEQUENCE {schema}.grants_id_seq AS bigint START 1 INCREMENT 1 MINVALUE 1 MAXVALUE 9223372036854775807 CACHE 1;

CREATE SEQUENCE {schema}.job_id_seq AS bigint START 1 INCREMENT 1 MINVALUE 1 MAXVALUE 9223372036854775807 CACHE 1;

CREATE SEQUENCE {schema}.tokens_id_seq AS bigint START 1 INCREMENT 1 MINVALUE 1 MAXVALUE 9223372036854775807 CACHE 1;

CREATE SEQUENCE {schema}.webhook_deliveries_id_seq AS bigint START 1 INCREMENT 1 MINVALUE 1 MAXVALUE 9223372036854775807 CACHE 1;

CREATE SEQUENCE {schema}.webhook_id_seq AS bigint START 1 INCREMENT 1 MINVALUE 1 MAXVALUE 9223372036854775807 CACHE 1;

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
CREATE TRIGGER audit_level_guard BEFORE UPDATE OF level ON {schema}.audit_config FOR EACH ROW EXECUTE FUNCTION {schema}.audit_level_guard();

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

CREATE TABLE {schema}.event_listeners (
    id text NOT NULL,
    actions text[] NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    CONSTRAINT event_listeners_pkey PRIMARY KEY (id)
);

CREATE TABLE {schema}.event_routes (
    one boolean NOT NULL DEFAULT true,
    actions text[] NOT NULL DEFAULT '{}'::text[],
    notify text[] NOT NULL DEFAULT '{}'::text[],
    CONSTRAINT event_routes_one_check CHECK (one),
    CONSTRAINT event_routes_pkey PRIMARY KEY (one)
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

CREATE TABLE {schema}.idempotency_keys (
    key text NOT NULL,
    job_id bigint NOT NULL,
    created_at timestamp with time zone NOT NULL,
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (key)
);
CREATE INDEX idempotency_keys_created_idx ON {schema}.idempotency_keys USING brin (created_at);

CREATE TABLE {schema}.job_deps (
    child_id bigint NOT NULL,
    parent_id bigint NOT NULL,
    ord integer NOT NULL,
    on_failure text NOT NULL,
    satisfied boolean NOT NULL DEFAULT false,
    CONSTRAINT job_deps_on_failure_check CHECK ((on_failure = ANY (ARRAY['cancel'::text, 'run'::text, 'only'::text]))),
    CONSTRAINT job_deps_pkey PRIMARY KEY (child_id, parent_id)
);
CREATE INDEX job_deps_parent_idx ON {schema}.job_deps USING btree (parent_id) WHERE (NOT satisfied);

CREATE TABLE {schema}.job_watch (
    job_id bigint NOT NULL,
    group_key text,
    CONSTRAINT job_watch_pkey PRIMARY KEY (job_id)
);

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
    crashes integer NOT NULL DEFAULT 0,
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
CREATE INDEX jobs_suspect_idx ON ONLY {schema}.jobs USING btree (queue, priority DESC, run_at, id) WHERE ((crashes > 0) AND (state = ANY (ARRAY['scheduled'::text, 'queued'::text, 'retrying'::text])));

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
    crashes integer NOT NULL DEFAULT 0,
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
CREATE INDEX jobs_p0_queue_priority_run_at_id_idx1 ON {schema}.jobs_p0 USING btree (queue, priority DESC, run_at, id) WHERE ((crashes > 0) AND (state = ANY (ARRAY['scheduled'::text, 'queued'::text, 'retrying'::text])));

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
    crashes integer NOT NULL DEFAULT 0,
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
CREATE INDEX jobs_p1_queue_priority_run_at_id_idx1 ON {schema}.jobs_p1 USING btree (queue, priority DESC, run_at, id) WHERE ((crashes > 0) AND (state = ANY (ARRAY['scheduled'::text, 'queued'::text, 'retrying'::text])));

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

CREATE TABLE {schema}.request_nonces (
    key_id text NOT NULL,
    nonce text NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    CONSTRAINT request_nonces_pkey PRIMARY KEY (key_id, nonce)
);
CREATE INDEX request_nonces_expires_idx ON {schema}.request_nonces USING btree (expires_at);

CREATE TABLE {schema}.rotation (
    one boolean NOT NULL DEFAULT true,
    slot smallint NOT NULL,
    rotated_at timestamp with time zone NOT NULL,
    last_id bigint NOT NULL,
    CONSTRAINT rotation_one_check CHECK (one),
    CONSTRAINT rotation_pkey PRIMARY KEY (one),
    CONSTRAINT rotation_slot_check CHECK ((slot = ANY (ARRAY[0, 1])))
);

CREATE TABLE {schema}.routes (
    ord integer NOT NULL,
    task_glob text NOT NULL,
    task_re text NOT NULL,
    args jsonb NOT NULL,
    queue text,
    priority smallint,
    predicate text,
    CONSTRAINT routes_pkey PRIMARY KEY (ord)
);

CREATE TABLE {schema}.sql_api (
    singleton boolean NOT NULL DEFAULT true,
    digest text NOT NULL,
    generated_at timestamp with time zone NOT NULL,
    CONSTRAINT sql_api_pkey PRIMARY KEY (singleton),
    CONSTRAINT sql_api_singleton_check CHECK (singleton)
);

CREATE TABLE {schema}.stats_minute (
    minute timestamp with time zone NOT NULL,
    queue text NOT NULL,
    task text NOT NULL,
    enqueued integer NOT NULL DEFAULT 0,
    succeeded integer NOT NULL DEFAULT 0,
    dead integer NOT NULL DEFAULT 0,
    cancelled integer NOT NULL DEFAULT 0,
    failed integer NOT NULL DEFAULT 0,
    timed integer NOT NULL DEFAULT 0,
    wait_sum double precision NOT NULL DEFAULT 0,
    wait_p50 double precision,
    wait_p95 double precision,
    wait_p99 double precision,
    run_sum double precision NOT NULL DEFAULT 0,
    run_p50 double precision,
    run_p95 double precision,
    run_p99 double precision,
    scheduled integer,
    queued integer,
    running integer,
    retrying integer,
    blocked integer,
    oldest_age double precision,
    CONSTRAINT stats_minute_pkey PRIMARY KEY (minute, queue, task)
);

CREATE TABLE {schema}.stats_state (
    one boolean NOT NULL DEFAULT true,
    since timestamp with time zone,
    rolled_until timestamp with time zone,
    CONSTRAINT stats_state_one_check CHECK (one),
    CONSTRAINT stats_state_pkey PRIMARY KEY (one)
);

CREATE TABLE {schema}.stats_totals (
    queue text NOT NULL,
    task text NOT NULL,
    enqueued bigint NOT NULL DEFAULT 0,
    succeeded bigint NOT NULL DEFAULT 0,
    dead bigint NOT NULL DEFAULT 0,
    cancelled bigint NOT NULL DEFAULT 0,
    failed bigint NOT NULL DEFAULT 0,
    timed bigint NOT NULL DEFAULT 0,
    wait_sum double precision NOT NULL DEFAULT 0,
    run_sum double precision NOT NULL DEFAULT 0,
    CONSTRAINT stats_totals_pkey PRIMARY KEY (queue, task)
);

CREATE TABLE {schema}.tasks (
    name text NOT NULL,
    task text NOT NULL,
    queue text NOT NULL,
    priority smallint NOT NULL,
    max_attempts integer NOT NULL,
    timeout double precision,
    required_args text[] NOT NULL,
    optional_args text[] NOT NULL,
    any_args boolean NOT NULL,
    retry_base double precision NOT NULL,
    retry_cap double precision NOT NULL,
    retry_factor double precision NOT NULL,
    retry_jitter double precision NOT NULL,
    encrypted boolean NOT NULL,
    published_at timestamp with time zone NOT NULL,
    CONSTRAINT tasks_pkey PRIMARY KEY (name)
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
CREATE INDEX unique_keys_expires_idx ON {schema}.unique_keys USING btree (expires_at) WHERE (expires_at IS NOT NULL);
CREATE INDEX unique_keys_job_idx ON {schema}.unique_keys USING btree (job_id);

CREATE TABLE {schema}.webhook_deliveries (
    id bigint GENERATED ALWAYS AS IDENTITY NOT NULL,
    webhook bigint NOT NULL,
    delivery bigint NOT NULL,
    event bigint NOT NULL,
    event_type text NOT NULL,
    attempt integer NOT NULL,
    at timestamp with time zone NOT NULL,
    outcome text NOT NULL,
    status integer,
    latency double precision,
    error text,
    CONSTRAINT webhook_deliveries_outcome_check CHECK ((outcome = ANY (ARRAY['delivered'::text, 'failed'::text, 'refused'::text, 'skipped'::text]))),
    CONSTRAINT webhook_deliveries_pkey PRIMARY KEY (id),
    CONSTRAINT webhook_deliveries_webhook_fkey FOREIGN KEY (webhook) REFERENCES {schema}.webhooks(id) ON DELETE CASCADE
);
CREATE INDEX webhook_deliveries_at_brin ON {schema}.webhook_deliveries USING brin (at);
CREATE INDEX webhook_deliveries_webhook_idx ON {schema}.webhook_deliveries USING btree (webhook, id DESC);

CREATE TABLE {schema}.webhooks (
    id bigint NOT NULL DEFAULT nextval('{schema}.webhook_id_seq'::regclass),
    url text NOT NULL,
    events text[] NOT NULL,
    actions text[] NOT NULL,
    queue_pattern text NOT NULL,
    task_pattern text NOT NULL,
    queue_like text NOT NULL,
    task_like text NOT NULL,
    secret jsonb NOT NULL,
    old_secret jsonb,
    old_until timestamp with time zone,
    hint text NOT NULL,
    enabled boolean NOT NULL DEFAULT true,
    max_attempts integer NOT NULL,
    timeout double precision NOT NULL,
    description text,
    created_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    CONSTRAINT webhooks_actions_check CHECK ((cardinality(actions) > 0)),
    CONSTRAINT webhooks_max_attempts_check CHECK (((max_attempts >= 1) AND (max_attempts <= 1000))),
    CONSTRAINT webhooks_pkey PRIMARY KEY (id),
    CONSTRAINT webhooks_timeout_check CHECK (((timeout > (0)::double precision) AND (timeout <= (300)::double precision)))
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
    processed bigint NOT NULL DEFAULT 0,
    failed bigint NOT NULL DEFAULT 0,
    rss_bytes bigint,
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

CREATE OR REPLACE FUNCTION {schema}.api_check_job(j jsonb, n bigint, p_now timestamp with time zone)
 RETURNS {schema}.api_job
 LANGUAGE plpgsql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION {schema}.api_held(p_id bigint, p_token uuid)
 RETURNS TABLE(attempts integer, max_attempts integer, task text, worker text, linked boolean, group_key text)
 LANGUAGE plpgsql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    RETURN QUERY SELECT j.attempts, j.max_attempts, j.task, j.worker, j.linked, j.group_key
    FROM {schema}.jobs j WHERE j.id = p_id AND j.state = 'running' AND j.lease_token = p_token;
    IF NOT FOUND THEN
        PERFORM {schema}.api_stale(p_id);
    END IF;
END
$function$;

CREATE OR REPLACE FUNCTION {schema}.api_invalid(message text, hint text DEFAULT NULL::text)
 RETURNS void
 LANGUAGE plpgsql
 IMMUTABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    RAISE EXCEPTION 'pageq: %', message USING ERRCODE = '22023', HINT = coalesce(hint, '');
END
$function$;

CREATE OR REPLACE FUNCTION {schema}.api_name(kind text, value text)
 RETURNS text
 LANGUAGE plpgsql
 IMMUTABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    IF value IS NULL OR value !~ '^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$' THEN
        PERFORM {schema}.api_invalid(format('invalid %s name %s: use 1-128 letters, digits, ''_'', ''.'', '
                                            ''':'' or ''-''', kind, coalesce(quote_literal(left(value, 200)), 'NULL')));
    END IF;
    RETURN value;
END
$function$;

CREATE OR REPLACE FUNCTION {schema}.api_num(j jsonb, key text, lo numeric, hi numeric, whole boolean, n bigint)
 RETURNS numeric
 LANGUAGE plpgsql
 IMMUTABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION {schema}.api_stale(p_id bigint)
 RETURNS void
 LANGUAGE plpgsql
 IMMUTABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    RAISE EXCEPTION 'pageq: job % is not running under this lease token', p_id USING ERRCODE = '55000',
        HINT = 'its lease expired and it was rescued, or it was cancelled or finished: nothing was written';
END
$function$;

CREATE OR REPLACE FUNCTION {schema}.api_text(j jsonb, key text, longest integer, n bigint)
 RETURNS text
 LANGUAGE plpgsql
 IMMUTABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION {schema}.api_write(p_jobs {schema}.api_job[], p_ids bigint[], p_now timestamp with time zone)
 RETURNS bigint[]
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION {schema}.audit_event()
 RETURNS trigger
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    v_event jsonb := {schema}.event_of(NEW);
    v_made integer;
BEGIN
    IF v_event IS NULL THEN
        RETURN NULL;
    END IF;
    IF NEW.action = ANY(string_to_array(TG_ARGV[0], ',')) THEN
        PERFORM pg_notify('pageq_events_' || '{schema}', v_event::text);
    END IF;
    WITH made AS (
        INSERT INTO {schema}.jobs (id, task, queue, args, state, priority, run_at, max_attempts, timeout,
                                   created_at, slot)
        SELECT nextval('{schema}.job_id_seq'), 'pageq.webhook', 'pageq.webhooks',
               jsonb_build_object('webhook', w.id, 'event', v_event), 'queued', 0, now(), w.max_attempts,
               w.timeout + 5, now(), (SELECT r.slot FROM {schema}.rotation r)
        FROM {schema}.webhooks w
        WHERE w.enabled AND NEW.action = ANY(w.actions) AND NEW.queue LIKE w.queue_like
          AND NEW.task LIKE w.task_like
        RETURNING id, queue, task
    ), audited AS (
        INSERT INTO {schema}.audit (action, job_id, queue, task, reason)
        SELECT 'enqueue', m.id, m.queue, m.task, 'webhook' FROM made m
        WHERE (SELECT c.level FROM {schema}.audit_config c) >= 1
    )
    SELECT count(*) INTO v_made FROM made;
    IF v_made > 0 THEN
        PERFORM pg_notify('{channel}', 'pageq.webhooks');
    END IF;
    RETURN NULL;
END
$function$;

CREATE OR REPLACE FUNCTION {schema}.audit_level_guard()
 RETURNS trigger
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    v_ids text;
BEGIN
    SELECT string_agg(w.id::text, ', ' ORDER BY w.id) INTO v_ids FROM {schema}.webhooks w
    WHERE w.enabled AND {schema}.event_level(w.actions) > NEW.level;
    IF v_ids IS NOT NULL THEN
        RAISE EXCEPTION 'pageq.invalid:enabled webhooks % need a higher audit level: disable them first', v_ids;
    END IF;
    RETURN NEW;
END
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

CREATE OR REPLACE FUNCTION {schema}.cancel(id bigint)
 RETURNS text
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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

CREATE OR REPLACE FUNCTION {schema}.claim(queues text[], max_jobs integer DEFAULT 1, lease double precision DEFAULT 30, worker text DEFAULT NULL::text, tasks text[] DEFAULT NULL::text[])
 RETURNS TABLE(id bigint, task text, queue text, args jsonb, priority smallint, attempts integer, max_attempts integer, run_at timestamp with time zone, created_at timestamp with time zone, timeout double precision, lease_token uuid, lease_expires_at timestamp with time zone)
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION {schema}.complete(id bigint, lease_token uuid, result jsonb DEFAULT NULL::jsonb)
 RETURNS text
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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

CREATE OR REPLACE FUNCTION {schema}.enqueue(task text, args jsonb DEFAULT '{}'::jsonb, queue text DEFAULT NULL::text, priority integer DEFAULT NULL::integer, run_at timestamp with time zone DEFAULT NULL::timestamp with time zone, delay double precision DEFAULT NULL::double precision, max_attempts integer DEFAULT NULL::integer, timeout double precision DEFAULT NULL::double precision, unique_key text DEFAULT NULL::text, unique_states text[] DEFAULT NULL::text[], unique_window double precision DEFAULT NULL::double precision, on_conflict text DEFAULT NULL::text, group_key text DEFAULT NULL::text, after bigint[] DEFAULT NULL::bigint[], on_parent_failure text DEFAULT NULL::text, idempotency_key text DEFAULT NULL::text)
 RETURNS bigint
 LANGUAGE sql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT e.id FROM {schema}.enqueue_many(jsonb_build_array(jsonb_build_object(
        'task', $1, 'args', $2, 'queue', $3, 'priority', $4, 'run_at', $5, 'delay', $6, 'max_attempts', $7,
        'timeout', $8, 'unique_key', $9, 'unique_states', to_jsonb($10), 'unique_window', $11,
        'on_conflict', $12, 'group_key', $13, 'after', to_jsonb($14), 'on_parent_failure', $15,
        'idempotency_key', $16))) AS e
$function$;

CREATE OR REPLACE FUNCTION {schema}.enqueue_many(jobs jsonb)
 RETURNS TABLE(id bigint)
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION {schema}.enqueue_one(p_task text, p_queue text, p_args jsonb, p_priority smallint, p_run_at timestamp with time zone, p_max_attempts integer, p_timeout double precision, p_now timestamp with time zone, p_unique_key text, p_unique_states text[], p_unique_window double precision, p_on_conflict text, p_group_key text, p_after bigint[], p_on_parent_failure text, p_id bigint DEFAULT NULL::bigint)
 RETURNS TABLE(job_id bigint, inserted boolean)
 LANGUAGE plpgsql
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION {schema}.event_level(p_actions text[])
 RETURNS smallint
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$
    SELECT CASE WHEN p_actions && ARRAY['claim', 'complete', 'retry', 'rescue', 'bury', 'release']
                THEN 2 ELSE 1 END::smallint
$function$;

CREATE OR REPLACE FUNCTION {schema}.event_of(a {schema}.audit)
 RETURNS jsonb
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    j record;
    v_previous text;
    v_error jsonb;
    v_event jsonb;
BEGIN
    IF a.action IN ('complete', 'bury', 'cancel') THEN
        SELECT f.state, f.attempts, f.max_attempts, f.lease_token, f.result, f.errors -> -1 AS last_error
        INTO j FROM {schema}.finished_jobs f WHERE f.id = a.job_id LIMIT 1;
    ELSE
        SELECT l.state, l.attempts, l.max_attempts, l.lease_token, NULL::jsonb AS result,
               l.errors -> -1 AS last_error
        INTO j FROM {schema}.jobs l WHERE l.id = a.job_id LIMIT 1;
    END IF;
    -- an audit row the job's state does not bear out (written by hand: every pageq role may append to the
    -- trail) announces nothing
    -- (the CASE in parentheses: PL/pgSQL ends an IF's condition at its first THEN)
    IF NOT FOUND OR NOT (CASE a.action
        WHEN 'enqueue' THEN j.state IN ('scheduled', 'queued', 'blocked')
        WHEN 'claim' THEN j.state = 'running'
        WHEN 'complete' THEN j.state = 'succeeded'
        WHEN 'bury' THEN j.state = 'dead'
        WHEN 'cancel' THEN j.state = 'cancelled'
        WHEN 'retry' THEN j.state = 'retrying'
        WHEN 'rescue' THEN j.state = 'retrying'
        ELSE j.state = 'queued' END)  -- release, requeue, run_now
    THEN
        RETURN NULL;
    END IF;
    v_previous := CASE a.action
        WHEN 'claim' THEN CASE WHEN j.attempts > 1 THEN 'retrying' ELSE 'queued' END
        WHEN 'cancel' THEN CASE WHEN j.lease_token IS NOT NULL THEN 'running' END
        WHEN 'enqueue' THEN NULL WHEN 'requeue' THEN NULL WHEN 'run_now' THEN NULL
        ELSE 'running' END;
    v_event := jsonb_build_object(
        'id', a.id, 'type', {schema}.event_type(a.action),
        'at', to_char(a.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'job', jsonb_build_object('id', a.job_id, 'task', a.task, 'queue', a.queue, 'state', j.state,
                                  'previous', v_previous, 'attempt', j.attempts,
                                  'max_attempts', j.max_attempts),
        'principal', a.principal, 'reason', a.reason);
    IF a.action IN ('retry', 'rescue', 'bury', 'cancel') AND jsonb_typeof(j.last_error) = 'object' THEN
        v_error := jsonb_build_object('reason', j.last_error ->> 'reason',
                                      'message', left(j.last_error ->> 'error', 1000));
        IF j.last_error ? '$enc' THEN
            v_error := v_error || '{"encrypted": true}';
        END IF;
        v_event := v_event || jsonb_build_object('error', v_error);
    END IF;
    IF a.action = 'complete' AND j.result IS NOT NULL THEN
        IF jsonb_typeof(j.result) = 'object' AND j.result ? '$enc' THEN
            v_event := v_event || '{"result_omitted": "encrypted"}';
        ELSIF octet_length(j.result::text) > 4096 THEN
            v_event := v_event || '{"result_omitted": "too_large"}';
        ELSE
            v_event := v_event || jsonb_build_object('result', j.result);
        END IF;
    END IF;
    RETURN v_event;
END
$function$;

CREATE OR REPLACE FUNCTION {schema}.event_recorded(p_event bigint, p_job bigint, p_type text)
 RETURNS boolean
 LANGUAGE sql
 STABLE SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT EXISTS (SELECT FROM {schema}.audit a WHERE a.id = p_event AND a.job_id = p_job
                   AND a.decision = 'allow' AND {schema}.event_type(a.action) = p_type)
$function$;

CREATE OR REPLACE FUNCTION {schema}.event_type(p_action text)
 RETURNS text
 LANGUAGE sql
 IMMUTABLE PARALLEL SAFE
AS $function$
    SELECT CASE p_action
        WHEN 'enqueue' THEN 'job.enqueued'
        WHEN 'claim' THEN 'job.running'
        WHEN 'complete' THEN 'job.succeeded'
        WHEN 'retry' THEN 'job.retrying'
        WHEN 'rescue' THEN 'job.retrying'
        WHEN 'bury' THEN 'job.dead'
        WHEN 'cancel' THEN 'job.cancelled'
        WHEN 'release' THEN 'job.released'
        WHEN 'requeue' THEN 'job.requeued'
        WHEN 'run_now' THEN 'job.requeued'
    END
$function$;

CREATE OR REPLACE FUNCTION {schema}.events_listen(p_id text, p_actions text[], p_expires timestamp with time zone, p_now timestamp with time zone)
 RETURNS smallint
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    IF p_actions IS NOT NULL AND EXISTS (
        SELECT FROM {schema}.event_listeners WHERE id = p_id AND actions = p_actions AND expires_at > p_now
    ) THEN  -- a renewal: no change of routes, no lock
        UPDATE {schema}.event_listeners SET expires_at = p_expires WHERE id = p_id;
        RETURN (SELECT level FROM {schema}.audit_config);
    END IF;
    PERFORM FROM {schema}.event_routes FOR UPDATE;
    DELETE FROM {schema}.event_listeners WHERE id = p_id OR expires_at <= p_now;
    IF p_actions IS NOT NULL THEN
        INSERT INTO {schema}.event_listeners (id, actions, expires_at) VALUES (p_id, p_actions, p_expires);
    END IF;
    PERFORM {schema}.events_sync(p_now);
    RETURN (SELECT level FROM {schema}.audit_config);
END
$function$;

CREATE OR REPLACE FUNCTION {schema}.events_sweep(p_now timestamp with time zone)
 RETURNS integer
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    v_gone integer;
BEGIN
    IF NOT EXISTS (SELECT FROM {schema}.event_listeners WHERE expires_at <= p_now) THEN
        RETURN 0;
    END IF;
    PERFORM FROM {schema}.event_routes FOR UPDATE;
    DELETE FROM {schema}.event_listeners WHERE expires_at <= p_now;
    GET DIAGNOSTICS v_gone = ROW_COUNT;
    PERFORM {schema}.events_sync(p_now);
    RETURN v_gone;
END
$function$;

CREATE OR REPLACE FUNCTION {schema}.events_sync(p_now timestamp with time zone)
 RETURNS boolean
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET lock_timeout TO '1s'
AS $function$
DECLARE
    v_current record;
    v_hooks text[];
    v_listen text[];
    v_all text[];
BEGIN
    SELECT actions, notify INTO v_current FROM {schema}.event_routes FOR UPDATE;
    v_hooks := ARRAY(SELECT DISTINCT a FROM {schema}.webhooks w, unnest(w.actions) AS a WHERE w.enabled);
    v_listen := ARRAY(SELECT DISTINCT a FROM {schema}.event_listeners l, unnest(l.actions) AS a
                      WHERE l.expires_at > p_now ORDER BY a);
    v_all := ARRAY(SELECT DISTINCT a FROM unnest(v_hooks || v_listen) AS a ORDER BY a);
    IF v_current.actions = v_all AND v_current.notify = v_listen THEN
        RETURN false;
    END IF;
    IF cardinality(v_all) = 0 THEN
        DROP TRIGGER IF EXISTS audit_events ON {schema}.audit;
    ELSE
        EXECUTE format(
            'CREATE OR REPLACE TRIGGER audit_events AFTER INSERT ON {schema}.audit FOR EACH ROW '
            'WHEN (NEW.action IN (%s) AND NEW.decision = ''allow'' AND NEW.job_id IS NOT NULL '
            'AND NEW.task IS DISTINCT FROM ''pageq.webhook'') EXECUTE FUNCTION {schema}.audit_event(%L)',
            (SELECT string_agg(quote_literal(a), ', ') FROM unnest(v_all) AS a), array_to_string(v_listen, ','));
    END IF;
    UPDATE {schema}.event_routes SET actions = v_all, notify = v_listen;
    RETURN true;
END
$function$;

CREATE OR REPLACE FUNCTION {schema}.fail(id bigint, lease_token uuid, error text, retry_in double precision DEFAULT NULL::double precision, retryable boolean DEFAULT true, traceback text DEFAULT NULL::text)
 RETURNS text
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION {schema}.heartbeat(id bigint, lease_token uuid, lease double precision DEFAULT 30)
 RETURNS timestamp with time zone
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
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

CREATE OR REPLACE FUNCTION {schema}.idempotency_relink(p_keys text[], p_ids bigint[])
 RETURNS void
 LANGUAGE sql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    UPDATE {schema}.idempotency_keys AS i SET job_id = d.id
    FROM unnest(p_keys, p_ids) AS d(key, id)
    WHERE i.key = d.key AND i.job_id <> d.id
      AND NOT EXISTS (SELECT FROM {schema}.jobs AS j WHERE j.id = i.job_id)
      AND NOT EXISTS (SELECT FROM {schema}.finished_jobs AS f WHERE f.id = i.job_id)
$function$;

CREATE OR REPLACE FUNCTION {schema}.idempotency_take(p_keys text[], p_now timestamp with time zone)
 RETURNS TABLE(n bigint, job_id bigint, taken boolean)
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
#variable_conflict use_column
DECLARE
    v_ids bigint[];
BEGIN
    SELECT array_agg(nextval('{schema}.job_id_seq') ORDER BY u.n) INTO v_ids
    FROM unnest(p_keys) WITH ORDINALITY AS u(k, n);
    INSERT INTO {schema}.idempotency_keys AS i (key, job_id, created_at)
    SELECT u.k, v_ids[u.n], p_now FROM unnest(p_keys) WITH ORDINALITY AS u(k, n)
    WHERE u.k IS NOT NULL
    ORDER BY u.n
    ON CONFLICT (key) DO NOTHING;
    -- a new statement, a new snapshot: a key that a concurrent transaction committed meanwhile is visible
    RETURN QUERY
        SELECT u.n, coalesce(i.job_id, v_ids[u.n]), u.k IS NULL OR i.job_id = v_ids[u.n]
        FROM unnest(p_keys) WITH ORDINALITY AS u(k, n)
        LEFT JOIN {schema}.idempotency_keys AS i ON i.key = u.k
        ORDER BY u.n;
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

CREATE OR REPLACE FUNCTION {schema}.q_bury(p_ids bigint[], p_tokens uuid[], p_errors text[], p_now timestamp with time zone)
 RETURNS TABLE(id bigint)
 LANGUAGE sql
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_custom_plan'
AS $function$
-- Move failed jobs, still leased to the caller, to the dead-letter queue with their last error.
WITH done AS (
    DELETE FROM {schema}.jobs AS j
    USING unnest($1::int8[], $2::uuid[], $3::text[]) AS d(id, token, error)
    WHERE j.id = ANY($1::int8[]) AND j.id = d.id AND j.state = 'running' AND j.lease_token = d.token
    RETURNING j.*, d.error
), fin AS (
INSERT INTO {schema}.finished_jobs
    (id, task, queue, args, state, priority, run_at, attempts, max_attempts, timeout, lease_token,
     worker, created_at, started_at, finished_at, result, errors)
SELECT id, task, queue, args, 'dead', priority, run_at, attempts, max_attempts, timeout,
       lease_token, worker, created_at, started_at, $4, NULL,
       errors || jsonb_build_array(error::jsonb)
FROM done
RETURNING id, queue, task, errors -> -1 ->> 'reason' AS reason
), audited AS (
    INSERT INTO {schema}.audit (action, job_id, queue, task, reason)
    SELECT 'bury', id, queue, task, reason FROM fin WHERE (SELECT level FROM {schema}.audit_config) >= 2
)
SELECT id FROM fin
$function$;

CREATE OR REPLACE FUNCTION {schema}.q_claim(p_queues text[], p_now timestamp with time zone, p_tasks text[], p_suspect integer, p_limit bigint, p_lease double precision, p_worker text)
 RETURNS TABLE(id bigint, task text, queue text, args jsonb, priority smallint, attempts integer, max_attempts integer, run_at timestamp with time zone, created_at timestamp with time zone, timeout double precision, lease_token text, group_key text, linked boolean)
 LANGUAGE sql
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_custom_plan'
AS $function$
-- Lock up to `limit` runnable jobs of the given queues in claim order and lease them to a worker.
-- Each queue is read through its own index range (so the cost does not grow with the backlog), then the
-- best `limit` across queues are taken; rows locked but not taken are unlocked at commit.
WITH locked AS (
    SELECT c.id, c.priority, c.run_at
    FROM unnest($1::text[]) AS q(name)
    CROSS JOIN LATERAL (
        SELECT id, priority, run_at FROM {schema}.jobs
        WHERE queue = q.name
          AND state IN ('scheduled', 'queued', 'retrying')
          AND run_at <= $2
          AND ($3::text[] IS NULL OR task = ANY($3::text[]))
          AND crashes < $4  -- suspected poison pills run alone (claim_suspect)
        ORDER BY priority DESC, run_at, id
        LIMIT $5
        FOR UPDATE SKIP LOCKED
    ) AS c
), picked AS (
    SELECT id FROM locked ORDER BY priority DESC, run_at, id LIMIT $5
), claimed AS (
UPDATE {schema}.jobs AS j
SET state = 'running', attempts = j.attempts + 1, lease_token = gen_random_uuid(),
    lease_expires_at = $2 + make_interval(secs => $6), worker = $7,
    started_at = $2
WHERE j.id = ANY(ARRAY(SELECT id FROM picked))  -- primary-key probes, never a scan of the backlog
RETURNING j.id, j.task, j.queue, j.args, j.priority, j.attempts, j.max_attempts, j.run_at,
          j.created_at, j.timeout, j.lease_token::text, j.group_key, j.linked
), audited AS (
    INSERT INTO {schema}.audit (action, job_id, queue, task)
    SELECT 'claim', id, queue, task FROM claimed WHERE (SELECT level FROM {schema}.audit_config) >= 2
)
SELECT * FROM claimed
$function$;

CREATE OR REPLACE FUNCTION {schema}.q_claim_controlled(p_limit bigint, p_queues text[], p_now timestamp with time zone, p_tasks text[], p_suspect integer, p_lease double precision, p_worker text)
 RETURNS TABLE(id bigint, task text, queue text, args jsonb, priority smallint, attempts integer, max_attempts integer, run_at timestamp with time zone, created_at timestamp with time zone, timeout double precision, lease_token text, group_key text, linked boolean)
 LANGUAGE sql
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_custom_plan'
AS $function$
-- The claim for queues with controls (run after queues_lock, in the same transaction): each queue gets at
-- most what its concurrency limit (running jobs, cluster-wide) and rate window allow; a worker's queues
-- share the claim by weight (the n-th job of a queue ranks n / weight); the rate window counts the starts.
-- `tasks` (NULL: any) keeps to the tasks the worker's principal may work; audited like `claim` (level 2).
-- Suspected poison pills (`crashes >= suspect`) are left to `claim_suspect`, except in queues with a
-- concurrency or rate limit, whose limits come first: there they are claimed like any job.
WITH q AS (
    SELECT u.name, coalesce(c.weight, 1) AS weight, w.start,
           c.concurrency IS NOT NULL OR c.rate_limit IS NOT NULL AS limited,
           greatest(0, least(
               $1::int8,
               c.concurrency - (SELECT count(*) FROM {schema}.jobs r
                                WHERE r.queue = u.name AND r.state = 'running'),
               c.rate_limit - CASE WHEN c.window_start = w.start THEN c.window_count ELSE 0 END
           )) AS allowed
    FROM unnest($2::text[]) AS u(name)
    LEFT JOIN {schema}.queues c ON c.name = u.name
    CROSS JOIN LATERAL (  -- never back: a claimer whose `now` predates the window another one opened
        SELECT greatest(c.window_start,  -- counts in that window, it does not reopen an old one
            to_timestamp(floor(extract(epoch FROM $3::timestamptz) / c.rate_period) * c.rate_period))
    ) AS w(start)
    WHERE c.paused IS NOT TRUE
), locked AS (
    SELECT c.id, c.queue, c.priority, c.run_at,
           row_number() OVER (PARTITION BY c.queue ORDER BY c.priority DESC, c.run_at, c.id)::float8
               / q.weight AS turn
    FROM q CROSS JOIN LATERAL (
        SELECT id, queue, priority, run_at FROM {schema}.jobs
        WHERE queue = q.name
          AND state IN ('scheduled', 'queued', 'retrying')
          AND run_at <= $3
          AND ($4::text[] IS NULL OR task = ANY($4::text[]))
          AND (crashes < $5 OR q.limited)
        ORDER BY priority DESC, run_at, id
        LIMIT q.allowed
        FOR UPDATE SKIP LOCKED
    ) AS c
), picked AS (
    SELECT id, queue FROM locked ORDER BY turn, priority DESC, run_at, id LIMIT $1
), counted AS (
    UPDATE {schema}.queues AS c
    SET window_start = q.start,
        window_count = CASE WHEN c.window_start = q.start THEN c.window_count ELSE 0 END + n.started
    FROM (SELECT queue, count(*) AS started FROM picked GROUP BY queue) AS n, q
    WHERE c.name = n.queue AND q.name = n.queue AND c.rate_limit IS NOT NULL
), claimed AS (
UPDATE {schema}.jobs AS j
SET state = 'running', attempts = j.attempts + 1, lease_token = gen_random_uuid(),
    lease_expires_at = $3 + make_interval(secs => $6), worker = $7,
    started_at = $3
WHERE j.id = ANY(ARRAY(SELECT id FROM picked))
RETURNING j.id, j.task, j.queue, j.args, j.priority, j.attempts, j.max_attempts, j.run_at,
          j.created_at, j.timeout, j.lease_token::text, j.group_key, j.linked
), audited AS (
    INSERT INTO {schema}.audit (action, job_id, queue, task)
    SELECT 'claim', id, queue, task FROM claimed WHERE (SELECT level FROM {schema}.audit_config) >= 2
)
SELECT * FROM claimed
$function$;

CREATE OR REPLACE FUNCTION {schema}.q_complete(p_ids bigint[], p_tokens uuid[], p_results text[], p_now timestamp with time zone)
 RETURNS TABLE(id bigint)
 LANGUAGE sql
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_custom_plan'
AS $function$
-- Move succeeded jobs, still leased to the caller, to finished_jobs with their results.
WITH done AS (
    DELETE FROM {schema}.jobs AS j
    USING unnest($1::int8[], $2::uuid[], $3::text[]) AS d(id, token, result)
    WHERE j.id = ANY($1::int8[]) AND j.id = d.id AND j.state = 'running' AND j.lease_token = d.token
    RETURNING j.*, d.result
), fin AS (
INSERT INTO {schema}.finished_jobs
    (id, task, queue, args, state, priority, run_at, attempts, max_attempts, timeout, lease_token,
     worker, created_at, started_at, finished_at, result, errors)
SELECT id, task, queue, args, 'succeeded', priority, run_at, attempts, max_attempts, timeout,
       lease_token, worker, created_at, started_at, $4, result::jsonb, errors
FROM done
RETURNING id, queue, task
), audited AS (
    INSERT INTO {schema}.audit (action, job_id, queue, task)
    SELECT 'complete', id, queue, task FROM fin WHERE (SELECT level FROM {schema}.audit_config) >= 2
)
SELECT id FROM fin
$function$;

CREATE OR REPLACE FUNCTION {schema}.q_enqueue(p_ids bigint[], p_now timestamp with time zone, p_tasks text[], p_queues text[], p_args text[], p_priorities smallint[], p_run_ats timestamp with time zone[], p_max_attempts integer[], p_timeouts double precision[], p_channel text, p_notify text[])
 RETURNS TABLE(id bigint)
 LANGUAGE sql
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_custom_plan'
AS $function$
-- Insert a batch of jobs from parallel arrays in one statement; NOTIFY the listed queues once each.
-- `ids` (reserved ids, for encrypted arguments bound to their job) is NULL when the sequence assigns them.
-- Audited (one row per job) at level >= 1.
WITH ins AS (
    INSERT INTO {schema}.jobs (id, task, queue, args, state, priority, run_at, max_attempts, timeout,
                               created_at, slot)
    SELECT coalesce(($1::int8[])[u.n], nextval('{schema}.job_id_seq')), t, q, a::jsonb,
           CASE WHEN r > $2 THEN 'scheduled' ELSE 'queued' END, p, r, m, tm, $2,
           (SELECT slot FROM {schema}.rotation)
    FROM unnest($3::text[], $4::text[], $5::text[], $6::int2[],
                $7::timestamptz[], $8::int4[], $9::float8[])
         WITH ORDINALITY AS u(t, q, a, p, r, m, tm, n)
    RETURNING id, queue, task
), notified AS (
    SELECT count(pg_notify($10, nq)) AS n FROM unnest($11::text[]) AS nq
), audited AS (
    INSERT INTO {schema}.audit (action, job_id, queue, task)
    SELECT 'enqueue', id, queue, task FROM ins WHERE (SELECT level FROM {schema}.audit_config) >= 1
)
SELECT ins.id FROM ins, notified ORDER BY ins.id
$function$;

CREATE OR REPLACE FUNCTION {schema}.q_enqueue_special(p_tasks text[], p_queues text[], p_args text[], p_priorities smallint[], p_run_ats timestamp with time zone[], p_max_attempts integer[], p_timeouts double precision[], p_unique_keys text[], p_unique_states text[], p_unique_windows double precision[], p_on_conflicts text[], p_group_keys text[], p_afters text[], p_on_failures text[], p_now timestamp with time zone, p_ids bigint[])
 RETURNS TABLE(job_id bigint, inserted boolean)
 LANGUAGE sql
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_custom_plan'
AS $function$
-- Insert a batch of jobs that use unique keys, groups or dependencies, one enqueue_one() call each, in order;
-- returns (id, inserted) per job (a unique conflict returns the holder's id, inserted = false).
-- `ids` (reserved ids, for encrypted arguments bound to their job) is NULL when the sequence assigns them.
SELECT e.job_id, e.inserted
FROM unnest($1::text[], $2::text[], $3::text[], $4::int2[],
            $5::timestamptz[], $6::int4[], $7::float8[],
            $8::text[], $9::text[], $10::float8[],
            $11::text[], $12::text[], $13::text[], $14::text[])
     WITH ORDINALITY AS u(t, q, a, p, r, m, tm, uk, us, uw, oc, g, af, pf, n)
CROSS JOIN LATERAL {schema}.enqueue_one(
    u.t, u.q, u.a::jsonb, u.p, u.r, u.m, u.tm, $15, u.uk, string_to_array(u.us, ','), u.uw, u.oc,
    u.g, string_to_array(u.af, ',')::int8[], u.pf, ($16::int8[])[u.n]) AS e
ORDER BY u.n
$function$;

CREATE OR REPLACE FUNCTION {schema}.q_heartbeat(p_now timestamp with time zone, p_lease double precision, p_ids bigint[], p_tokens uuid[])
 RETURNS TABLE(id bigint)
 LANGUAGE sql
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_custom_plan'
AS $function$
-- Extend the leases the caller still holds; returns the ids it still holds.
UPDATE {schema}.jobs AS j
SET lease_expires_at = $1 + make_interval(secs => $2)
FROM unnest($3::int8[], $4::uuid[]) AS d(id, token)
WHERE j.id = ANY($3::int8[]) AND j.id = d.id AND j.state = 'running' AND j.lease_token = d.token
RETURNING j.id
$function$;

CREATE OR REPLACE FUNCTION {schema}.q_queues_lock(p_queues text[])
 RETURNS TABLE(name text)
 LANGUAGE sql
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_custom_plan'
AS $function$
-- Lock the control rows that limit a claim (concurrency, rate), so limits hold across all workers.
SELECT name FROM {schema}.queues
WHERE name = ANY($1::text[]) AND (concurrency IS NOT NULL OR rate_limit IS NOT NULL)
ORDER BY name
FOR UPDATE
$function$;

CREATE OR REPLACE FUNCTION {schema}.q_release(p_now timestamp with time zone, p_ids bigint[], p_tokens uuid[])
 RETURNS TABLE(id bigint)
 LANGUAGE sql
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_custom_plan'
AS $function$
-- Give unfinished jobs back at once (graceful shutdown): queued again, the attempt not counted.
WITH moved AS (
UPDATE {schema}.jobs AS j
SET state = 'queued', attempts = greatest(j.attempts - 1, 0), lease_token = NULL,
    lease_expires_at = NULL, run_at = $1, worker = NULL
FROM unnest($2::int8[], $3::uuid[]) AS d(id, token)
WHERE j.id = ANY($2::int8[]) AND j.id = d.id AND j.state = 'running' AND j.lease_token = d.token
RETURNING j.id, j.queue, j.task
), audited AS (
    INSERT INTO {schema}.audit (action, job_id, queue, task)
    SELECT 'release', id, queue, task FROM moved WHERE (SELECT level FROM {schema}.audit_config) >= 2
)
SELECT id FROM moved
$function$;

CREATE OR REPLACE FUNCTION {schema}.q_resolve(p_ids bigint[], p_groups text[], p_now timestamp with time zone)
 RETURNS TABLE(resolve integer)
 LANGUAGE sql
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_custom_plan'
AS $function$
-- Settle the dependents and groups of jobs that just finished (same transaction as their completion).
SELECT {schema}.resolve($1::int8[], $2::text[], $3)
$function$;

CREATE OR REPLACE FUNCTION {schema}.q_retry(p_ids bigint[], p_tokens uuid[], p_run_ats timestamp with time zone[], p_errors text[])
 RETURNS TABLE(id bigint)
 LANGUAGE sql
 SET search_path TO 'pg_catalog', 'pg_temp'
 SET plan_cache_mode TO 'force_custom_plan'
AS $function$
-- Send failed attempts, still leased to the caller, back to wait for their next attempt.
WITH moved AS (
UPDATE {schema}.jobs AS j
SET state = 'retrying', run_at = d.run_at, lease_token = NULL, lease_expires_at = NULL,
    errors = j.errors || jsonb_build_array(d.error::jsonb)
FROM unnest($1::int8[], $2::uuid[], $3::timestamptz[], $4::text[])
     AS d(id, token, run_at, error)
WHERE j.id = ANY($1::int8[]) AND j.id = d.id AND j.state = 'running' AND j.lease_token = d.token
RETURNING j.id, j.queue, j.task
), audited AS (
    INSERT INTO {schema}.audit (action, job_id, queue, task)
    SELECT 'retry', id, queue, task FROM moved WHERE (SELECT level FROM {schema}.audit_config) >= 2
)
SELECT id FROM moved
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

CREATE OR REPLACE FUNCTION {schema}.release(id bigint, lease_token uuid)
 RETURNS text
 LANGUAGE plpgsql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    IF NOT EXISTS (SELECT FROM {schema}.q_release(p_ids => ARRAY[release.id],
                   p_tokens => ARRAY[release.lease_token], p_now => statement_timestamp())) THEN
        PERFORM {schema}.api_stale(release.id);
    END IF;
    RETURN 'queued';
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
$function$;

CREATE OR REPLACE FUNCTION {schema}.resolve_sweep(p_now timestamp with time zone, p_parent_after bigint, p_group_after text, p_limit integer)
 RETURNS TABLE(parent_cursor bigint, group_cursor text, cancelled integer)
 LANGUAGE plpgsql
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION {schema}.retry_delay(p_task text, p_attempts integer)
 RETURNS double precision
 LANGUAGE sql
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT greatest(0, least(p.cap, p.factor * exp(least(p_attempts * ln(p.base), 700)))
                       * (1 + p.jitter * (2 * random() - 1)))
    FROM (SELECT coalesce(t.retry_base, 2) AS base, coalesce(t.retry_cap, 3600) AS cap,
                 coalesce(t.retry_factor, 1) AS factor, coalesce(t.retry_jitter, 0.1) AS jitter
          FROM (SELECT 1) AS one LEFT JOIN {schema}.tasks t ON t.name = p_task) AS p
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

CREATE OR REPLACE FUNCTION {schema}.route(p_task text, p_args jsonb)
 RETURNS TABLE(rule integer, queue text, priority smallint, predicate text)
 LANGUAGE sql
 STABLE
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
    SELECT r.ord, r.queue, r.priority, r.predicate FROM {schema}.routes r
    WHERE p_task ~ r.task_re
      AND NOT EXISTS (SELECT FROM jsonb_each(r.args) AS c(k, v) WHERE p_args -> c.k IS DISTINCT FROM c.v)
    ORDER BY r.ord
    LIMIT 1
$function$;

CREATE OR REPLACE FUNCTION {schema}.setup_db_roles()
 RETURNS void
 LANGUAGE plpgsql
AS $function$
DECLARE
    s text := '{schema}';
    worker text := s || '_worker';
    admin text := s || '_admin';
BEGIN
    PERFORM {schema}.setup_db_roles_0011();
    EXECUTE format('GRANT SELECT ON %I.webhooks TO %I, %I', s, worker, admin);
    EXECUTE format('GRANT SELECT, INSERT ON %I.webhook_deliveries TO %I, %I', s, worker, admin);
    EXECUTE format('GRANT DELETE ON %I.webhook_deliveries TO %I, %I', s, worker, admin);
    EXECUTE format('GRANT USAGE ON SEQUENCE %I.webhook_id_seq TO %I', s, admin);
    EXECUTE format('GRANT EXECUTE ON FUNCTION %I.events_listen(text, text[], timestamptz, timestamptz), '
                   '%I.events_sweep(timestamptz), %I.event_recorded(bigint, bigint, text) TO %I, %I',
                   s, s, s, worker, admin);
    EXECUTE format('GRANT EXECUTE ON FUNCTION %I.webhook_create(bigint, text, text[], text[], text, text, '
                   'text, text, jsonb, text, integer, double precision, text, boolean, timestamptz), '
                   '%I.webhook_set_enabled(bigint, boolean, timestamptz), %I.webhook_delete(bigint, timestamptz), '
                   '%I.webhook_rotate(bigint, jsonb, text, timestamptz, timestamptz) TO %I', s, s, s, s, admin);
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

CREATE OR REPLACE FUNCTION {schema}.setup_db_roles_0005()
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

CREATE OR REPLACE FUNCTION {schema}.setup_db_roles_0008()
 RETURNS void
 LANGUAGE plpgsql
AS $function$
DECLARE
    s text := '{schema}';
BEGIN
    PERFORM {schema}.setup_db_roles_0005();
    EXECUTE format('GRANT SELECT, INSERT, DELETE ON %I.job_watch TO %I, %I', s, s || '_worker', s || '_admin');
END
$function$;

CREATE OR REPLACE FUNCTION {schema}.setup_db_roles_0009()
 RETURNS void
 LANGUAGE plpgsql
AS $function$
DECLARE
    s text := '{schema}';
BEGIN
    PERFORM {schema}.setup_db_roles_0008();
    EXECUTE format('GRANT SELECT ON %I.stats_state, %I.stats_minute, %I.stats_totals TO %I, %I',
                   s, s, s, s || '_worker', s || '_admin');
    EXECUTE format('GRANT EXECUTE ON FUNCTION %I.stats_rollup(timestamptz, interval, interval, integer) '
                   'TO %I, %I', s, s || '_worker', s || '_admin');
END
$function$;

CREATE OR REPLACE FUNCTION {schema}.setup_db_roles_0011()
 RETURNS void
 LANGUAGE plpgsql
AS $function$
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
$function$;

CREATE OR REPLACE FUNCTION {schema}.stats_rollup(at timestamp with time zone, settle interval, keep interval, max_minutes integer)
 RETURNS integer
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    origin  constant timestamptz := timestamptz '2000-01-01 00:00:00+00';
    settled timestamptz := date_bin('1 minute', at - settle, origin);  -- minutes before it are complete
    lo      timestamptz;
    hi      timestamptz;
    sampled timestamptz;
BEGIN
    SELECT rolled_until INTO lo FROM {schema}.stats_state FOR UPDATE;
    lo := greatest(coalesce(lo, settled - interval '1 minute'), settled - keep);
    hi := least(settled, lo + max_minutes * interval '1 minute');
    IF hi <= lo THEN
        RETURN 0;
    END IF;
    sampled := CASE WHEN hi = settled THEN hi - interval '1 minute' END;  -- live jobs: only for the newest

    INSERT INTO {schema}.stats_minute
        (minute, queue, task, enqueued, succeeded, dead, cancelled, failed, timed,
         wait_sum, wait_p50, wait_p95, wait_p99, run_sum, run_p50, run_p95, run_p99,
         scheduled, queued, running, retrying, blocked, oldest_age)
    WITH recent AS MATERIALIZED (  -- finished since lo: the minutes' finishes, and jobs born or failed in them
        SELECT queue, task, state, run_at, created_at, started_at, finished_at, errors
        FROM {schema}.finished_jobs
        WHERE finished_at >= lo AND finished_at < hi + interval '1 hour'
    ), fin AS (
        SELECT date_bin('1 minute', finished_at, origin) AS minute, queue, task, state,
               CASE WHEN state <> 'cancelled' AND started_at IS NOT NULL
                    THEN greatest(extract(epoch FROM started_at - run_at)::float8, 0) END AS wait,
               CASE WHEN state <> 'cancelled' AND started_at IS NOT NULL
                    THEN greatest(extract(epoch FROM finished_at - started_at)::float8, 0) END AS run
        FROM recent WHERE finished_at < hi
    ), timing AS (
        SELECT minute, coalesce(queue, '*') AS queue, coalesce(task, '*') AS task,
               count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
               count(*) FILTER (WHERE state = 'dead') AS dead,
               count(*) FILTER (WHERE state = 'cancelled') AS cancelled,
               count(wait) AS timed, coalesce(sum(wait), 0) AS wait_sum, coalesce(sum(run), 0) AS run_sum,
               percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY wait) AS wait_p,
               percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY run) AS run_p
        FROM fin GROUP BY GROUPING SETS ((minute, queue, task), (minute, queue), (minute, task), (minute))
    ), live AS MATERIALIZED (  -- one pass over the live jobs: by state, and those born in the minutes
        SELECT queue, task, state, count(*) AS n,
               CASE WHEN created_at >= lo AND created_at < hi
                    THEN date_bin('1 minute', created_at, origin) END AS born,
               min(run_at) FILTER (WHERE state IN ('scheduled', 'queued', 'retrying') AND run_at <= at) AS due
        FROM {schema}.jobs GROUP BY 1, 2, 3, 5
    ), born AS (
        SELECT born AS minute, queue, task, sum(n) AS n FROM live WHERE born IS NOT NULL GROUP BY 1, 2, 3
        UNION ALL
        SELECT date_bin('1 minute', created_at, origin), queue, task, count(*) FROM recent
        WHERE created_at >= lo AND created_at < hi GROUP BY 1, 2, 3
    ), failures AS (  -- error records carry the time of their attempt's failure
        SELECT date_bin('1 minute', e.failed_at, origin) AS minute, s.queue, s.task, count(*) AS n
        FROM (SELECT queue, task, errors FROM {schema}.jobs WHERE errors <> '[]'::jsonb
              UNION ALL
              SELECT queue, task, errors FROM recent WHERE errors <> '[]'::jsonb) AS s
        CROSS JOIN LATERAL (
            SELECT CASE WHEN x ->> 'at' ~ '^\d{4}-\d\d-\d\d[T ]\d\d:\d\d'
                        THEN (x ->> 'at')::timestamptz END AS failed_at
            FROM jsonb_array_elements(CASE WHEN jsonb_typeof(s.errors) = 'array'
                                           THEN s.errors ELSE '[]'::jsonb END) AS x
        ) AS e
        WHERE e.failed_at >= lo AND e.failed_at < hi
        GROUP BY 1, 2, 3
    ), flow AS (
        SELECT minute, coalesce(queue, '*') AS queue, coalesce(task, '*') AS task,
               sum(enqueued) AS enqueued, sum(failed) AS failed
        FROM (SELECT minute, queue, task, n AS enqueued, 0 AS failed FROM born
              UNION ALL
              SELECT minute, queue, task, 0, n FROM failures) AS f
        GROUP BY GROUPING SETS ((minute, queue, task), (minute, queue), (minute, task), (minute))
    ), depth AS (
        SELECT sampled AS minute, coalesce(queue, '*') AS queue, coalesce(task, '*') AS task,
               sum(n) FILTER (WHERE state = 'scheduled') AS scheduled,
               sum(n) FILTER (WHERE state = 'queued') AS queued,
               sum(n) FILTER (WHERE state = 'running') AS running,
               sum(n) FILTER (WHERE state = 'retrying') AS retrying,
               sum(n) FILTER (WHERE state = 'blocked') AS blocked,
               extract(epoch FROM at - min(due))::float8 AS oldest_age
        FROM live GROUP BY GROUPING SETS ((queue, task), (queue), (task), ())
        HAVING sampled IS NOT NULL
    ), keys AS (
        SELECT minute, queue, task FROM timing
        UNION SELECT minute, queue, task FROM flow
        UNION SELECT minute, queue, task FROM depth
    )
    SELECT k.minute, k.queue, k.task, coalesce(f.enqueued, 0), coalesce(t.succeeded, 0), coalesce(t.dead, 0),
           coalesce(t.cancelled, 0), coalesce(f.failed, 0), coalesce(t.timed, 0),
           coalesce(t.wait_sum, 0), t.wait_p[1], t.wait_p[2], t.wait_p[3],
           coalesce(t.run_sum, 0), t.run_p[1], t.run_p[2], t.run_p[3],
           CASE WHEN k.minute = sampled THEN coalesce(d.scheduled, 0) END,
           CASE WHEN k.minute = sampled THEN coalesce(d.queued, 0) END,
           CASE WHEN k.minute = sampled THEN coalesce(d.running, 0) END,
           CASE WHEN k.minute = sampled THEN coalesce(d.retrying, 0) END,
           CASE WHEN k.minute = sampled THEN coalesce(d.blocked, 0) END,
           d.oldest_age
    FROM keys AS k
    LEFT JOIN timing AS t USING (minute, queue, task)
    LEFT JOIN flow AS f USING (minute, queue, task)
    LEFT JOIN depth AS d USING (minute, queue, task);

    INSERT INTO {schema}.stats_totals AS t
        (queue, task, enqueued, succeeded, dead, cancelled, failed, timed, wait_sum, run_sum)
    SELECT queue, task, sum(enqueued), sum(succeeded), sum(dead), sum(cancelled), sum(failed), sum(timed),
           sum(wait_sum), sum(run_sum)
    FROM {schema}.stats_minute
    WHERE minute >= lo AND minute < hi AND queue <> '*' AND task <> '*'
    GROUP BY queue, task
    ON CONFLICT (queue, task) DO UPDATE SET
        enqueued = t.enqueued + excluded.enqueued, succeeded = t.succeeded + excluded.succeeded,
        dead = t.dead + excluded.dead, cancelled = t.cancelled + excluded.cancelled,
        failed = t.failed + excluded.failed, timed = t.timed + excluded.timed,
        wait_sum = t.wait_sum + excluded.wait_sum, run_sum = t.run_sum + excluded.run_sum;

    DELETE FROM {schema}.stats_minute WHERE minute < hi - keep;
    UPDATE {schema}.stats_state SET rolled_until = hi, since = coalesce(since, lo);
    RETURN (extract(epoch FROM hi - lo) / 60)::integer;
END
$function$;

CREATE OR REPLACE FUNCTION {schema}.webhook_create(p_id bigint, p_url text, p_events text[], p_actions text[], p_queue text, p_task text, p_queue_like text, p_task_like text, p_secret jsonb, p_hint text, p_max_attempts integer, p_timeout double precision, p_description text, p_enabled boolean, p_now timestamp with time zone)
 RETURNS bigint
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    PERFORM FROM {schema}.event_routes FOR UPDATE;
    IF p_enabled AND {schema}.event_level(p_actions) > (SELECT level FROM {schema}.audit_config) THEN
        RAISE EXCEPTION 'pageq.invalid:these events need the audit level %',
            CASE {schema}.event_level(p_actions) WHEN 2 THEN 'full' ELSE 'actions' END;
    END IF;
    INSERT INTO {schema}.webhooks (id, url, events, actions, queue_pattern, task_pattern, queue_like, task_like,
                                   secret, hint, enabled, max_attempts, timeout, description, created_at,
                                   updated_at)
    VALUES (p_id, p_url, p_events, p_actions, p_queue, p_task, p_queue_like, p_task_like, p_secret, p_hint,
            p_enabled, p_max_attempts, p_timeout, p_description, p_now, p_now);
    PERFORM {schema}.events_sync(p_now);
    PERFORM pg_notify('{channel}', '!webhooks') WHERE p_enabled;  -- workers start serving deliveries
    INSERT INTO {schema}.audit (db_role, action, detail)
    VALUES (session_user, 'webhook.create', jsonb_build_object('webhook', p_id, 'url', p_url, 'events', p_events));
    RETURN p_id;
END
$function$;

CREATE OR REPLACE FUNCTION {schema}.webhook_delete(p_id bigint, p_now timestamp with time zone)
 RETURNS boolean
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    PERFORM FROM {schema}.event_routes FOR UPDATE;
    DELETE FROM {schema}.webhooks WHERE id = p_id;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM {schema}.events_sync(p_now);
    INSERT INTO {schema}.audit (db_role, action, detail)
    VALUES (session_user, 'webhook.delete', jsonb_build_object('webhook', p_id));
    RETURN true;
END
$function$;

CREATE OR REPLACE FUNCTION {schema}.webhook_rotate(p_id bigint, p_secret jsonb, p_hint text, p_old_until timestamp with time zone, p_now timestamp with time zone)
 RETURNS boolean
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
BEGIN
    UPDATE {schema}.webhooks
    SET old_secret = CASE WHEN p_old_until > p_now THEN secret END,
        old_until = CASE WHEN p_old_until > p_now THEN p_old_until END,
        secret = p_secret, hint = p_hint, updated_at = p_now
    WHERE id = p_id;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO {schema}.audit (db_role, action, detail)
    VALUES (session_user, 'webhook.rotate', jsonb_build_object('webhook', p_id, 'old_until', p_old_until));
    RETURN true;
END
$function$;

CREATE OR REPLACE FUNCTION {schema}.webhook_set_enabled(p_id bigint, p_enabled boolean, p_now timestamp with time zone)
 RETURNS boolean
 LANGUAGE plpgsql
 SECURITY DEFINER
 SET search_path TO 'pg_catalog', 'pg_temp'
AS $function$
DECLARE
    v_actions text[];
BEGIN
    PERFORM FROM {schema}.event_routes FOR UPDATE;
    UPDATE {schema}.webhooks SET enabled = p_enabled, updated_at = p_now WHERE id = p_id
    RETURNING actions INTO v_actions;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF p_enabled AND {schema}.event_level(v_actions) > (SELECT level FROM {schema}.audit_config) THEN
        RAISE EXCEPTION 'pageq.invalid:webhook % needs the audit level %', p_id,
            CASE {schema}.event_level(v_actions) WHEN 2 THEN 'full' ELSE 'actions' END;
    END IF;
    PERFORM {schema}.events_sync(p_now);
    PERFORM pg_notify('{channel}', '!webhooks') WHERE p_enabled;
    INSERT INTO {schema}.audit (db_role, action, detail)
    VALUES (session_user, CASE WHEN p_enabled THEN 'webhook.enable' ELSE 'webhook.disable' END,
            jsonb_build_object('webhook', p_id));
    RETURN true;
END
$function$;
