-- pageq initial schema. The placeholder {schema} is replaced by the configured schema name.
-- Live jobs stay in `jobs` (kept small: claims scan it); finished jobs move to `finished_jobs`.

CREATE SEQUENCE {schema}.job_id_seq;

CREATE TABLE {schema}.jobs (
    id               bigint PRIMARY KEY DEFAULT nextval('{schema}.job_id_seq'),
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
    CONSTRAINT jobs_state_check CHECK (state IN ('scheduled', 'queued', 'running', 'retrying')),
    CONSTRAINT jobs_attempts_check CHECK (attempts >= 0 AND max_attempts >= 1),
    CONSTRAINT jobs_lease_check CHECK ((state = 'running') = (lease_token IS NOT NULL))
) WITH (fillfactor = 80, autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_cost_delay = 0,
        autovacuum_analyze_scale_factor = 0.02);

-- What workers scan: runnable jobs of a queue in claim order.
CREATE INDEX jobs_claim_idx ON {schema}.jobs (queue, priority DESC, run_at, id)
    WHERE state IN ('scheduled', 'queued', 'retrying');
-- What the rescuer scans: running jobs by lease expiry.
CREATE INDEX jobs_lease_idx ON {schema}.jobs (lease_expires_at) WHERE state = 'running';

CREATE TABLE {schema}.finished_jobs (
    id               bigint      PRIMARY KEY,
    task             text        NOT NULL,
    queue            text        NOT NULL,
    args             jsonb       NOT NULL,
    state            text        NOT NULL,
    priority         smallint    NOT NULL,
    run_at           timestamptz NOT NULL,
    attempts         integer     NOT NULL,
    max_attempts     integer     NOT NULL,
    timeout          double precision,
    lease_token      uuid,
    worker           text,
    created_at       timestamptz NOT NULL,
    started_at       timestamptz,
    finished_at      timestamptz NOT NULL,
    result           jsonb,
    errors           jsonb       NOT NULL DEFAULT '[]',
    CONSTRAINT finished_jobs_state_check CHECK (state IN ('succeeded', 'dead', 'cancelled'))
);

-- The dead-letter queue (small: succeeded jobs, the bulk of the table, are not in it).
CREATE INDEX finished_jobs_failed_idx ON {schema}.finished_jobs (state, finished_at)
    WHERE state IN ('dead', 'cancelled');
-- Recent history (throughput, timings, pruning): finish times grow with the table, so BRIN is tiny
-- and nearly free to maintain on the completion hot path.
CREATE INDEX finished_jobs_finished_brin ON {schema}.finished_jobs USING brin (finished_at);

-- Leader election for maintenance (rescuer, scheduler): one row, renewed by its holder.
CREATE TABLE {schema}.leader (
    name       text PRIMARY KEY,
    holder     text        NOT NULL,
    expires_at timestamptz NOT NULL
);

-- Running workers and their heartbeats, for `pageq status` and the rescuer's logs.
CREATE TABLE {schema}.workers (
    id           text PRIMARY KEY,
    host         text        NOT NULL,
    pid          integer     NOT NULL,
    queues       text[]      NOT NULL,
    concurrency  integer     NOT NULL,
    started_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL
);
