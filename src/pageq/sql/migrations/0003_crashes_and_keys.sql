-- Crash counting and idempotent enqueue.
-- `crashes` counts the attempts a live job lost because its worker vanished (the rescuer found its lease
-- expired); separate from `attempts`, so a job that kills its worker (a poison pill) is buried with reason
-- `worker_crash` after a few crashes instead of taking down workers until its attempts run out. A finished
-- job's crashes are its `errors` entries with reason lease_expired or worker_crash.
ALTER TABLE {schema}.jobs ADD COLUMN crashes integer NOT NULL DEFAULT 0;
-- Jobs that crashed a worker before, waiting: suspected poison pills run alone (normally empty).
CREATE INDEX jobs_suspect_idx ON {schema}.jobs (queue, priority DESC, run_at, id)
    WHERE crashes > 0 AND state IN ('scheduled', 'queued', 'retrying');

-- Client-given idempotency keys: one job per key, whatever the retries of an enqueue whose outcome the
-- client did not learn. A plain table (not a unique index on `jobs`, which is partitioned and whose rows
-- move between tables): the key outlives the job's moves; `job_id` is the job the key's first enqueue made.
CREATE TABLE {schema}.idempotency_keys (
    key        text        PRIMARY KEY,
    job_id     bigint      NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE INDEX idempotency_keys_created_idx ON {schema}.idempotency_keys USING brin (created_at);

-- Taking and relinking keys goes through these functions, SECURITY DEFINER: the restricted database roles of
-- migration 0004 (created later, or before this migration on a database that had 0004 first) get no
-- privilege on the keys table itself. A key carries no queue or task: like a unique key, whoever may
-- enqueue may take one; the functions reveal no more than the id of the job a key names.
--
-- idempotency_take: per row of `p_keys` (NULL: a row without a key), in order: the id to write its job
-- under (`taken`: no key, or a key new until now) or the id of the job that the key already names (a row
-- written before, maybe by a concurrent enqueue that just committed, or an earlier row of this batch).
CREATE FUNCTION {schema}.idempotency_take(p_keys text[], p_now timestamptz)
RETURNS TABLE (n bigint, job_id bigint, taken boolean)
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    v_ids bigint[];
BEGIN
    SELECT array_agg(nextval('{schema}.job_id_seq') ORDER BY u.n) INTO v_ids
    FROM unnest(p_keys) WITH ORDINALITY AS u(k, n);
    INSERT INTO {schema}.idempotency_keys AS i (key, job_id, created_at)
    SELECT u.k, v_ids[u.n], p_now FROM unnest(p_keys) WITH ORDINALITY AS u(k, n)
    WHERE u.k IS NOT NULL
    ORDER BY u.n
    ON CONFLICT (key) DO NOTHING;
    -- a new statement, a new snapshot: a key that a concurrent transaction committed meanwhile is visible
    RETURN QUERY
        SELECT u.n, coalesce(i.job_id, v_ids[u.n]), u.k IS NULL OR i.job_id = v_ids[u.n]
        FROM unnest(p_keys) WITH ORDINALITY AS u(k, n)
        LEFT JOIN {schema}.idempotency_keys AS i ON i.key = u.k
        ORDER BY u.n;
END
$$;

-- idempotency_relink: point keys at the jobs their enqueue returned instead of the ids reserved for them
-- (a unique key's holder, when a keyed job also had a unique key that was held); only keys whose job was
-- never written can move.
CREATE FUNCTION {schema}.idempotency_relink(p_keys text[], p_ids bigint[]) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    UPDATE {schema}.idempotency_keys AS i SET job_id = d.id
    FROM unnest(p_keys, p_ids) AS d(key, id)
    WHERE i.key = d.key AND i.job_id <> d.id
      AND NOT EXISTS (SELECT FROM {schema}.jobs AS j WHERE j.id = i.job_id)
      AND NOT EXISTS (SELECT FROM {schema}.finished_jobs AS f WHERE f.id = i.job_id)
$$;
