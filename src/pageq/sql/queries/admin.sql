-- Reads and operator actions: inspect, list, cancel, requeue, purge, statistics.
-- Job rows are returned with the columns: id, task, queue, args, state, priority, attempts,
-- max_attempts, run_at, created_at, started_at, finished_at, worker, result, errors, timeout, lease_token.

-- name: job_get
-- One job by id, live or finished.
SELECT id, task, queue, args, state, priority, attempts, max_attempts, run_at, created_at,
       started_at, NULL::timestamptz, worker, NULL::jsonb, errors, timeout, lease_token
FROM {schema}.jobs WHERE id = %(id)s
UNION ALL
SELECT id, task, queue, args, state, priority, attempts, max_attempts, run_at, created_at,
       started_at, finished_at, worker, result, errors, timeout, lease_token
FROM {schema}.finished_jobs WHERE id = %(id)s;

-- name: jobs_list
-- Newest jobs first, filtered by state, queue, task, creation time [since, until), a search text (digits:
-- the id; else a part, in any case, of the task, worker, arguments or errors) and, for the next page, ids
-- below `before_id` (NULL means any).
(SELECT id, task, queue, args, state, priority, attempts, max_attempts, run_at, created_at,
        started_at, NULL::timestamptz, worker, NULL::jsonb, errors, timeout, lease_token
 FROM {schema}.jobs
 WHERE (%(states)s::text[] IS NULL OR state = ANY(%(states)s::text[]))
   AND (%(queue)s::text IS NULL OR queue = %(queue)s) AND (%(task)s::text IS NULL OR task = %(task)s)
   AND (%(before_id)s::int8 IS NULL OR id < %(before_id)s)
   AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s)
   AND (%(until)s::timestamptz IS NULL OR created_at < %(until)s)
   AND (%(search)s::text IS NULL OR id::text = %(search)s
        OR (%(search)s !~ '^[0-9]+$'
            AND strpos(lower(concat_ws(E'\n', task, worker, args::text, errors::text)), lower(%(search)s)) > 0))
 ORDER BY id DESC LIMIT %(limit)s)
UNION ALL
(SELECT id, task, queue, args, state, priority, attempts, max_attempts, run_at, created_at,
        started_at, finished_at, worker, result, errors, timeout, lease_token
 FROM {schema}.finished_jobs
 WHERE (%(states)s::text[] IS NULL OR state = ANY(%(states)s::text[]))
   AND (%(queue)s::text IS NULL OR queue = %(queue)s) AND (%(task)s::text IS NULL OR task = %(task)s)
   AND (%(before_id)s::int8 IS NULL OR id < %(before_id)s)
   AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s)
   AND (%(until)s::timestamptz IS NULL OR created_at < %(until)s)
   AND (%(search)s::text IS NULL OR id::text = %(search)s
        OR (%(search)s !~ '^[0-9]+$'
            AND strpos(lower(concat_ws(E'\n', task, worker, args::text, errors::text)), lower(%(search)s)) > 0))
 ORDER BY id DESC LIMIT %(limit)s)
ORDER BY id DESC LIMIT %(limit)s;

-- name: jobs_list_oldest
-- jobs_list in the other order: oldest jobs first, and for the next page ids above `after_id`.
(SELECT id, task, queue, args, state, priority, attempts, max_attempts, run_at, created_at,
        started_at, NULL::timestamptz, worker, NULL::jsonb, errors, timeout, lease_token
 FROM {schema}.jobs
 WHERE (%(states)s::text[] IS NULL OR state = ANY(%(states)s::text[]))
   AND (%(queue)s::text IS NULL OR queue = %(queue)s) AND (%(task)s::text IS NULL OR task = %(task)s)
   AND (%(after_id)s::int8 IS NULL OR id > %(after_id)s)
   AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s)
   AND (%(until)s::timestamptz IS NULL OR created_at < %(until)s)
   AND (%(search)s::text IS NULL OR id::text = %(search)s
        OR (%(search)s !~ '^[0-9]+$'
            AND strpos(lower(concat_ws(E'\n', task, worker, args::text, errors::text)), lower(%(search)s)) > 0))
 ORDER BY id LIMIT %(limit)s)
UNION ALL
(SELECT id, task, queue, args, state, priority, attempts, max_attempts, run_at, created_at,
        started_at, finished_at, worker, result, errors, timeout, lease_token
 FROM {schema}.finished_jobs
 WHERE (%(states)s::text[] IS NULL OR state = ANY(%(states)s::text[]))
   AND (%(queue)s::text IS NULL OR queue = %(queue)s) AND (%(task)s::text IS NULL OR task = %(task)s)
   AND (%(after_id)s::int8 IS NULL OR id > %(after_id)s)
   AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s)
   AND (%(until)s::timestamptz IS NULL OR created_at < %(until)s)
   AND (%(search)s::text IS NULL OR id::text = %(search)s
        OR (%(search)s !~ '^[0-9]+$'
            AND strpos(lower(concat_ws(E'\n', task, worker, args::text, errors::text)), lower(%(search)s)) > 0))
 ORDER BY id LIMIT %(limit)s)
ORDER BY id LIMIT %(limit)s;

-- name: job_cancel
-- Cancel a live job (a running one too: its worker is told to stop, and its acknowledgement will change
-- nothing); jobs that depended on it are settled (cancel_jobs() in migration 0005).
SELECT c FROM {schema}.cancel_jobs(ARRAY[%(id)s::int8], %(now)s) AS c;

-- name: job_requeue
-- Put dead or cancelled jobs back in their queue: attempts reset, error history kept.
WITH back AS (
    DELETE FROM {schema}.finished_jobs
    WHERE id = ANY(%(ids)s::int8[]) AND state IN ('dead', 'cancelled')
    RETURNING *
), fin AS (
INSERT INTO {schema}.jobs
    (id, task, queue, args, state, priority, run_at, attempts, max_attempts, timeout, created_at,
     errors)
SELECT id, task, queue, args, 'queued', priority, %(now)s, 0, max_attempts, timeout, created_at,
       errors
FROM back
RETURNING id, queue, task
), audited AS (
    INSERT INTO {schema}.audit (action, job_id, queue, task)
    SELECT 'requeue', id, queue, task FROM fin WHERE (SELECT level FROM {schema}.audit_config) >= 1
)
SELECT id FROM fin;

-- name: job_run_now
-- Make a scheduled or retrying job runnable now.
WITH moved AS (
    UPDATE {schema}.jobs SET state = 'queued', run_at = %(now)s
    WHERE id = %(id)s AND state IN ('scheduled', 'retrying', 'queued')
    RETURNING id, queue, task
), audited AS (
    INSERT INTO {schema}.audit (action, job_id, queue, task)
    SELECT 'run_now', id, queue, task FROM moved WHERE (SELECT level FROM {schema}.audit_config) >= 1
)
SELECT id FROM moved;

-- name: dlq_ids
-- Ids of dead jobs, oldest first, optionally of one queue or task.
SELECT id FROM {schema}.finished_jobs
WHERE state = 'dead'
  AND (%(queue)s::text IS NULL OR queue = %(queue)s) AND (%(task)s::text IS NULL OR task = %(task)s)
ORDER BY finished_at, id
LIMIT %(limit)s;

-- name: dlq_purge
-- Delete dead jobs, optionally only the given ids, of one queue or task, or those that died before a time.
WITH gone AS (
    DELETE FROM {schema}.finished_jobs
    WHERE state = 'dead' AND (%(ids)s::int8[] IS NULL OR id = ANY(%(ids)s::int8[]))
      AND (%(queue)s::text IS NULL OR queue = %(queue)s) AND (%(task)s::text IS NULL OR task = %(task)s)
      AND (%(before)s::timestamptz IS NULL OR finished_at < %(before)s)
    RETURNING id, queue, task
), audited AS (
    INSERT INTO {schema}.audit (action, job_id, queue, task)
    SELECT 'purge', id, queue, task FROM gone WHERE (SELECT level FROM {schema}.audit_config) >= 1
)
SELECT count(*) FROM gone;

-- name: queue_counts
-- Jobs by queue and state, live and finished.
SELECT queue, state, count(*) FROM {schema}.jobs GROUP BY queue, state
UNION ALL
SELECT queue, state, count(*) FROM {schema}.finished_jobs GROUP BY queue, state;

-- name: queue_activity
-- Per queue: age in seconds of the oldest runnable job, and jobs finished since a time.
WITH waiting AS (
    SELECT queue, extract(epoch FROM %(now)s - min(run_at))::float8 AS oldest
    FROM {schema}.jobs
    WHERE state IN ('scheduled', 'queued', 'retrying') AND run_at <= %(now)s
    GROUP BY queue
), recent AS (
    SELECT queue, count(*) AS done FROM {schema}.finished_jobs
    WHERE finished_at >= %(since)s GROUP BY queue
)
SELECT coalesce(w.queue, r.queue), w.oldest, coalesce(r.done, 0)
FROM waiting w FULL JOIN recent r ON r.queue = w.queue;

-- name: timings
-- Percentiles (p50, p95) of wait (run_at to start) and run (start to finish) of jobs finished since a time.
SELECT count(*),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - run_at)),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM started_at - run_at)),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - started_at)),
       percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM finished_at - started_at)),
       min(created_at), max(finished_at)
FROM {schema}.finished_jobs
WHERE finished_at >= %(since)s AND state = 'succeeded' AND started_at IS NOT NULL;

-- name: workers_list
-- Registered workers (with the running jobs each last published), most recently seen first.
SELECT id, host, pid, queues, concurrency, started_at, last_seen_at, running
FROM {schema}.workers ORDER BY last_seen_at DESC;

-- name: history_summary
-- Finished jobs since a time by state: how many, and how many attempts they took in all.
SELECT state, count(*), coalesce(sum(attempts), 0)
FROM {schema}.finished_jobs
WHERE finished_at >= %(since)s
GROUP BY state;

-- name: history_set_period
-- Change the period of the history partitions (new partitions only; existing ones keep their range).
UPDATE {schema}.history SET period = make_interval(secs => %(seconds)s);

-- name: lease_get
-- A live job's routing fields and lease, for acknowledgements from outside the worker daemon (the HTTP API's
-- remote workers): who may act on it, and which groups and dependents its end settles.
SELECT id, task, queue, state, attempts, max_attempts, lease_token::text, worker, group_key, linked
FROM {schema}.jobs WHERE id = %(id)s;
