-- Leader-only maintenance: election, rescuer, scheduler, pruner; worker registry.

-- name: leader_acquire
-- Take or renew the named leadership when free, expired or already ours; returns a row if we hold it.
INSERT INTO {schema}.leader AS l (name, holder, expires_at)
VALUES (%(name)s, %(holder)s, %(now)s + make_interval(secs => %(ttl)s))
ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE l.holder = excluded.holder OR l.expires_at < %(now)s
RETURNING holder;

-- name: leader_release
-- Give up leadership (on shutdown) so another worker takes over at once.
DELETE FROM {schema}.leader WHERE name = %(name)s AND holder = %(holder)s;

-- name: rescue
-- Jobs whose lease expired (their worker died): retry them, or bury them when attempts are spent.
WITH expired AS (
    SELECT id FROM {schema}.jobs
    WHERE state = 'running' AND lease_expires_at < %(now)s
    ORDER BY lease_expires_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), retried AS (
    UPDATE {schema}.jobs AS j
    SET state = 'retrying', run_at = %(now)s, lease_token = NULL, lease_expires_at = NULL,
        errors = j.errors || jsonb_build_array(jsonb_build_object(
            'attempt', j.attempts, 'error', 'LeaseExpired: the worker stopped heartbeating',
            'traceback', NULL, 'worker', j.worker, 'at', %(now)s))
    FROM expired
    WHERE j.id = expired.id AND j.attempts < j.max_attempts
    RETURNING j.id, j.queue, j.task
), dead AS (
    DELETE FROM {schema}.jobs AS j
    USING expired
    WHERE j.id = expired.id AND j.attempts >= j.max_attempts
    RETURNING j.*
), buried AS (
    INSERT INTO {schema}.finished_jobs
        (id, task, queue, args, state, priority, run_at, attempts, max_attempts, timeout,
         lease_token, worker, created_at, started_at, finished_at, result, errors)
    SELECT id, task, queue, args, 'dead', priority, run_at, attempts, max_attempts, timeout,
           lease_token, worker, created_at, started_at, %(now)s, NULL,
           errors || jsonb_build_array(jsonb_build_object(
               'attempt', attempts, 'error', 'LeaseExpired: the worker stopped heartbeating',
               'traceback', NULL, 'worker', worker, 'at', %(now)s))
    FROM dead
    RETURNING id, queue, task
), audited AS (
    INSERT INTO {schema}.audit (action, job_id, queue, task, reason)
    SELECT * FROM (
        SELECT 'rescue', id, queue, task, 'lease expired' FROM retried
        UNION ALL SELECT 'bury', id, queue, task, 'lease expired' FROM buried
    ) AS moved
    WHERE (SELECT level FROM {schema}.audit_config) >= 2
)
SELECT (SELECT count(*) FROM retried), (SELECT count(*) FROM buried);

-- name: promote
-- Scheduled and retrying jobs whose time has come become queued (claims take them either way).
UPDATE {schema}.jobs SET state = 'queued'
WHERE id IN (
    SELECT id FROM {schema}.jobs
    WHERE state IN ('scheduled', 'retrying') AND run_at <= %(now)s
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
);

-- name: prune
-- Delete finished jobs of a state that finished before a cut-off, in bounded batches.
DELETE FROM {schema}.finished_jobs
WHERE id IN (
    SELECT id FROM {schema}.finished_jobs
    WHERE state = %(state)s AND finished_at < %(before)s
    LIMIT %(limit)s
);

-- name: worker_register
-- Announce a worker, or refresh its heartbeat.
INSERT INTO {schema}.workers AS w (id, host, pid, queues, concurrency, started_at, last_seen_at)
VALUES (%(id)s, %(host)s, %(pid)s, %(queues)s, %(concurrency)s, %(now)s, %(now)s)
ON CONFLICT (id) DO UPDATE SET last_seen_at = excluded.last_seen_at;

-- name: worker_deregister
-- Remove a worker that stopped, and any whose heartbeat is long gone.
DELETE FROM {schema}.workers WHERE id = %(id)s OR last_seen_at < %(stale_before)s;

-- name: listen
-- Subscribe this session to job announcements of the schema.
LISTEN {channel};

-- name: stats_stale
-- Whether the jobs table changed so much since its last ANALYZE that the claim plan may be wrong
-- (a bulk load into an empty table: autovacuum may take a minute, and meanwhile the planner sorts the
-- whole backlog on every claim).
SELECT coalesce(sum(n_mod_since_analyze) > greatest(%(floor)s, 2 * sum(n_live_tup) / 3), false)
FROM pg_stat_user_tables WHERE schemaname = %(schema)s AND relname IN ('jobs_p0', 'jobs_p1');

-- name: analyze_jobs
-- Refresh the planner's statistics of the jobs table.
ANALYZE {schema}.jobs;

-- name: rotate
-- Switch new jobs to the other partition of `jobs` and truncate it, when due (see 0002_rotation.sql);
-- returns the number of live jobs moved, NULL when it did not rotate.
SELECT {schema}.rotate(%(min_jobs)s, make_interval(secs => %(max_age)s), %(max_move)s, %(wait)s);

-- name: history_prepare
-- Create the history partitions from the current period to `ahead` periods later (see 0006_history.sql).
SELECT {schema}.history_prepare(%(now)s, %(ahead)s);

-- name: history_drop
-- Drop the history partitions that ended before the retention cut-off, keeping their dead jobs.
SELECT {schema}.history_drop(%(before)s, %(wait)s);
