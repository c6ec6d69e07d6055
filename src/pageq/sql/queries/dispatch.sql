-- The dispatcher: queue controls, controlled claims, jobs with unique keys / groups / dependencies,
-- cancellation, periodic schedules. None of these run on the hot path of a job that uses no feature.

-- name: enqueue_special
-- Insert a batch of jobs that use unique keys, groups or dependencies, one enqueue_one() call each, in order;
-- returns (id, inserted) per job (a unique conflict returns the holder's id, inserted = false).
-- `ids` (reserved ids, for encrypted arguments bound to their job) is NULL when the sequence assigns them.
SELECT e.job_id, e.inserted
FROM unnest(%(tasks)b::text[], %(queues)b::text[], %(args)b::text[], %(priorities)b::int2[],
            %(run_ats)b::timestamptz[], %(max_attempts)b::int4[], %(timeouts)b::float8[],
            %(unique_keys)b::text[], %(unique_states)b::text[], %(unique_windows)b::float8[],
            %(on_conflicts)b::text[], %(group_keys)b::text[], %(afters)b::text[], %(on_failures)b::text[])
     WITH ORDINALITY AS u(t, q, a, p, r, m, tm, uk, us, uw, oc, g, af, pf, n)
CROSS JOIN LATERAL {schema}.enqueue_one(
    u.t, u.q, u.a::jsonb, u.p, u.r, u.m, u.tm, %(now)s, u.uk, string_to_array(u.us, ','), u.uw, u.oc,
    u.g, string_to_array(u.af, ',')::int8[], u.pf, (%(ids)b::int8[])[u.n]) AS e
ORDER BY u.n;

-- name: queues_lock
-- Lock the control rows that limit a claim (concurrency, rate), so limits hold across all workers.
SELECT name FROM {schema}.queues
WHERE name = ANY(%(queues)b::text[]) AND (concurrency IS NOT NULL OR rate_limit IS NOT NULL)
ORDER BY name
FOR UPDATE;

-- name: claim_controlled
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
               %(limit)s::int8,
               c.concurrency - (SELECT count(*) FROM {schema}.jobs r
                                WHERE r.queue = u.name AND r.state = 'running'),
               c.rate_limit - CASE WHEN c.window_start = w.start THEN c.window_count ELSE 0 END
           )) AS allowed
    FROM unnest(%(queues)b::text[]) AS u(name)
    LEFT JOIN {schema}.queues c ON c.name = u.name
    CROSS JOIN LATERAL (  -- never back: a claimer whose `now` predates the window another one opened
        SELECT greatest(c.window_start,  -- counts in that window, it does not reopen an old one
            to_timestamp(floor(extract(epoch FROM %(now)s::timestamptz) / c.rate_period) * c.rate_period))
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
          AND run_at <= %(now)s
          AND (%(tasks)s::text[] IS NULL OR task = ANY(%(tasks)s::text[]))
          AND (crashes < %(suspect)s OR q.limited)
        ORDER BY priority DESC, run_at, id
        LIMIT q.allowed
        FOR UPDATE SKIP LOCKED
    ) AS c
), picked AS (
    SELECT id, queue FROM locked ORDER BY turn, priority DESC, run_at, id LIMIT %(limit)s
), counted AS (
    UPDATE {schema}.queues AS c
    SET window_start = q.start,
        window_count = CASE WHEN c.window_start = q.start THEN c.window_count ELSE 0 END + n.started
    FROM (SELECT queue, count(*) AS started FROM picked GROUP BY queue) AS n, q
    WHERE c.name = n.queue AND q.name = n.queue AND c.rate_limit IS NOT NULL
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

-- name: worker_refresh
-- Publish a worker's load (running jobs), what it processed and its memory, and read the controls of its
-- queues (every second).
WITH load AS (
    UPDATE {schema}.workers
    SET running = %(running)s, last_seen_at = %(now)s,
        processed = CASE WHEN %(load)s THEN %(processed)s::int8 ELSE processed END,
        failed = CASE WHEN %(load)s THEN %(failed)s::int8 ELSE failed END,
        rss_bytes = CASE WHEN %(load)s THEN %(rss)s::int8 ELSE rss_bytes END
    WHERE id = %(id)s
)
SELECT name, paused, concurrency, rate_limit, rate_period, weight
FROM {schema}.queues WHERE name = ANY(%(queues)b::text[]);

-- name: queue_control_set
-- Create or change a queue's controls (NULL paused/weight and false set_* flags keep the current value),
-- audited as queue.pause, queue.resume or queue.limit with the new controls; workers are told at once
-- ('!queues') and re-read them within a second anyway.
WITH up AS (
    INSERT INTO {schema}.queues AS c (name, paused, concurrency, rate_limit, rate_period, weight, updated_at)
    VALUES (%(name)s, coalesce(%(paused)s::bool, false), %(concurrency)s::int4, %(rate_limit)s::int4,
            %(rate_period)s::float8, coalesce(%(weight)s::int4, 1), %(now)s)
    ON CONFLICT (name) DO UPDATE SET
        paused = coalesce(%(paused)s::bool, c.paused),
        concurrency = CASE WHEN %(set_concurrency)s THEN %(concurrency)s::int4 ELSE c.concurrency END,
        rate_limit = CASE WHEN %(set_rate)s THEN %(rate_limit)s::int4 ELSE c.rate_limit END,
        rate_period = CASE WHEN %(set_rate)s THEN %(rate_period)s::float8 ELSE c.rate_period END,
        weight = coalesce(%(weight)s::int4, c.weight),
        updated_at = %(now)s
    RETURNING c.name, c.paused, c.concurrency, c.rate_limit, c.rate_period, c.weight
), audited AS (
    INSERT INTO {schema}.audit (action, queue, detail)
    SELECT CASE %(paused)s::bool WHEN true THEN 'queue.pause' WHEN false THEN 'queue.resume'
           ELSE 'queue.limit' END,
           up.name,
           jsonb_build_object('paused', up.paused, 'concurrency', up.concurrency, 'rate_limit', up.rate_limit,
                              'rate_period', up.rate_period, 'weight', up.weight)
    FROM up WHERE (SELECT level FROM {schema}.audit_config) >= 1
)
SELECT up.*, pg_notify(%(channel)s, '!queues') IS NULL FROM up;

-- name: queue_controls
-- Every queue's controls, by name.
SELECT name, paused, concurrency, rate_limit, rate_period, weight FROM {schema}.queues ORDER BY name;

-- name: resolve
-- Settle the dependents and groups of jobs that just finished (same transaction as their completion).
SELECT {schema}.resolve(%(ids)s::int8[], %(groups)s::text[], %(now)s);

-- name: watch_expired
-- Before the rescuer runs: watch the linked jobs whose lease expired (their worker died), so that the sweep
-- settles their dependents and group if the rescuer buries them. Reads the lease index: as many rows as
-- expired leases.
INSERT INTO {schema}.job_watch (job_id, group_key)
SELECT id, group_key FROM {schema}.jobs
WHERE state = 'running' AND lease_expires_at < %(now)s AND linked
ON CONFLICT DO NOTHING;

-- name: resolve_sweep
-- Leader safety net: settle watched jobs that finished, and one page each of parents and groups after the
-- cursors; returns the next cursors (NULL: start again) and how many jobs were cancelled.
SELECT parent_cursor, group_cursor, cancelled
FROM {schema}.resolve_sweep(%(now)s, %(parent_after)s, %(group_after)s, %(limit)s);

-- name: jobs_cancel
-- Cancel live jobs matching the filters (NULL means any), at most `limit`; returns their ids.
SELECT c FROM {schema}.cancel_jobs(ARRAY(
    SELECT id FROM {schema}.jobs
    WHERE (%(states)s::text[] IS NULL OR state = ANY(%(states)s::text[]))
      AND (%(queue)s::text IS NULL OR queue = %(queue)s) AND (%(task)s::text IS NULL OR task = %(task)s)
      AND (%(ids)s::int8[] IS NULL OR id = ANY(%(ids)s::int8[]))
    ORDER BY id LIMIT %(limit)s), %(now)s) AS c;

-- name: parent_results
-- The parents of a job, in the order given to after=, with their final state, result and last error (and
-- the queue and task that encrypted values are bound to).
SELECT d.parent_id, coalesce(f.state, l.state), f.result, coalesce(f.queue, l.queue), coalesce(f.task, l.task),
       coalesce(f.errors, l.errors) -> -1
FROM {schema}.job_deps d
LEFT JOIN {schema}.finished_jobs f ON f.id = d.parent_id
LEFT JOIN {schema}.jobs l ON l.id = d.parent_id
WHERE d.child_id = %(id)s
ORDER BY d.ord;

-- name: periodic_lock
-- Lock a periodic schedule's row (created at `initial` on first sight); returns its last tick.
INSERT INTO {schema}.periodic AS p (name, last_tick) VALUES (%(name)s, %(initial)s)
ON CONFLICT (name) DO UPDATE SET last_tick = p.last_tick
RETURNING p.last_tick;

-- name: periodic_set
-- Record the newest tick a schedule enqueued.
UPDATE {schema}.periodic SET last_tick = greatest(last_tick, %(tick)s) WHERE name = %(name)s;

-- name: prune_keys
-- Forget unique keys past their window, at most `limit` (the expiry index: as many rows as it deletes).
DELETE FROM {schema}.unique_keys k
WHERE k.key IN (
    SELECT u.key FROM {schema}.unique_keys u
    WHERE u.expires_at < %(now)s
    ORDER BY u.expires_at
    LIMIT %(limit)s);

-- name: prune_orphans
-- One page of the cleanup of what finished jobs leave behind: the unique keys after job id `key_after`
-- whose job is gone (pruned from the history), and the dependencies after child id `child_after` whose
-- child is no longer live; at most `limit` rows of each are read. Returns the next cursors (NULL when the
-- page reached the end: start again) and how many rows were deleted.
WITH keys AS (
    SELECT u.key, u.job_id FROM {schema}.unique_keys u
    WHERE u.job_id > %(key_after)s ORDER BY u.job_id LIMIT %(limit)s
), deps AS (
    SELECT d.child_id FROM {schema}.job_deps d
    WHERE d.child_id > %(child_after)s ORDER BY d.child_id LIMIT %(limit)s
), gone_keys AS (
    DELETE FROM {schema}.unique_keys k USING keys
    WHERE k.key = keys.key AND k.job_id = keys.job_id
      AND NOT EXISTS (SELECT 1 FROM {schema}.jobs j WHERE j.id = keys.job_id)
      AND NOT EXISTS (SELECT 1 FROM {schema}.finished_jobs f WHERE f.id = keys.job_id)
    RETURNING 1
), gone_deps AS (
    DELETE FROM {schema}.job_deps d
    WHERE d.child_id IN (SELECT DISTINCT x.child_id FROM deps x)
      AND NOT EXISTS (SELECT 1 FROM {schema}.jobs j WHERE j.id = d.child_id)
    RETURNING 1
)
SELECT (SELECT max(job_id) FROM keys HAVING count(*) >= %(limit)s),
       (SELECT max(child_id) FROM deps HAVING count(*) >= %(limit)s),
       (SELECT count(*) FROM gone_keys) + (SELECT count(*) FROM gone_deps);
