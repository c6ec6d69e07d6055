-- The pageq schema as the migrations build it, read from the catalogs (src/pageq/store/schema_dump.py).
-- Do not edit: regenerate with `python scripts/dump_schema.py > src/pageq/sql/schema.sql`.
-- tests/test_schema.py checks that the migrations produce exactly this. {schema} is the schema name.

-- Migrations: 0001_initial, 0002_rotation, 0006_history

CREATE SEQUENCE {schema}.job_id_seq AS bigint START 1 INCREMENT 1 MINVALUE 1 MAXVALUE 9223372036854775807 CACHE 1;

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

CREATE TABLE {schema}.history (
    one boolean NOT NULL DEFAULT true,
    period interval NOT NULL,
    CONSTRAINT history_one_check CHECK (one),
    CONSTRAINT history_period_check CHECK ((period >= '00:00:01'::interval)),
    CONSTRAINT history_pkey PRIMARY KEY (one)
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
    CONSTRAINT jobs_attempts_check CHECK (((attempts >= 0) AND (max_attempts >= 1))),
    CONSTRAINT jobs_lease_check CHECK (((state = 'running'::text) = (lease_token IS NOT NULL))),
    CONSTRAINT jobs_pkey PRIMARY KEY (id, slot),
    CONSTRAINT jobs_state_check CHECK ((state = ANY (ARRAY['scheduled'::text, 'queued'::text, 'running'::text, 'retrying'::text])))
) PARTITION BY LIST (slot);
CREATE INDEX jobs_claim_idx ON ONLY {schema}.jobs USING btree (queue, priority DESC, run_at, id) WHERE (state = ANY (ARRAY['scheduled'::text, 'queued'::text, 'retrying'::text]));
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
    CONSTRAINT jobs_attempts_check CHECK (((attempts >= 0) AND (max_attempts >= 1))),
    CONSTRAINT jobs_lease_check CHECK (((state = 'running'::text) = (lease_token IS NOT NULL))),
    CONSTRAINT jobs_p0_pkey PRIMARY KEY (id, slot),
    CONSTRAINT jobs_state_check CHECK ((state = ANY (ARRAY['scheduled'::text, 'queued'::text, 'running'::text, 'retrying'::text])))
) WITH (autovacuum_analyze_scale_factor=0.02, autovacuum_vacuum_cost_delay=0, autovacuum_vacuum_scale_factor=0.01, fillfactor=80);
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
    CONSTRAINT jobs_attempts_check CHECK (((attempts >= 0) AND (max_attempts >= 1))),
    CONSTRAINT jobs_lease_check CHECK (((state = 'running'::text) = (lease_token IS NOT NULL))),
    CONSTRAINT jobs_p1_pkey PRIMARY KEY (id, slot),
    CONSTRAINT jobs_state_check CHECK ((state = ANY (ARRAY['scheduled'::text, 'queued'::text, 'running'::text, 'retrying'::text])))
) WITH (autovacuum_analyze_scale_factor=0.02, autovacuum_vacuum_cost_delay=0, autovacuum_vacuum_scale_factor=0.01, fillfactor=80);
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

CREATE TABLE {schema}.rotation (
    one boolean NOT NULL DEFAULT true,
    slot smallint NOT NULL,
    rotated_at timestamp with time zone NOT NULL,
    last_id bigint NOT NULL,
    CONSTRAINT rotation_one_check CHECK (one),
    CONSTRAINT rotation_pkey PRIMARY KEY (one),
    CONSTRAINT rotation_slot_check CHECK ((slot = ANY (ARRAY[0, 1])))
);

CREATE TABLE {schema}.workers (
    id text NOT NULL,
    host text NOT NULL,
    pid integer NOT NULL,
    queues text[] NOT NULL,
    concurrency integer NOT NULL,
    started_at timestamp with time zone NOT NULL,
    last_seen_at timestamp with time zone NOT NULL,
    CONSTRAINT workers_pkey PRIMARY KEY (id)
);

CREATE OR REPLACE FUNCTION {schema}.current_slot()
 RETURNS smallint
 LANGUAGE sql
 STABLE
AS $function$ SELECT slot FROM {schema}.rotation $function$;

CREATE OR REPLACE FUNCTION {schema}.history_drop(before timestamp with time zone, wait text)
 RETURNS integer
 LANGUAGE plpgsql
AS $function$
DECLARE
    part    record;
    dropped integer := 0;
BEGIN
    PERFORM set_config('lock_timeout', wait, true);
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
    SELECT * INTO rot FROM {schema}.rotation FOR UPDATE;
    SELECT CASE WHEN is_called THEN last_value ELSE 0 END INTO newest FROM {schema}.job_id_seq;
    IF newest - rot.last_id < min_jobs
       AND (newest = rot.last_id OR clock_timestamp() - rot.rotated_at < max_age) THEN
        RETURN NULL;
    END IF;
    old := 1 - rot.slot;
    PERFORM set_config('lock_timeout', wait, true);
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
