-- Security: principals, API tokens (hashes only), grants, the append-only audit trail and its sealed
-- hash chain, and row-level security on the job tables (the owner passes through a `true` policy; the
-- restricted roles that `pageq db-roles setup` creates get policies that consult the grants).

CREATE TABLE {schema}.principals (
    name        text PRIMARY KEY,
    created_at  timestamptz NOT NULL DEFAULT now(),
    disabled_at timestamptz,
    note        text
);

-- Tokens are looked up by the SHA-256 of the token; the token itself is shown once and never stored.
CREATE TABLE {schema}.tokens (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    hash       bytea       NOT NULL UNIQUE,
    principal  text        NOT NULL REFERENCES {schema}.principals (name) ON DELETE CASCADE,
    hint       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz
);

-- Glob patterns (`*` only) with their LIKE equivalents, which the policies of restricted roles use.
CREATE TABLE {schema}.grants (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    principal     text        NOT NULL REFERENCES {schema}.principals (name) ON DELETE CASCADE,
    action        text        NOT NULL CHECK (action IN ('*', 'enqueue', 'work', 'read', 'manage')),
    queue_pattern text        NOT NULL,
    task_pattern  text        NOT NULL,
    allow         boolean     NOT NULL,
    queue_like    text        NOT NULL,
    task_like     text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX grants_principal_idx ON {schema}.grants (principal);

-- Database login roles and the principal whose grants row-level security applies to them.
CREATE TABLE {schema}.db_roles (
    role      text PRIMARY KEY,
    principal text NOT NULL REFERENCES {schema}.principals (name) ON DELETE CASCADE,
    kind      text NOT NULL CHECK (kind IN ('producer', 'worker', 'admin'))
);

-- Audit granularity: 0 off (security administration and denials only), 1 actions, 2 full (transitions).
CREATE TABLE {schema}.audit_config (
    singleton boolean  PRIMARY KEY DEFAULT true CHECK (singleton),
    level     smallint NOT NULL DEFAULT 2 CHECK (level BETWEEN 0 AND 2)
);
INSERT INTO {schema}.audit_config DEFAULT VALUES;

-- The audit trail: append-only. `xid` (the writing transaction) lets the sealer take exactly the rows of
-- transactions that have ended, so concurrent writers never serialise on one chain.
CREATE TABLE {schema}.audit (
    id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    xid       bigint      NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    at        timestamptz NOT NULL DEFAULT now(),
    db_role   text        NOT NULL DEFAULT current_user,
    principal text        DEFAULT nullif(current_setting('pageq.principal', true), ''),
    action    text        NOT NULL,
    decision  text        NOT NULL DEFAULT 'allow' CHECK (decision IN ('allow', 'deny')),
    reason    text,
    job_id    bigint,
    queue     text,
    task      text,
    detail    jsonb
);
CREATE INDEX audit_xid_brin ON {schema}.audit USING brin (xid);
CREATE INDEX audit_at_brin ON {schema}.audit USING brin (at);

-- Checkpoints: each seals the rows of a range of ended transactions, chained to the previous digest.
CREATE TABLE {schema}.audit_seals (
    seq         bigint PRIMARY KEY,
    from_xid    bigint      NOT NULL,
    to_xid      bigint      NOT NULL,
    ids         bigint[]    NOT NULL,
    hashes      bytea       NOT NULL,
    prev_digest bytea       NOT NULL,
    digest      bytea       NOT NULL,
    sealed_at   timestamptz NOT NULL DEFAULT now(),
    sealed_by   text
);

-- The canonical hash of an audit row (independent of the session's time zone and of NULL placement).
CREATE FUNCTION {schema}.audit_row_hash(a {schema}.audit) RETURNS bytea
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT sha256(convert_to(concat_ws('|', a.id, a.xid, (extract(epoch FROM a.at) * 1000000)::bigint,
        quote_nullable(a.db_role), quote_nullable(a.principal), quote_nullable(a.action),
        quote_nullable(a.decision), quote_nullable(a.reason), quote_nullable(a.job_id),
        quote_nullable(a.queue), quote_nullable(a.task), quote_nullable(a.detail::text)), 'UTF8'))
$$;

CREATE FUNCTION {schema}.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'pageq: % on %.% is refused: the audit trail is append-only',
        TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON {schema}.audit
    FOR EACH ROW EXECUTE FUNCTION {schema}.refuse_change();
CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON {schema}.audit
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.refuse_change();
CREATE TRIGGER seals_append_only BEFORE UPDATE OR DELETE ON {schema}.audit_seals
    FOR EACH ROW EXECUTE FUNCTION {schema}.refuse_change();
CREATE TRIGGER seals_no_truncate BEFORE TRUNCATE ON {schema}.audit_seals
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.refuse_change();
REVOKE UPDATE, DELETE, TRUNCATE ON {schema}.audit, {schema}.audit_seals FROM PUBLIC, CURRENT_USER;

-- Whether the principal mapped to a database role may do any of `actions` on a job: deny by default,
-- a matching deny beats an allow (per action). Used by the policies of restricted roles.
CREATE FUNCTION {schema}.acl_allows(who text, actions text[], q text, t text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
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
$$;

-- Row-level security for every role but the owner. It is not FORCEd on the job tables: PostgreSQL refuses
-- COPY FROM into a table whose row security applies to the session, and the owner (who enqueues big batches
-- with COPY) could switch it off anyway. The owner's policies are `true` (no per-row cost) should it be forced.
ALTER TABLE {schema}.jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE {schema}.finished_jobs ENABLE ROW LEVEL SECURITY;
ALTER TABLE {schema}.audit ENABLE ROW LEVEL SECURITY;
ALTER TABLE {schema}.audit FORCE ROW LEVEL SECURITY;
DO $$
BEGIN
    EXECUTE format('CREATE POLICY owner_all ON {schema}.jobs TO %I USING (true) WITH CHECK (true)', current_user);
    EXECUTE format('CREATE POLICY owner_all ON {schema}.finished_jobs TO %I USING (true) WITH CHECK (true)',
                   current_user);
    EXECUTE format('CREATE POLICY owner_all ON {schema}.audit TO %I USING (true) WITH CHECK (true)', current_user);
END
$$;

-- Restricted database roles (needs CREATEROLE): `<schema>_producer`, `<schema>_worker`, `<schema>_admin`
-- groups with the privileges of their kind and policies that consult the grants of the principal mapped
-- to the login role (`db_roles`). No role gets privileges on anything else (partitions included).
CREATE FUNCTION {schema}.setup_db_roles() RETURNS void LANGUAGE plpgsql AS $$
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
$$;

-- A login role for a principal, member of the group of its kind; RLS applies that principal's grants.
CREATE FUNCTION {schema}.create_db_login(who text, kind text, secret text) RETURNS text
LANGUAGE plpgsql AS $$
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
$$;

-- Drop the roles of this schema (called before the schema itself is dropped: roles are cluster-wide).
CREATE FUNCTION {schema}.drop_db_roles() RETURNS integer LANGUAGE plpgsql AS $$
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
$$;
