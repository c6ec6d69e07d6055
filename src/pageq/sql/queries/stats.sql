-- Monitoring: the leader's rollup and the reads behind `app.stats` (see migration 0009). Rows of
-- stats_minute and the totals name a queue and task, the queue's rollup (task '*') or the schema's ('*', '*').

-- name: stats_rollup
-- Roll up the settled minutes that are not yet (the leader, every maintenance step); returns how many.
SELECT {schema}.stats_rollup(%(now)s, make_interval(secs => %(settle)s), make_interval(secs => %(keep)s),
                             %(max_minutes)s);

-- name: stats_live
-- Per queue and task, now: live jobs by state with the seconds the oldest due one has waited, and dead jobs
-- (the dead-letter queue, read through its partial index).
SELECT queue, task, state, count(*),
       extract(epoch FROM %(now)s - min(run_at) FILTER (
           WHERE state IN ('scheduled', 'queued', 'retrying') AND run_at <= %(now)s))::float8
FROM {schema}.jobs
GROUP BY queue, task, state
UNION ALL
SELECT queue, task, 'dead', count(*), NULL
FROM {schema}.finished_jobs
WHERE state = 'dead'
GROUP BY queue, task;

-- name: stats_flow
-- Per row key: events of the last `window` rolled-up minutes, timings of the newest rolled-up minute,
-- totals since statistics began; with the bounds of the rollups (since, rolled_until).
WITH bounds AS (
    SELECT since, rolled_until FROM {schema}.stats_state
), win AS (
    SELECT m.queue, m.task, sum(m.enqueued) AS enqueued, sum(m.succeeded) AS succeeded,
           sum(m.failed) AS failed, sum(m.dead) AS dead, sum(m.cancelled) AS cancelled
    FROM {schema}.stats_minute AS m, bounds AS b
    WHERE m.minute >= b.rolled_until - make_interval(mins => %(window)s) AND m.minute < b.rolled_until
    GROUP BY m.queue, m.task
), newest AS (
    SELECT m.queue, m.task, m.timed, m.wait_p50, m.wait_p95, m.wait_p99, m.run_p50, m.run_p95, m.run_p99
    FROM {schema}.stats_minute AS m, bounds AS b
    WHERE m.minute = b.rolled_until - interval '1 minute'
), total AS (
    SELECT coalesce(queue, '*') AS queue, coalesce(task, '*') AS task, sum(enqueued) AS enqueued,
           sum(succeeded) AS succeeded, sum(failed) AS failed, sum(dead) AS dead, sum(cancelled) AS cancelled,
           sum(timed) AS timed, sum(wait_sum) AS wait_sum, sum(run_sum) AS run_sum
    FROM {schema}.stats_totals
    GROUP BY GROUPING SETS ((queue, task), (queue), ())
    HAVING count(*) > 0
), keys AS (
    SELECT queue, task FROM win UNION SELECT queue, task FROM newest UNION SELECT queue, task FROM total
)
SELECT k.queue, k.task,
       coalesce(w.enqueued, 0)::int8, coalesce(w.succeeded, 0)::int8, coalesce(w.failed, 0)::int8,
       coalesce(w.dead, 0)::int8, coalesce(w.cancelled, 0)::int8,
       coalesce(n.timed, 0), n.wait_p50, n.wait_p95, n.wait_p99, n.run_p50, n.run_p95, n.run_p99,
       coalesce(t.enqueued, 0)::int8, coalesce(t.succeeded, 0)::int8, coalesce(t.failed, 0)::int8,
       coalesce(t.dead, 0)::int8, coalesce(t.cancelled, 0)::int8, coalesce(t.timed, 0)::int8,
       coalesce(t.wait_sum, 0), coalesce(t.run_sum, 0),
       b.since, b.rolled_until
FROM keys AS k
CROSS JOIN bounds AS b
LEFT JOIN win AS w USING (queue, task)
LEFT JOIN newest AS n USING (queue, task)
LEFT JOIN total AS t USING (queue, task)
ORDER BY k.queue, k.task;

-- name: stats_series
-- One row per rolled-up minute of the last `minutes` (oldest first, none before statistics began) for a
-- queue and task ('*' for all): events, timings, and the live jobs when the minute was sampled (else NULL).
SELECT m.minute, coalesce(s.enqueued, 0), coalesce(s.succeeded, 0), coalesce(s.failed, 0),
       coalesce(s.dead, 0), coalesce(s.cancelled, 0), coalesce(s.timed, 0),
       s.wait_p50, s.wait_p95, s.wait_p99, s.run_p50, s.run_p95, s.run_p99,
       CASE WHEN g.queued IS NOT NULL THEN coalesce(s.scheduled, 0) END,
       CASE WHEN g.queued IS NOT NULL THEN coalesce(s.queued, 0) END,
       CASE WHEN g.queued IS NOT NULL THEN coalesce(s.running, 0) END,
       CASE WHEN g.queued IS NOT NULL THEN coalesce(s.retrying, 0) END,
       CASE WHEN g.queued IS NOT NULL THEN coalesce(s.blocked, 0) END,
       s.oldest_age
FROM {schema}.stats_state AS b
CROSS JOIN LATERAL generate_series(
    greatest(b.rolled_until - make_interval(mins => %(minutes)s), b.since),
    b.rolled_until - interval '1 minute', interval '1 minute') AS m(minute)
LEFT JOIN {schema}.stats_minute AS s ON s.minute = m.minute AND s.queue = %(queue)s AND s.task = %(task)s
LEFT JOIN {schema}.stats_minute AS g ON g.minute = m.minute AND g.queue = '*' AND g.task = '*'
ORDER BY m.minute;

-- name: stats_workers
-- Registered workers with what they last published, oldest first.
SELECT id, host, pid, queues, concurrency, running, processed, failed, rss_bytes, started_at, last_seen_at
FROM {schema}.workers
ORDER BY started_at, id;

-- name: stats_system
-- The server's version, the maintenance leader and its lease, the rollups' bounds, and the workers seen
-- since a time.
SELECT current_setting('server_version'), l.holder, l.expires_at, b.since, b.rolled_until,
       (SELECT count(*) FROM {schema}.workers WHERE last_seen_at >= %(seen_since)s)
FROM {schema}.stats_state AS b
LEFT JOIN {schema}.leader AS l ON l.name = %(leader)s;
