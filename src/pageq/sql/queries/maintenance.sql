-- Leader-only maintenance: election, rescuer, scheduler, pruner; worker registry.

-- name: leader_acquire
-- Take or renew the named leadership when free, expired or already ours; returns a row if we hold it.
-- With `try_lock` (a dedicated session not yet holding it), also try the leadership's session-level advisory
-- lock, which the leader's session holds for its whole term: getting it means that session is gone (its
-- process died), so the term is taken over at once instead of after its TTL. Run first in each transaction
-- of a leader's maintenance step: the row lock it takes makes a candidate's acquire wait for the step's
-- transaction, so two terms never run maintenance at the same time; the transaction ends within `idle_ms`
-- of its client going silent (a leader cut off mid-step does not hold the row for ever).
-- Returns (holder, whether this call took the advisory lock, the server's clock in epoch seconds).
WITH lock AS (
    SELECT CASE WHEN %(try_lock)s
                THEN pg_try_advisory_lock(hashtextextended('{schema}.leader:' || %(name)s, 0))
                ELSE false END AS gone
)
INSERT INTO {schema}.leader AS l (name, holder, expires_at)
VALUES (%(name)s, %(holder)s, %(now)s + make_interval(secs => %(ttl)s))
ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE l.holder = excluded.holder OR l.expires_at < %(now)s OR (SELECT gone FROM lock)
RETURNING holder, (SELECT gone FROM lock), extract(epoch FROM clock_timestamp())::float8,
          set_config('idle_in_transaction_session_timeout', %(idle_ms)s, true);

-- name: leader_unlock
-- Let go of the leadership's advisory lock (a session that lost its term to another).
SELECT pg_advisory_unlock(hashtextextended('{schema}.leader:' || %(name)s, 0));

-- name: leader_release
-- Give up leadership (on shutdown) so another worker takes over at once.
DELETE FROM {schema}.leader WHERE name = %(name)s AND holder = %(holder)s;

-- name: rescue
-- Jobs whose lease expired (their worker died): retry them, or bury them when attempts are spent or their
-- worker vanished `crash_limit` times (a poison pill: reason worker_crash). Each rescue counts a crash.
-- A retried job keeps its run_at (due already): it goes back to its place in the queue, not to the end.
WITH expired AS (
    SELECT id FROM {schema}.jobs
    WHERE state = 'running' AND lease_expires_at < %(now)s
    ORDER BY lease_expires_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), retried AS (
    UPDATE {schema}.jobs AS j
    SET state = 'retrying', lease_token = NULL, lease_expires_at = NULL, crashes = j.crashes + 1,
        errors = j.errors || jsonb_build_array(jsonb_build_object(
            'attempt', j.attempts, 'error', 'LeaseExpired: the worker stopped heartbeating',
            'reason', 'lease_expired', 'traceback', NULL, 'worker', j.worker, 'at', %(now)s))
    FROM expired
    WHERE j.id = expired.id AND j.attempts < j.max_attempts AND j.crashes + 1 < %(crash_limit)s
    RETURNING j.id, j.queue, j.task
), dead AS (
    DELETE FROM {schema}.jobs AS j
    USING expired
    WHERE j.id = expired.id AND (j.attempts >= j.max_attempts OR j.crashes + 1 >= %(crash_limit)s)
    RETURNING j.*
), buried AS (
    INSERT INTO {schema}.finished_jobs
        (id, task, queue, args, state, priority, run_at, attempts, max_attempts, timeout,
         lease_token, worker, created_at, started_at, finished_at, result, errors)
    SELECT id, task, queue, args, 'dead', priority, run_at, attempts, max_attempts, timeout,
           lease_token, worker, created_at, started_at, %(now)s, NULL,
           errors || jsonb_build_array(CASE WHEN crashes + 1 >= %(crash_limit)s
               THEN jsonb_build_object(
                   'attempt', attempts, 'reason', 'worker_crash', 'traceback', NULL, 'worker', worker,
                   'at', %(now)s, 'error', format(
                       'WorkerCrash: its worker vanished %%s times while running it', crashes + 1))
               ELSE jsonb_build_object(
                   'attempt', attempts, 'error', 'LeaseExpired: the worker stopped heartbeating',
                   'reason', 'lease_expired', 'traceback', NULL, 'worker', worker, 'at', %(now)s)
               END)
    FROM dead
    RETURNING id, queue, task, errors -> -1 ->> 'reason' AS reason
), audited AS (
    INSERT INTO {schema}.audit (action, job_id, queue, task, reason)
    SELECT * FROM (
        SELECT 'rescue', id, queue, task, 'lease expired' FROM retried
        UNION ALL
        SELECT 'bury', id, queue, task, CASE reason WHEN 'worker_crash' THEN 'worker crash' ELSE 'lease expired' END
        FROM buried
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
-- Announce a worker, or refresh its heartbeat (and its queues: it may take on the webhook deliveries' queue).
INSERT INTO {schema}.workers AS w (id, host, pid, queues, concurrency, started_at, last_seen_at)
VALUES (%(id)s, %(host)s, %(pid)s, %(queues)s, %(concurrency)s, %(now)s, %(now)s)
ON CONFLICT (id) DO UPDATE SET last_seen_at = excluded.last_seen_at, queues = excluded.queues;

-- name: worker_deregister
-- Remove a worker that stopped, and any whose heartbeat is long gone.
DELETE FROM {schema}.workers WHERE id = %(id)s OR last_seen_at < %(stale_before)s;

-- name: listen
-- Subscribe this session to job announcements of the schema.
LISTEN {channel};

-- name: durability_settings
-- The server settings that decide whether a committed job survives a crash of the server or its machine.
SELECT current_setting('fsync'), current_setting('synchronous_commit');

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
