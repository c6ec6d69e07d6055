-- Live jobs in two rotating partitions (PgQ's answer to the xmin-horizon trap).
-- Finished jobs leave dead tuples behind in `jobs`; VACUUM cannot remove them while any transaction older
-- than them is open (a long report, an idle-in-transaction session), and claims then wade through them.
-- New jobs go to the partition named by `rotation.slot`; once enough jobs went through it, the leader
-- switches new jobs to the other partition, after moving that one's few live leftovers out and TRUNCATEing
-- it: TRUNCATE drops dead tuples whatever the oldest snapshot. Any slot value is correct for a job (the
-- move under an ACCESS EXCLUSIVE lock takes whatever is there), the current one is only the cheapest.

CREATE TABLE {schema}.rotation (
    one        boolean     PRIMARY KEY DEFAULT true CHECK (one),
    slot       smallint    NOT NULL CHECK (slot IN (0, 1)),
    rotated_at timestamptz NOT NULL,
    last_id    bigint      NOT NULL  -- job_id_seq's value at the last rotation
);
INSERT INTO {schema}.rotation (slot, rotated_at, last_id) VALUES (0, now(), 0);

-- The partition new jobs should go to, for writers that do not pass it (the hot paths do, once per batch).
CREATE FUNCTION {schema}.current_slot() RETURNS smallint
LANGUAGE sql STABLE AS $$ SELECT slot FROM {schema}.rotation $$;

ALTER TABLE {schema}.jobs RENAME TO jobs_0001;
ALTER INDEX {schema}.jobs_pkey RENAME TO jobs_0001_pkey;
ALTER INDEX {schema}.jobs_claim_idx RENAME TO jobs_0001_claim_idx;
ALTER INDEX {schema}.jobs_lease_idx RENAME TO jobs_0001_lease_idx;

CREATE TABLE {schema}.jobs (
    id               bigint      NOT NULL DEFAULT nextval('{schema}.job_id_seq'),
    task             text        NOT NULL,
    queue            text        NOT NULL,
    args             jsonb       NOT NULL,
    state            text        NOT NULL,
    priority         smallint    NOT NULL DEFAULT 0,
    run_at           timestamptz NOT NULL,
    attempts         integer     NOT NULL DEFAULT 0,
    max_attempts     integer     NOT NULL,
    timeout          double precision,
    lease_token      uuid,
    lease_expires_at timestamptz,
    worker           text,
    created_at       timestamptz NOT NULL,
    started_at       timestamptz,
    errors           jsonb       NOT NULL DEFAULT '[]',
    slot             smallint    NOT NULL DEFAULT {schema}.current_slot(),
    CONSTRAINT jobs_pkey PRIMARY KEY (id, slot),
    CONSTRAINT jobs_state_check CHECK (state IN ('scheduled', 'queued', 'running', 'retrying')),
    CONSTRAINT jobs_attempts_check CHECK (attempts >= 0 AND max_attempts >= 1),
    CONSTRAINT jobs_lease_check CHECK ((state = 'running') = (lease_token IS NOT NULL))
) PARTITION BY LIST (slot);

CREATE TABLE {schema}.jobs_p0 PARTITION OF {schema}.jobs FOR VALUES IN (0)
    WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_cost_delay = 0,
          autovacuum_analyze_scale_factor = 0.02);
CREATE TABLE {schema}.jobs_p1 PARTITION OF {schema}.jobs FOR VALUES IN (1)
    WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_cost_delay = 0,
          autovacuum_analyze_scale_factor = 0.02);

-- What workers scan: runnable jobs of a queue in claim order.
CREATE INDEX jobs_claim_idx ON {schema}.jobs (queue, priority DESC, run_at, id)
    WHERE state IN ('scheduled', 'queued', 'retrying');
-- What the rescuer scans: running jobs by lease expiry.
CREATE INDEX jobs_lease_idx ON {schema}.jobs (lease_expires_at) WHERE state = 'running';

INSERT INTO {schema}.jobs
    (id, task, queue, args, state, priority, run_at, attempts, max_attempts, timeout, lease_token,
     lease_expires_at, worker, created_at, started_at, errors, slot)
SELECT id, task, queue, args, state, priority, run_at, attempts, max_attempts, timeout, lease_token,
       lease_expires_at, worker, created_at, started_at, errors, 0
FROM {schema}.jobs_0001;
DROP TABLE {schema}.jobs_0001;

-- Switch new jobs to the other partition when at least `min_jobs` were enqueued since the last switch, or
-- `max_age` passed with any enqueued, after moving that partition's live jobs (at most `max_move`) into the
-- current one and truncating it. Returns the number of jobs moved, or NULL when it did not rotate (too
-- early, too many live jobs left to move). Raises lock_not_available when a transaction holds that
-- partition longer than `wait`: the caller tries again later.
CREATE FUNCTION {schema}.rotate(min_jobs bigint, max_age interval, max_move bigint, wait text)
RETURNS bigint LANGUAGE plpgsql AS $$
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
$$;
