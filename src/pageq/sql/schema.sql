-- The pageq schema as the migrations build it, read from the catalogs (src/pageq/store/schema_dump.py).
-- Do not edit: regenerate with `python scripts/dump_schema.py > src/pageq/sql/schema.sql`.
-- tests/test_schema.py checks that the migrations produce exactly this. {schema} is the schema name.

-- Migrations: 0001_initial, 0002_rotation, 0004_security, 0006_history

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

CREATE TABLE {schema}.principals (
    name text NOT NULL,
    created_at timestamp with time zone NOT NULL DEFAULT now(),
    disabled_at timestamp with time zone,
    note text,
    CONSTRAINT principals_pkey PRIMARY KEY (name)
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

CREATE OR REPLACE FUNCTION {schema}.refuse_change()
 RETURNS trigger
 LANGUAGE plpgsql
AS $function$
BEGIN
    RAISE EXCEPTION 'pageq: % on %.% is refused: the audit trail is append-only',
        TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
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
