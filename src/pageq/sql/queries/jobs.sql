-- The hot path: enqueue, claim, complete, retry, heartbeat, release.
-- Every transition of a running job is conditional on (id, state = 'running', lease_token).
-- The batch statements below run unprepared (see ops.py): a cached generic plan once turned their
-- join into a nested loop of 1000 x 1000 rows; `j.id = ANY(ids)` gives them primary-key access.

-- name: enqueue
-- Insert a batch of jobs from parallel arrays in one statement; NOTIFY the listed queues once each.
-- `ids` (reserved ids, for encrypted arguments bound to their job) is NULL when the sequence assigns them.
-- Audited (one row per job) at level >= 1.
WITH ins AS (
    INSERT INTO {schema}.jobs (id, task, queue, args, state, priority, run_at, max_attempts, timeout,
                               created_at, slot)
    SELECT coalesce((%(ids)b::int8[])[u.n], nextval('{schema}.job_id_seq')), t, q, a::jsonb,
           CASE WHEN r > %(now)s THEN 'scheduled' ELSE 'queued' END, p, r, m, tm, %(now)s,
           (SELECT slot FROM {schema}.rotation)
    FROM unnest(%(tasks)b::text[], %(queues)b::text[], %(args)b::text[], %(priorities)b::int2[],
                %(run_ats)b::timestamptz[], %(max_attempts)b::int4[], %(timeouts)b::float8[])
         WITH ORDINALITY AS u(t, q, a, p, r, m, tm, n)
    RETURNING id, queue, task
), notified AS (
    SELECT count(pg_notify(%(channel)s, nq)) AS n FROM unnest(%(notify)b::text[]) AS nq
), audited AS (
    INSERT INTO {schema}.audit (action, job_id, queue, task)
    SELECT 'enqueue', id, queue, task FROM ins WHERE (SELECT level FROM {schema}.audit_config) >= 1
)
SELECT ins.id FROM ins, notified ORDER BY ins.id;

-- name: reserve_ids
-- Reserve ids for a COPY of `n` jobs (in order), with the partition they go to.
SELECT nextval('{schema}.job_id_seq'), r.slot FROM generate_series(1, %(n)s), {schema}.rotation AS r;

-- name: copy_jobs
-- Bulk insert with the COPY protocol (large batches); rows carry their reserved ids.
COPY {schema}.jobs (id, slot, task, queue, args, state, priority, run_at, max_attempts, timeout, created_at)
FROM STDIN;

-- name: notify
-- Announce new jobs on the listed queues, once each (after a COPY, which cannot NOTIFY itself), and audit
-- the copied jobs (`copied`: their ids, with `copied_queues` and `copied_tasks`) at level >= 1.
WITH audited AS (
    INSERT INTO {schema}.audit (action, job_id, queue, task)
    SELECT 'enqueue', i, q, t
    FROM unnest(%(copied)b::int8[], %(copied_queues)b::text[], %(copied_tasks)b::text[]) AS c(i, q, t)
    WHERE (SELECT level FROM {schema}.audit_config) >= 1
)
SELECT count(pg_notify(%(channel)s, q)) FROM unnest(%(queues)b::text[]) AS q;

-- name: claim
-- Lock up to `limit` runnable jobs of the given queues in claim order and lease them to a worker.
-- Each queue is read through its own index range (so the cost does not grow with the backlog), then the
-- best `limit` across queues are taken; rows locked but not taken are unlocked at commit.
WITH locked AS (
    SELECT c.id, c.priority, c.run_at
    FROM unnest(%(queues)b::text[]) AS q(name)
    CROSS JOIN LATERAL (
        SELECT id, priority, run_at FROM {schema}.jobs
        WHERE queue = q.name
          AND state IN ('scheduled', 'queued', 'retrying')
          AND run_at <= %(now)s
          AND (%(tasks)s::text[] IS NULL OR task = ANY(%(tasks)s::text[]))
          AND crashes < %(suspect)s  -- suspected poison pills run alone (claim_suspect)
        ORDER BY priority DESC, run_at, id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) AS c
), picked AS (
    SELECT id FROM locked ORDER BY priority DESC, run_at, id LIMIT %(limit)s
), claimed AS (
UPDATE {schema}.jobs AS j
SET state = 'running', attempts = j.attempts + 1, lease_token = gen_random_uuid(),
    lease_expires_at = %(now)s + make_interval(secs => %(lease)s), worker = %(worker)s,
    started_at = %(now)s
WHERE j.id = ANY(ARRAY(SELECT id FROM picked))  -- primary-key probes, never a scan of the backlog
RETURNING j.id, j.task, j.queue, j.args, j.priority, j.attempts, j.max_attempts, j.run_at,
          j.created_at, j.timeout, j.lease_token::text, j.group_key, j.linked
), audited AS (
    INSERT INTO {schema}.audit (action, job_id, queue, task)
    SELECT 'claim', id, queue, task FROM claimed WHERE (SELECT level FROM {schema}.audit_config) >= 2
)
SELECT * FROM claimed;

-- name: claim_suspect
-- Lease one due job whose worker vanished `suspect` times or more (a possible poison pill) to a worker that
-- runs nothing else meanwhile: if it kills its worker again, it takes no innocent job with it. Only queues
-- without a concurrency or rate limit (in those, such a job waits for the controlled claim, limits first);
-- `tasks` and the audit as in `claim`.
WITH picked AS (
    SELECT id FROM {schema}.jobs AS j
    WHERE queue = ANY(%(queues)s::text[]) AND state IN ('scheduled', 'queued', 'retrying')
      AND run_at <= %(now)s AND crashes > 0 AND crashes >= %(suspect)s
      AND (%(tasks)s::text[] IS NULL OR task = ANY(%(tasks)s::text[]))
      AND NOT EXISTS (
          SELECT FROM {schema}.queues c
          WHERE c.name = j.queue AND (c.paused OR c.concurrency IS NOT NULL OR c.rate_limit IS NOT NULL))
    ORDER BY priority DESC, run_at, id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
), claimed AS (
UPDATE {schema}.jobs AS j
SET state = 'running', attempts = j.attempts + 1, lease_token = gen_random_uuid(),
    lease_expires_at = %(now)s + make_interval(secs => %(lease)s), worker = %(worker)s,
    started_at = %(now)s
WHERE j.id = ANY(ARRAY(SELECT id FROM picked))
RETURNING j.id, j.task, j.queue, j.args, j.priority, j.attempts, j.max_attempts, j.run_at,
          j.created_at, j.timeout, j.lease_token::text, j.group_key, j.linked
), audited AS (
    INSERT INTO {schema}.audit (action, job_id, queue, task)
    SELECT 'claim', id, queue, task FROM claimed WHERE (SELECT level FROM {schema}.audit_config) >= 2
)
SELECT * FROM claimed;

-- name: suspects_waiting
-- Whether a suspected poison pill waits for `claim_suspect` (a worker then empties itself to run it).
SELECT EXISTS (
    SELECT FROM {schema}.jobs AS j
    WHERE queue = ANY(%(queues)s::text[]) AND state IN ('scheduled', 'queued', 'retrying')
      AND run_at <= %(now)s AND crashes > 0 AND crashes >= %(suspect)s
      AND (%(tasks)s::text[] IS NULL OR task = ANY(%(tasks)s::text[]))
      AND NOT EXISTS (
          SELECT FROM {schema}.queues c
          WHERE c.name = j.queue AND (c.paused OR c.concurrency IS NOT NULL OR c.rate_limit IS NOT NULL))
);

-- name: complete
-- Move succeeded jobs, still leased to the caller, to finished_jobs with their results.
WITH done AS (
    DELETE FROM {schema}.jobs AS j
    USING unnest(%(ids)b::int8[], %(tokens)b::uuid[], %(results)b::text[]) AS d(id, token, result)
    WHERE j.id = ANY(%(ids)b::int8[]) AND j.id = d.id AND j.state = 'running' AND j.lease_token = d.token
    RETURNING j.*, d.result
), fin AS (
INSERT INTO {schema}.finished_jobs
    (id, task, queue, args, state, priority, run_at, attempts, max_attempts, timeout, lease_token,
     worker, created_at, started_at, finished_at, result, errors)
SELECT id, task, queue, args, 'succeeded', priority, run_at, attempts, max_attempts, timeout,
       lease_token, worker, created_at, started_at, %(now)s, result::jsonb, errors
FROM done
RETURNING id, queue, task
), audited AS (
    INSERT INTO {schema}.audit (action, job_id, queue, task)
    SELECT 'complete', id, queue, task FROM fin WHERE (SELECT level FROM {schema}.audit_config) >= 2
)
SELECT id FROM fin;

-- name: retry
-- Send failed attempts, still leased to the caller, back to wait for their next attempt.
WITH moved AS (
UPDATE {schema}.jobs AS j
SET state = 'retrying', run_at = d.run_at, lease_token = NULL, lease_expires_at = NULL,
    errors = j.errors || jsonb_build_array(d.error::jsonb)
FROM unnest(%(ids)b::int8[], %(tokens)b::uuid[], %(run_ats)b::timestamptz[], %(errors)b::text[])
     AS d(id, token, run_at, error)
WHERE j.id = ANY(%(ids)b::int8[]) AND j.id = d.id AND j.state = 'running' AND j.lease_token = d.token
RETURNING j.id, j.queue, j.task
), audited AS (
    INSERT INTO {schema}.audit (action, job_id, queue, task)
    SELECT 'retry', id, queue, task FROM moved WHERE (SELECT level FROM {schema}.audit_config) >= 2
)
SELECT id FROM moved;

-- name: bury
-- Move failed jobs, still leased to the caller, to the dead-letter queue with their last error.
WITH done AS (
    DELETE FROM {schema}.jobs AS j
    USING unnest(%(ids)b::int8[], %(tokens)b::uuid[], %(errors)b::text[]) AS d(id, token, error)
    WHERE j.id = ANY(%(ids)b::int8[]) AND j.id = d.id AND j.state = 'running' AND j.lease_token = d.token
    RETURNING j.*, d.error
), fin AS (
INSERT INTO {schema}.finished_jobs
    (id, task, queue, args, state, priority, run_at, attempts, max_attempts, timeout, lease_token,
     worker, created_at, started_at, finished_at, result, errors)
SELECT id, task, queue, args, 'dead', priority, run_at, attempts, max_attempts, timeout,
       lease_token, worker, created_at, started_at, %(now)s, NULL,
       errors || jsonb_build_array(error::jsonb)
FROM done
RETURNING id, queue, task, errors -> -1 ->> 'reason' AS reason
), audited AS (
    INSERT INTO {schema}.audit (action, job_id, queue, task, reason)
    SELECT 'bury', id, queue, task, reason FROM fin WHERE (SELECT level FROM {schema}.audit_config) >= 2
)
SELECT id FROM fin;

-- name: set_result
-- Store a handler's result on a job that its own ctx.transaction() already completed.
UPDATE {schema}.finished_jobs SET result = %(result)s::jsonb
WHERE id = %(id)s AND lease_token = %(token)s AND state = 'succeeded';

-- name: heartbeat
-- Extend the leases the caller still holds; returns the ids it still holds.
UPDATE {schema}.jobs AS j
SET lease_expires_at = %(now)s + make_interval(secs => %(lease)s)
FROM unnest(%(ids)b::int8[], %(tokens)b::uuid[]) AS d(id, token)
WHERE j.id = ANY(%(ids)b::int8[]) AND j.id = d.id AND j.state = 'running' AND j.lease_token = d.token
RETURNING j.id;

-- name: release
-- Give unfinished jobs back at once (graceful shutdown): queued again, the attempt not counted.
WITH moved AS (
UPDATE {schema}.jobs AS j
SET state = 'queued', attempts = greatest(j.attempts - 1, 0), lease_token = NULL,
    lease_expires_at = NULL, run_at = %(now)s, worker = NULL
FROM unnest(%(ids)b::int8[], %(tokens)b::uuid[]) AS d(id, token)
WHERE j.id = ANY(%(ids)b::int8[]) AND j.id = d.id AND j.state = 'running' AND j.lease_token = d.token
RETURNING j.id, j.queue, j.task
), audited AS (
    INSERT INTO {schema}.audit (action, job_id, queue, task)
    SELECT 'release', id, queue, task FROM moved WHERE (SELECT level FROM {schema}.audit_config) >= 2
)
SELECT id FROM moved;

-- name: idempotency_take
-- Take the idempotency keys of a batch (NULL: a row without a key), before its jobs are written with
-- `enqueue` or `enqueue_special` (same transaction): per row in order, the id to write the job under (new
-- key or no key: a reserved id, taken = true) or the id of the job an earlier enqueue made (taken = false).
-- A SECURITY DEFINER function (migration 0003): producer roles have no privilege on the keys table.
SELECT t.job_id, t.taken FROM {schema}.idempotency_take(%(keys)b::text[], %(now)s) AS t ORDER BY t.n;

-- name: idempotency_relink
-- Point keys at the jobs their enqueue returned when that is not the reserved id (a unique key's holder).
SELECT {schema}.idempotency_relink(%(keys)b::text[], %(ids)b::int8[]);
