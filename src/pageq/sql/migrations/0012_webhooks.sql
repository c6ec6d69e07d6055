-- Webhooks and events (docs/webhooks.md). The audit trail already records every job transition in the
-- transaction that makes it; an AFTER INSERT trigger on it turns the rows some subscriber wants into
-- events: a delivery job per matching webhook (an outbox: enqueued in that same transaction, so a committed
-- transition is never missed and a rolled-back one never announced) and a NOTIFY for in-process listeners.
-- The trigger exists only while someone subscribes, and its WHEN clause lists only the audit actions wanted,
-- so the hot path pays nothing without subscribers and one comparison per audit row for other actions.

-- Webhook subscriptions. `actions` are the audit actions of the subscribed event types; the patterns are
-- globs (`*`) with their LIKE equivalents. `secret` is a JSON string, or a keyring envelope bound to the
-- webhook's id when the app that stored it had a keyring; during a rotation `old_secret` signs too, until
-- `old_until`.
CREATE SEQUENCE {schema}.webhook_id_seq;
CREATE TABLE {schema}.webhooks (
    id            bigint           PRIMARY KEY DEFAULT nextval('{schema}.webhook_id_seq'),
    url           text             NOT NULL,
    events        text[]           NOT NULL,
    actions       text[]           NOT NULL,
    queue_pattern text             NOT NULL,
    task_pattern  text             NOT NULL,
    queue_like    text             NOT NULL,
    task_like     text             NOT NULL,
    secret        jsonb            NOT NULL,
    old_secret    jsonb,
    old_until     timestamptz,
    hint          text             NOT NULL,
    enabled       boolean          NOT NULL DEFAULT true,
    max_attempts  integer          NOT NULL,
    timeout       double precision NOT NULL,
    description   text,
    created_at    timestamptz      NOT NULL,
    updated_at    timestamptz      NOT NULL,
    CONSTRAINT webhooks_max_attempts_check CHECK (max_attempts BETWEEN 1 AND 1000),
    CONSTRAINT webhooks_timeout_check CHECK (timeout > 0 AND timeout <= 300),
    CONSTRAINT webhooks_actions_check CHECK (cardinality(actions) > 0)
);

-- The delivery log: one row per attempt (delivered, failed, refused by the address guard, or skipped
-- because the webhook was disabled). `delivery` is the delivery job's id, sent as the Pageq-Delivery header.
CREATE TABLE {schema}.webhook_deliveries (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    webhook    bigint           NOT NULL REFERENCES {schema}.webhooks (id) ON DELETE CASCADE,
    delivery   bigint           NOT NULL,
    event      bigint           NOT NULL,
    event_type text             NOT NULL,
    attempt    integer          NOT NULL,
    at         timestamptz      NOT NULL,
    outcome    text             NOT NULL,
    status     integer,
    latency    double precision,
    error      text,
    CONSTRAINT webhook_deliveries_outcome_check
        CHECK (outcome IN ('delivered', 'failed', 'refused', 'skipped'))
);
CREATE INDEX webhook_deliveries_webhook_idx ON {schema}.webhook_deliveries (webhook, id DESC);
CREATE INDEX webhook_deliveries_at_brin ON {schema}.webhook_deliveries USING brin (at);

-- In-process listeners (`app.on`, `app.events`): the audit actions each wants, until it expires (it renews).
CREATE TABLE {schema}.event_listeners (
    id         text        PRIMARY KEY,
    actions    text[]      NOT NULL,
    expires_at timestamptz NOT NULL
);

-- What the trigger currently does: the actions in its WHEN clause, and those it NOTIFYs listeners of.
CREATE TABLE {schema}.event_routes (
    one     boolean PRIMARY KEY DEFAULT true CHECK (one),
    actions text[]  NOT NULL DEFAULT '{}',
    notify  text[]  NOT NULL DEFAULT '{}'
);
INSERT INTO {schema}.event_routes DEFAULT VALUES;

-- The event type of an audit action (NULL: not an event). Kept in step with pageq/webhooks/events.py.
CREATE FUNCTION {schema}.event_type(p_action text) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE p_action
        WHEN 'enqueue' THEN 'job.enqueued'
        WHEN 'claim' THEN 'job.running'
        WHEN 'complete' THEN 'job.succeeded'
        WHEN 'retry' THEN 'job.retrying'
        WHEN 'rescue' THEN 'job.retrying'
        WHEN 'bury' THEN 'job.dead'
        WHEN 'cancel' THEN 'job.cancelled'
        WHEN 'release' THEN 'job.released'
        WHEN 'requeue' THEN 'job.requeued'
        WHEN 'run_now' THEN 'job.requeued'
    END
$$;

-- The audit level an action is recorded at (1 actions, 2 full): what events of it need.
CREATE FUNCTION {schema}.event_level(p_actions text[]) RETURNS smallint
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_actions && ARRAY['claim', 'complete', 'retry', 'rescue', 'bury', 'release']
                THEN 2 ELSE 1 END::smallint
$$;

-- The event of an audit row: small and never secret. Encrypted results and error messages stay out
-- (nothing is decrypted in SQL), so do results over 4 KiB; error messages are cut at 1,000 characters.
CREATE FUNCTION {schema}.event_of(a {schema}.audit) RETURNS jsonb
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    j record;
    v_previous text;
    v_error jsonb;
    v_event jsonb;
BEGIN
    IF a.action IN ('complete', 'bury', 'cancel') THEN
        SELECT f.state, f.attempts, f.max_attempts, f.lease_token, f.result, f.errors -> -1 AS last_error
        INTO j FROM {schema}.finished_jobs f WHERE f.id = a.job_id LIMIT 1;
    ELSE
        SELECT l.state, l.attempts, l.max_attempts, l.lease_token, NULL::jsonb AS result,
               l.errors -> -1 AS last_error
        INTO j FROM {schema}.jobs l WHERE l.id = a.job_id LIMIT 1;
    END IF;
    -- an audit row the job's state does not bear out (written by hand: every pageq role may append to the
    -- trail) announces nothing
    -- (the CASE in parentheses: PL/pgSQL ends an IF's condition at its first THEN)
    IF NOT FOUND OR NOT (CASE a.action
        WHEN 'enqueue' THEN j.state IN ('scheduled', 'queued', 'blocked')
        WHEN 'claim' THEN j.state = 'running'
        WHEN 'complete' THEN j.state = 'succeeded'
        WHEN 'bury' THEN j.state = 'dead'
        WHEN 'cancel' THEN j.state = 'cancelled'
        WHEN 'retry' THEN j.state = 'retrying'
        WHEN 'rescue' THEN j.state = 'retrying'
        ELSE j.state = 'queued' END)  -- release, requeue, run_now
    THEN
        RETURN NULL;
    END IF;
    v_previous := CASE a.action
        WHEN 'claim' THEN CASE WHEN j.attempts > 1 THEN 'retrying' ELSE 'queued' END
        WHEN 'cancel' THEN CASE WHEN j.lease_token IS NOT NULL THEN 'running' END
        WHEN 'enqueue' THEN NULL WHEN 'requeue' THEN NULL WHEN 'run_now' THEN NULL
        ELSE 'running' END;
    v_event := jsonb_build_object(
        'id', a.id, 'type', {schema}.event_type(a.action),
        'at', to_char(a.at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
        'job', jsonb_build_object('id', a.job_id, 'task', a.task, 'queue', a.queue, 'state', j.state,
                                  'previous', v_previous, 'attempt', j.attempts,
                                  'max_attempts', j.max_attempts),
        'principal', a.principal, 'reason', a.reason);
    IF a.action IN ('retry', 'rescue', 'bury', 'cancel') AND jsonb_typeof(j.last_error) = 'object' THEN
        v_error := jsonb_build_object('reason', j.last_error ->> 'reason',
                                      'message', left(j.last_error ->> 'error', 1000));
        IF j.last_error ? '$enc' THEN
            v_error := v_error || '{"encrypted": true}';
        END IF;
        v_event := v_event || jsonb_build_object('error', v_error);
    END IF;
    IF a.action = 'complete' AND j.result IS NOT NULL THEN
        IF jsonb_typeof(j.result) = 'object' AND j.result ? '$enc' THEN
            v_event := v_event || '{"result_omitted": "encrypted"}';
        ELSIF octet_length(j.result::text) > 4096 THEN
            v_event := v_event || '{"result_omitted": "too_large"}';
        ELSE
            v_event := v_event || jsonb_build_object('result', j.result);
        END IF;
    END IF;
    RETURN v_event;
END
$$;

-- The trigger's function: NOTIFY listeners (the actions in TG_ARGV[0]) and enqueue one delivery job per
-- matching enabled webhook. SECURITY DEFINER: whoever wrote the audit row (a producer role too) enqueues
-- deliveries it could not enqueue itself. Deliveries are audited like any enqueue; the WHEN clause keeps the
-- delivery task's own rows out, so deliveries never announce themselves.
CREATE FUNCTION {schema}.audit_event() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_event jsonb := {schema}.event_of(NEW);
    v_made integer;
BEGIN
    IF v_event IS NULL THEN
        RETURN NULL;
    END IF;
    IF NEW.action = ANY(string_to_array(TG_ARGV[0], ',')) THEN
        PERFORM pg_notify('pageq_events_' || '{schema}', v_event::text);
    END IF;
    WITH made AS (
        INSERT INTO {schema}.jobs (id, task, queue, args, state, priority, run_at, max_attempts, timeout,
                                   created_at, slot)
        SELECT nextval('{schema}.job_id_seq'), 'pageq.webhook', 'pageq.webhooks',
               jsonb_build_object('webhook', w.id, 'event', v_event), 'queued', 0, now(), w.max_attempts,
               w.timeout + 5, now(), (SELECT r.slot FROM {schema}.rotation r)
        FROM {schema}.webhooks w
        WHERE w.enabled AND NEW.action = ANY(w.actions) AND NEW.queue LIKE w.queue_like
          AND NEW.task LIKE w.task_like
        RETURNING id, queue, task
    ), audited AS (
        INSERT INTO {schema}.audit (action, job_id, queue, task, reason)
        SELECT 'enqueue', m.id, m.queue, m.task, 'webhook' FROM made m
        WHERE (SELECT c.level FROM {schema}.audit_config c) >= 1
    )
    SELECT count(*) INTO v_made FROM made;
    IF v_made > 0 THEN
        PERFORM pg_notify('{channel}', 'pageq.webhooks');
    END IF;
    RETURN NULL;
END
$$;

-- Make the trigger match what enabled webhooks and live listeners want: created, changed or dropped, only
-- when that changed. The caller locked event_routes first (every writer of webhooks or listeners does, before
-- anything else in its transaction), so changes of routes are serialised without deadlocks. The DDL waits at
-- most a second for writers of the audit trail (they queue behind it meanwhile): past that it fails and the
-- caller tries again.
CREATE FUNCTION {schema}.events_sync(p_now timestamptz) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET lock_timeout = '1s' AS $$
DECLARE
    v_current record;
    v_hooks text[];
    v_listen text[];
    v_all text[];
BEGIN
    SELECT actions, notify INTO v_current FROM {schema}.event_routes FOR UPDATE;
    v_hooks := ARRAY(SELECT DISTINCT a FROM {schema}.webhooks w, unnest(w.actions) AS a WHERE w.enabled);
    v_listen := ARRAY(SELECT DISTINCT a FROM {schema}.event_listeners l, unnest(l.actions) AS a
                      WHERE l.expires_at > p_now ORDER BY a);
    v_all := ARRAY(SELECT DISTINCT a FROM unnest(v_hooks || v_listen) AS a ORDER BY a);
    IF v_current.actions = v_all AND v_current.notify = v_listen THEN
        RETURN false;
    END IF;
    IF cardinality(v_all) = 0 THEN
        DROP TRIGGER IF EXISTS audit_events ON {schema}.audit;
    ELSE
        EXECUTE format(
            'CREATE OR REPLACE TRIGGER audit_events AFTER INSERT ON {schema}.audit FOR EACH ROW '
            'WHEN (NEW.action IN (%s) AND NEW.decision = ''allow'' AND NEW.job_id IS NOT NULL '
            'AND NEW.task IS DISTINCT FROM ''pageq.webhook'') EXECUTE FUNCTION {schema}.audit_event(%L)',
            (SELECT string_agg(quote_literal(a), ', ') FROM unnest(v_all) AS a), array_to_string(v_listen, ','));
    END IF;
    UPDATE {schema}.event_routes SET actions = v_all, notify = v_listen;
    RETURN true;
END
$$;

-- Whether an event (id, job, type) is one the audit trail recorded: a delivery job written by hand, not by
-- the trigger, is refused (a worker role may not read the trail itself).
CREATE FUNCTION {schema}.event_recorded(p_event bigint, p_job bigint, p_type text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT EXISTS (SELECT FROM {schema}.audit a WHERE a.id = p_event AND a.job_id = p_job
                   AND a.decision = 'allow' AND {schema}.event_type(a.action) = p_type)
$$;

-- Lowering the audit level below what enabled webhooks need is refused: their events would stop silently.
CREATE FUNCTION {schema}.audit_level_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_ids text;
BEGIN
    SELECT string_agg(w.id::text, ', ' ORDER BY w.id) INTO v_ids FROM {schema}.webhooks w
    WHERE w.enabled AND {schema}.event_level(w.actions) > NEW.level;
    IF v_ids IS NOT NULL THEN
        RAISE EXCEPTION 'pageq.invalid:enabled webhooks % need a higher audit level: disable them first', v_ids;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER audit_level_guard BEFORE UPDATE OF level ON {schema}.audit_config
    FOR EACH ROW EXECUTE FUNCTION {schema}.audit_level_guard();

-- Webhook administration, each in one transaction with the trigger's update and its audit row. The Python
-- API checks the caller's `manage` grant first; these are SECURITY DEFINER (only the owner may change a
-- trigger) and executable by the owner and admin roles only.
CREATE FUNCTION {schema}.webhook_create(
    p_id bigint, p_url text, p_events text[], p_actions text[], p_queue text, p_task text, p_queue_like text,
    p_task_like text, p_secret jsonb, p_hint text, p_max_attempts integer, p_timeout double precision,
    p_description text, p_enabled boolean, p_now timestamptz
) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM FROM {schema}.event_routes FOR UPDATE;
    IF p_enabled AND {schema}.event_level(p_actions) > (SELECT level FROM {schema}.audit_config) THEN
        RAISE EXCEPTION 'pageq.invalid:these events need the audit level %',
            CASE {schema}.event_level(p_actions) WHEN 2 THEN 'full' ELSE 'actions' END;
    END IF;
    INSERT INTO {schema}.webhooks (id, url, events, actions, queue_pattern, task_pattern, queue_like, task_like,
                                   secret, hint, enabled, max_attempts, timeout, description, created_at,
                                   updated_at)
    VALUES (p_id, p_url, p_events, p_actions, p_queue, p_task, p_queue_like, p_task_like, p_secret, p_hint,
            p_enabled, p_max_attempts, p_timeout, p_description, p_now, p_now);
    PERFORM {schema}.events_sync(p_now);
    PERFORM pg_notify('{channel}', '!webhooks') WHERE p_enabled;  -- workers start serving deliveries
    INSERT INTO {schema}.audit (db_role, action, detail)
    VALUES (session_user, 'webhook.create', jsonb_build_object('webhook', p_id, 'url', p_url, 'events', p_events));
    RETURN p_id;
END
$$;

-- Enable or disable a webhook (deliveries already enqueued for a disabled one are skipped and logged).
CREATE FUNCTION {schema}.webhook_set_enabled(p_id bigint, p_enabled boolean, p_now timestamptz)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_actions text[];
BEGIN
    PERFORM FROM {schema}.event_routes FOR UPDATE;
    UPDATE {schema}.webhooks SET enabled = p_enabled, updated_at = p_now WHERE id = p_id
    RETURNING actions INTO v_actions;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF p_enabled AND {schema}.event_level(v_actions) > (SELECT level FROM {schema}.audit_config) THEN
        RAISE EXCEPTION 'pageq.invalid:webhook % needs the audit level %', p_id,
            CASE {schema}.event_level(v_actions) WHEN 2 THEN 'full' ELSE 'actions' END;
    END IF;
    PERFORM {schema}.events_sync(p_now);
    PERFORM pg_notify('{channel}', '!webhooks') WHERE p_enabled;
    INSERT INTO {schema}.audit (db_role, action, detail)
    VALUES (session_user, CASE WHEN p_enabled THEN 'webhook.enable' ELSE 'webhook.disable' END,
            jsonb_build_object('webhook', p_id));
    RETURN true;
END
$$;

-- Delete a webhook and its delivery log (pending deliveries find it gone and do nothing).
CREATE FUNCTION {schema}.webhook_delete(p_id bigint, p_now timestamptz) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    PERFORM FROM {schema}.event_routes FOR UPDATE;
    DELETE FROM {schema}.webhooks WHERE id = p_id;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM {schema}.events_sync(p_now);
    INSERT INTO {schema}.audit (db_role, action, detail)
    VALUES (session_user, 'webhook.delete', jsonb_build_object('webhook', p_id));
    RETURN true;
END
$$;

-- Replace a webhook's secret; the previous one keeps signing (a second signature) until p_old_until.
CREATE FUNCTION {schema}.webhook_rotate(
    p_id bigint, p_secret jsonb, p_hint text, p_old_until timestamptz, p_now timestamptz
) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    UPDATE {schema}.webhooks
    SET old_secret = CASE WHEN p_old_until > p_now THEN secret END,
        old_until = CASE WHEN p_old_until > p_now THEN p_old_until END,
        secret = p_secret, hint = p_hint, updated_at = p_now
    WHERE id = p_id;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    INSERT INTO {schema}.audit (db_role, action, detail)
    VALUES (session_user, 'webhook.rotate', jsonb_build_object('webhook', p_id, 'old_until', p_old_until));
    RETURN true;
END
$$;

-- Register (or renew) an in-process listener, or remove it (p_actions NULL); returns the audit level, so that
-- the listener can warn when events it wants are not recorded.
CREATE FUNCTION {schema}.events_listen(p_id text, p_actions text[], p_expires timestamptz, p_now timestamptz)
RETURNS smallint
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF p_actions IS NOT NULL AND EXISTS (
        SELECT FROM {schema}.event_listeners WHERE id = p_id AND actions = p_actions AND expires_at > p_now
    ) THEN  -- a renewal: no change of routes, no lock
        UPDATE {schema}.event_listeners SET expires_at = p_expires WHERE id = p_id;
        RETURN (SELECT level FROM {schema}.audit_config);
    END IF;
    PERFORM FROM {schema}.event_routes FOR UPDATE;
    DELETE FROM {schema}.event_listeners WHERE id = p_id OR expires_at <= p_now;
    IF p_actions IS NOT NULL THEN
        INSERT INTO {schema}.event_listeners (id, actions, expires_at) VALUES (p_id, p_actions, p_expires);
    END IF;
    PERFORM {schema}.events_sync(p_now);
    RETURN (SELECT level FROM {schema}.audit_config);
END
$$;

-- The leader's sweep: forget listeners that expired (their process died) and update the trigger.
CREATE FUNCTION {schema}.events_sweep(p_now timestamptz) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v_gone integer;
BEGIN
    IF NOT EXISTS (SELECT FROM {schema}.event_listeners WHERE expires_at <= p_now) THEN
        RETURN 0;
    END IF;
    PERFORM FROM {schema}.event_routes FOR UPDATE;
    DELETE FROM {schema}.event_listeners WHERE expires_at <= p_now;
    GET DIAGNOSTICS v_gone = ROW_COUNT;
    PERFORM {schema}.events_sync(p_now);
    RETURN v_gone;
END
$$;

REVOKE EXECUTE ON FUNCTION
    {schema}.audit_event(), {schema}.events_sync(timestamptz), {schema}.event_recorded(bigint, bigint, text),
    {schema}.webhook_create(bigint, text, text[], text[], text, text, text, text, jsonb, text, integer,
                            double precision, text, boolean, timestamptz),
    {schema}.webhook_set_enabled(bigint, boolean, timestamptz), {schema}.webhook_delete(bigint, timestamptz),
    {schema}.webhook_rotate(bigint, jsonb, text, timestamptz, timestamptz),
    {schema}.events_listen(text, text[], timestamptz, timestamptz), {schema}.events_sweep(timestamptz)
FROM PUBLIC;

-- Roles: 0011's setup_db_roles() is kept (renamed) and called first. Workers read webhooks (to sign what
-- they deliver), log deliveries and register listeners; admins also manage webhooks. Producers get nothing:
-- the trigger enqueues deliveries on their behalf.
ALTER FUNCTION {schema}.setup_db_roles() RENAME TO setup_db_roles_0011;

CREATE FUNCTION {schema}.setup_db_roles() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    s text := '{schema}';
    worker text := s || '_worker';
    admin text := s || '_admin';
BEGIN
    PERFORM {schema}.setup_db_roles_0011();
    EXECUTE format('GRANT SELECT ON %I.webhooks TO %I, %I', s, worker, admin);
    EXECUTE format('GRANT SELECT, INSERT ON %I.webhook_deliveries TO %I, %I', s, worker, admin);
    EXECUTE format('GRANT DELETE ON %I.webhook_deliveries TO %I, %I', s, worker, admin);
    EXECUTE format('GRANT USAGE ON SEQUENCE %I.webhook_id_seq TO %I', s, admin);
    EXECUTE format('GRANT EXECUTE ON FUNCTION %I.events_listen(text, text[], timestamptz, timestamptz), '
                   '%I.events_sweep(timestamptz), %I.event_recorded(bigint, bigint, text) TO %I, %I',
                   s, s, s, worker, admin);
    EXECUTE format('GRANT EXECUTE ON FUNCTION %I.webhook_create(bigint, text, text[], text[], text, text, '
                   'text, text, jsonb, text, integer, double precision, text, boolean, timestamptz), '
                   '%I.webhook_set_enabled(bigint, boolean, timestamptz), %I.webhook_delete(bigint, timestamptz), '
                   '%I.webhook_rotate(bigint, jsonb, text, timestamptz, timestamptz) TO %I', s, s, s, s, admin);
END
$$;

DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{schema}_worker') THEN
        PERFORM {schema}.setup_db_roles();
    END IF;
END
$$;
