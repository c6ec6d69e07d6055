-- Monitoring: per-minute rollups of the job flow and cumulative totals, computed by the maintenance leader
-- from finished_jobs (pruned to the partitions of the minutes rolled up), the live jobs and their error
-- records, once each minute has settled (stats_rollup()). The hot path writes nothing for statistics.
-- Workers also publish what they processed and their memory (with their load, every second).

ALTER TABLE {schema}.workers
    ADD COLUMN processed bigint NOT NULL DEFAULT 0,  -- attempts this worker finished, whatever the outcome
    ADD COLUMN failed    bigint NOT NULL DEFAULT 0,  -- of those, the failed ones (retried or dead)
    ADD COLUMN rss_bytes bigint;                     -- resident memory of its process, when known

-- Where the rollups stand: every minute before `rolled_until` is rolled up, since `since`.
CREATE TABLE {schema}.stats_state (
    one          boolean PRIMARY KEY DEFAULT true CHECK (one),
    since        timestamptz,
    rolled_until timestamptz
);
INSERT INTO {schema}.stats_state DEFAULT VALUES;

-- One row per minute and (queue, task), plus the rows of each queue (task '*'), of each task in all queues
-- (queue '*') and of everything ('*', '*'):
-- events counted in the minute, wait (run_at to start) and run (start to finish) times of the jobs that
-- finished in it, and the live jobs when the minute was rolled up (NULL when it was not sampled: only the
-- newest minute of each rollup is). Kept for `keep` (stats_rollup's argument), then deleted.
CREATE TABLE {schema}.stats_minute (
    minute     timestamptz      NOT NULL,
    queue      text             NOT NULL,
    task       text             NOT NULL,
    enqueued   integer          NOT NULL DEFAULT 0,
    succeeded  integer          NOT NULL DEFAULT 0,
    dead       integer          NOT NULL DEFAULT 0,
    cancelled  integer          NOT NULL DEFAULT 0,
    failed     integer          NOT NULL DEFAULT 0,  -- failed attempts (retried or dead), by when they failed
    timed      integer          NOT NULL DEFAULT 0,  -- succeeded or dead jobs that ran: those with timings
    wait_sum   double precision NOT NULL DEFAULT 0,
    wait_p50   double precision,
    wait_p95   double precision,
    wait_p99   double precision,
    run_sum    double precision NOT NULL DEFAULT 0,
    run_p50    double precision,
    run_p95    double precision,
    run_p99    double precision,
    scheduled  integer,
    queued     integer,
    running    integer,
    retrying   integer,
    blocked    integer,
    oldest_age double precision,  -- seconds the oldest due job had waited, when sampled
    CONSTRAINT stats_minute_pkey PRIMARY KEY (minute, queue, task)
);

-- Counters since statistics began, per (queue, task): what Prometheus reads as `_total` series.
CREATE TABLE {schema}.stats_totals (
    queue     text             NOT NULL,
    task      text             NOT NULL,
    enqueued  bigint           NOT NULL DEFAULT 0,
    succeeded bigint           NOT NULL DEFAULT 0,
    dead      bigint           NOT NULL DEFAULT 0,
    cancelled bigint           NOT NULL DEFAULT 0,
    failed    bigint           NOT NULL DEFAULT 0,
    timed     bigint           NOT NULL DEFAULT 0,
    wait_sum  double precision NOT NULL DEFAULT 0,
    run_sum   double precision NOT NULL DEFAULT 0,
    CONSTRAINT stats_totals_pkey PRIMARY KEY (queue, task)
);

-- Roll up the minutes that ended `settle` before `at` and are not rolled up yet (at most `max_minutes` of
-- them, never older than `keep`; the first call starts with the last complete minute), add them to the
-- totals, delete minutes older than `keep`. A job whose finish commits more than `settle` after its
-- finished_at (a stalled transaction, a worker's clock behind the leader's) is not counted. SECURITY
-- DEFINER: a leader running as a restricted role counts every queue. Returns the minutes rolled up.
CREATE FUNCTION {schema}.stats_rollup(at timestamptz, settle interval, keep interval, max_minutes integer)
RETURNS integer LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    origin  constant timestamptz := timestamptz '2000-01-01 00:00:00+00';
    settled timestamptz := date_bin('1 minute', at - settle, origin);  -- minutes before it are complete
    lo      timestamptz;
    hi      timestamptz;
    sampled timestamptz;
BEGIN
    SELECT rolled_until INTO lo FROM {schema}.stats_state FOR UPDATE;
    lo := greatest(coalesce(lo, settled - interval '1 minute'), settled - keep);
    hi := least(settled, lo + max_minutes * interval '1 minute');
    IF hi <= lo THEN
        RETURN 0;
    END IF;
    sampled := CASE WHEN hi = settled THEN hi - interval '1 minute' END;  -- live jobs: only for the newest

    INSERT INTO {schema}.stats_minute
        (minute, queue, task, enqueued, succeeded, dead, cancelled, failed, timed,
         wait_sum, wait_p50, wait_p95, wait_p99, run_sum, run_p50, run_p95, run_p99,
         scheduled, queued, running, retrying, blocked, oldest_age)
    WITH recent AS MATERIALIZED (  -- finished since lo: the minutes' finishes, and jobs born or failed in them
        SELECT queue, task, state, run_at, created_at, started_at, finished_at, errors
        FROM {schema}.finished_jobs
        WHERE finished_at >= lo AND finished_at < hi + interval '1 hour'
    ), fin AS (
        SELECT date_bin('1 minute', finished_at, origin) AS minute, queue, task, state,
               CASE WHEN state <> 'cancelled' AND started_at IS NOT NULL
                    THEN greatest(extract(epoch FROM started_at - run_at)::float8, 0) END AS wait,
               CASE WHEN state <> 'cancelled' AND started_at IS NOT NULL
                    THEN greatest(extract(epoch FROM finished_at - started_at)::float8, 0) END AS run
        FROM recent WHERE finished_at < hi
    ), timing AS (
        SELECT minute, coalesce(queue, '*') AS queue, coalesce(task, '*') AS task,
               count(*) FILTER (WHERE state = 'succeeded') AS succeeded,
               count(*) FILTER (WHERE state = 'dead') AS dead,
               count(*) FILTER (WHERE state = 'cancelled') AS cancelled,
               count(wait) AS timed, coalesce(sum(wait), 0) AS wait_sum, coalesce(sum(run), 0) AS run_sum,
               percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY wait) AS wait_p,
               percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY run) AS run_p
        FROM fin GROUP BY GROUPING SETS ((minute, queue, task), (minute, queue), (minute, task), (minute))
    ), live AS MATERIALIZED (  -- one pass over the live jobs: by state, and those born in the minutes
        SELECT queue, task, state, count(*) AS n,
               CASE WHEN created_at >= lo AND created_at < hi
                    THEN date_bin('1 minute', created_at, origin) END AS born,
               min(run_at) FILTER (WHERE state IN ('scheduled', 'queued', 'retrying') AND run_at <= at) AS due
        FROM {schema}.jobs GROUP BY 1, 2, 3, 5
    ), born AS (
        SELECT born AS minute, queue, task, sum(n) AS n FROM live WHERE born IS NOT NULL GROUP BY 1, 2, 3
        UNION ALL
        SELECT date_bin('1 minute', created_at, origin), queue, task, count(*) FROM recent
        WHERE created_at >= lo AND created_at < hi GROUP BY 1, 2, 3
    ), failures AS (  -- error records carry the time of their attempt's failure
        SELECT date_bin('1 minute', e.failed_at, origin) AS minute, s.queue, s.task, count(*) AS n
        FROM (SELECT queue, task, errors FROM {schema}.jobs WHERE errors <> '[]'::jsonb
              UNION ALL
              SELECT queue, task, errors FROM recent WHERE errors <> '[]'::jsonb) AS s
        CROSS JOIN LATERAL (
            SELECT CASE WHEN x ->> 'at' ~ '^\d{4}-\d\d-\d\d[T ]\d\d:\d\d'
                        THEN (x ->> 'at')::timestamptz END AS failed_at
            FROM jsonb_array_elements(CASE WHEN jsonb_typeof(s.errors) = 'array'
                                           THEN s.errors ELSE '[]'::jsonb END) AS x
        ) AS e
        WHERE e.failed_at >= lo AND e.failed_at < hi
        GROUP BY 1, 2, 3
    ), flow AS (
        SELECT minute, coalesce(queue, '*') AS queue, coalesce(task, '*') AS task,
               sum(enqueued) AS enqueued, sum(failed) AS failed
        FROM (SELECT minute, queue, task, n AS enqueued, 0 AS failed FROM born
              UNION ALL
              SELECT minute, queue, task, 0, n FROM failures) AS f
        GROUP BY GROUPING SETS ((minute, queue, task), (minute, queue), (minute, task), (minute))
    ), depth AS (
        SELECT sampled AS minute, coalesce(queue, '*') AS queue, coalesce(task, '*') AS task,
               sum(n) FILTER (WHERE state = 'scheduled') AS scheduled,
               sum(n) FILTER (WHERE state = 'queued') AS queued,
               sum(n) FILTER (WHERE state = 'running') AS running,
               sum(n) FILTER (WHERE state = 'retrying') AS retrying,
               sum(n) FILTER (WHERE state = 'blocked') AS blocked,
               extract(epoch FROM at - min(due))::float8 AS oldest_age
        FROM live GROUP BY GROUPING SETS ((queue, task), (queue), (task), ())
        HAVING sampled IS NOT NULL
    ), keys AS (
        SELECT minute, queue, task FROM timing
        UNION SELECT minute, queue, task FROM flow
        UNION SELECT minute, queue, task FROM depth
    )
    SELECT k.minute, k.queue, k.task, coalesce(f.enqueued, 0), coalesce(t.succeeded, 0), coalesce(t.dead, 0),
           coalesce(t.cancelled, 0), coalesce(f.failed, 0), coalesce(t.timed, 0),
           coalesce(t.wait_sum, 0), t.wait_p[1], t.wait_p[2], t.wait_p[3],
           coalesce(t.run_sum, 0), t.run_p[1], t.run_p[2], t.run_p[3],
           CASE WHEN k.minute = sampled THEN coalesce(d.scheduled, 0) END,
           CASE WHEN k.minute = sampled THEN coalesce(d.queued, 0) END,
           CASE WHEN k.minute = sampled THEN coalesce(d.running, 0) END,
           CASE WHEN k.minute = sampled THEN coalesce(d.retrying, 0) END,
           CASE WHEN k.minute = sampled THEN coalesce(d.blocked, 0) END,
           d.oldest_age
    FROM keys AS k
    LEFT JOIN timing AS t USING (minute, queue, task)
    LEFT JOIN flow AS f USING (minute, queue, task)
    LEFT JOIN depth AS d USING (minute, queue, task);

    INSERT INTO {schema}.stats_totals AS t
        (queue, task, enqueued, succeeded, dead, cancelled, failed, timed, wait_sum, run_sum)
    SELECT queue, task, sum(enqueued), sum(succeeded), sum(dead), sum(cancelled), sum(failed), sum(timed),
           sum(wait_sum), sum(run_sum)
    FROM {schema}.stats_minute
    WHERE minute >= lo AND minute < hi AND queue <> '*' AND task <> '*'
    GROUP BY queue, task
    ON CONFLICT (queue, task) DO UPDATE SET
        enqueued = t.enqueued + excluded.enqueued, succeeded = t.succeeded + excluded.succeeded,
        dead = t.dead + excluded.dead, cancelled = t.cancelled + excluded.cancelled,
        failed = t.failed + excluded.failed, timed = t.timed + excluded.timed,
        wait_sum = t.wait_sum + excluded.wait_sum, run_sum = t.run_sum + excluded.run_sum;

    DELETE FROM {schema}.stats_minute WHERE minute < hi - keep;
    UPDATE {schema}.stats_state SET rolled_until = hi, since = coalesce(since, lo);
    RETURN (extract(epoch FROM hi - lo) / 60)::integer;
END
$$;
REVOKE EXECUTE ON FUNCTION {schema}.stats_rollup(timestamptz, interval, interval, integer) FROM PUBLIC;

-- Restricted roles (0004 and later): the previous setup_db_roles() (0008's) is kept, renamed, and called
-- first. Workers may roll up (the leader may be any of them) and read the statistics (`pageq worker
-- --metrics-port`); admins read them. The rollups are counts per queue and task, without row-level security.
ALTER FUNCTION {schema}.setup_db_roles() RENAME TO setup_db_roles_0008;
CREATE FUNCTION {schema}.setup_db_roles() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    s text := '{schema}';
BEGIN
    PERFORM {schema}.setup_db_roles_0008();
    EXECUTE format('GRANT SELECT ON %I.stats_state, %I.stats_minute, %I.stats_totals TO %I, %I',
                   s, s, s, s || '_worker', s || '_admin');
    EXECUTE format('GRANT EXECUTE ON FUNCTION %I.stats_rollup(timestamptz, interval, interval, integer) '
                   'TO %I, %I', s, s || '_worker', s || '_admin');
END
$$;

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{schema}_worker') THEN
        PERFORM {schema}.setup_db_roles();
    END IF;
END
$$;
