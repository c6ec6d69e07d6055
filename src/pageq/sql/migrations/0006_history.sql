-- History in time partitions: `finished_jobs` is partitioned by finished_at into one partition per
-- `history.period` (a day by default), created ahead by the leader. Retention drops whole partitions (no
-- DELETE, no VACUUM of millions of rows); dead jobs (the DLQ) in a dropped partition are kept: they move to
-- the DEFAULT partition, which also takes any row outside the created ranges (a skewed clock), so that
-- finishing a job never fails for want of a partition.

CREATE TABLE {schema}.history (
    one    boolean  PRIMARY KEY DEFAULT true CHECK (one),
    period interval NOT NULL CHECK (period >= interval '1 second')
);
INSERT INTO {schema}.history (period) VALUES (interval '1 day');

ALTER TABLE {schema}.finished_jobs RENAME TO finished_jobs_0001;
ALTER INDEX {schema}.finished_jobs_pkey RENAME TO finished_jobs_0001_pkey;
ALTER INDEX {schema}.finished_jobs_failed_idx RENAME TO finished_jobs_0001_failed_idx;
ALTER INDEX {schema}.finished_jobs_finished_brin RENAME TO finished_jobs_0001_finished_brin;

CREATE TABLE {schema}.finished_jobs (
    id               bigint      NOT NULL,
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
    CONSTRAINT finished_jobs_pkey PRIMARY KEY (id, finished_at),
    CONSTRAINT finished_jobs_state_check CHECK (state IN ('succeeded', 'dead', 'cancelled'))
) PARTITION BY RANGE (finished_at);

CREATE TABLE {schema}.finished_jobs_default PARTITION OF {schema}.finished_jobs DEFAULT;

-- The dead-letter queue (small: succeeded jobs, the bulk of the table, are not in it).
CREATE INDEX finished_jobs_failed_idx ON {schema}.finished_jobs (state, finished_at)
    WHERE state IN ('dead', 'cancelled');
-- Recent history (throughput, timings): finish times grow with each partition, so BRIN is tiny and nearly
-- free to maintain on the completion hot path.
CREATE INDEX finished_jobs_finished_brin ON {schema}.finished_jobs USING brin (finished_at);

-- Create the partitions of the periods from the one holding `at` to `ahead` periods later, when missing.
-- A period that overlaps an existing partition (after a change of period) or rows already in the default
-- partition is skipped. Returns the number of partitions created.
CREATE FUNCTION {schema}.history_prepare(at timestamptz, ahead integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    step    interval := (SELECT period FROM {schema}.history);
    origin  timestamptz := timestamptz '2000-01-01 00:00:00+00';
    lo      timestamptz;
    hi      timestamptz;
    name    text;
    created integer := 0;
BEGIN
    lo := origin + step * floor(extract(epoch FROM at - origin) / extract(epoch FROM step));
    FOR k IN 0..ahead LOOP
        hi := lo + step;
        name := 'finished_jobs_' || to_char(lo AT TIME ZONE 'UTC', 'YYYYMMDD"t"HH24MISS');
        IF to_regclass(format('{schema}.%I', name)) IS NULL
           AND NOT EXISTS (SELECT FROM {schema}.finished_jobs_default WHERE finished_at >= lo AND finished_at < hi)
        THEN
            BEGIN
                EXECUTE format('CREATE TABLE {schema}.%I PARTITION OF {schema}.finished_jobs '
                               'FOR VALUES FROM (%L) TO (%L)', name, lo, hi);
                created := created + 1;
            EXCEPTION WHEN invalid_object_definition THEN  -- overlaps an existing partition
                NULL;
            END;
        END IF;
        lo := hi;
    END LOOP;
    RETURN created;
END
$$;

-- Drop every partition whose whole range ended before `before`, keeping its dead jobs (they move to the
-- default partition). Raises lock_not_available when the table stays busy longer than `wait`. Returns the
-- number of partitions dropped.
CREATE FUNCTION {schema}.history_drop(before timestamptz, wait text)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    part    record;
    dropped integer := 0;
BEGIN
    PERFORM set_config('lock_timeout', wait, true);
    PERFORM set_config('idle_in_transaction_session_timeout', '5s', true);  -- see rotate() in 0002
    FOR part IN
        SELECT c.relname
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = '{schema}.finished_jobs'::regclass
          AND c.relname <> 'finished_jobs_default'
          AND (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''(.*)''\)'))[1]::timestamptz <= before
        ORDER BY c.relname
    LOOP
        EXECUTE format('ALTER TABLE {schema}.finished_jobs DETACH PARTITION {schema}.%I', part.relname);
        EXECUTE format('INSERT INTO {schema}.finished_jobs SELECT * FROM {schema}.%I WHERE state = %L',
                       part.relname, 'dead');
        EXECUTE format('DROP TABLE {schema}.%I', part.relname);
        dropped := dropped + 1;
    END LOOP;
    RETURN dropped;
END
$$;

INSERT INTO {schema}.finished_jobs SELECT * FROM {schema}.finished_jobs_0001;
DROP TABLE {schema}.finished_jobs_0001;
SELECT {schema}.history_prepare(now(), 2);
