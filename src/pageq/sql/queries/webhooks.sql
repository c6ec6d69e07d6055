-- Webhooks and in-process event listeners (migration 0012): administration, what a delivery reads and
-- logs, and the listener registry that decides, with the webhooks, what the audit trigger announces.

-- name: webhook_next_id
-- An id for a new webhook (its secret, when encrypted, is bound to it before the row exists).
SELECT nextval('{schema}.webhook_id_seq');

-- name: webhook_create
-- Store a webhook and update the audit trigger in one transaction (refused when the audit level is too low
-- for its events).
SELECT {schema}.webhook_create(%(id)s, %(url)s, %(events)s, %(actions)s, %(queue)s, %(task)s,
                               %(queue_like)s, %(task_like)s, %(secret)s::jsonb, %(hint)s, %(max_attempts)s,
                               %(timeout)s, %(description)s, %(enabled)s, %(now)s);

-- name: webhook_set_enabled
-- Enable or disable a webhook (and update the trigger); false when there is no such webhook.
SELECT {schema}.webhook_set_enabled(%(id)s, %(enabled)s, %(now)s);

-- name: webhook_delete
-- Delete a webhook with its delivery log (and update the trigger); false when there is no such webhook.
SELECT {schema}.webhook_delete(%(id)s, %(now)s);

-- name: webhook_rotate
-- Replace a webhook's secret, the old one signing too until `old_until`; false when there is no such webhook.
SELECT {schema}.webhook_rotate(%(id)s, %(secret)s::jsonb, %(hint)s, %(old_until)s, %(now)s);

-- name: webhooks_list
-- Webhooks (one, or all by id) without their secrets, with their delivery counts by outcome over the log.
SELECT w.id, w.url, w.events, w.queue_pattern, w.task_pattern, w.hint, w.enabled, w.max_attempts, w.timeout,
       w.description, w.created_at, w.updated_at, w.old_until,
       (SELECT count(*) FROM {schema}.webhook_deliveries d WHERE d.webhook = w.id AND d.outcome = 'delivered'),
       (SELECT count(*) FROM {schema}.webhook_deliveries d WHERE d.webhook = w.id AND d.outcome <> 'delivered')
FROM {schema}.webhooks w
WHERE %(id)s::int8 IS NULL OR w.id = %(id)s
ORDER BY w.id;

-- name: webhooks_active
-- Whether workers acting as the owner should serve the deliveries' queue: an enabled webhook exists, or a
-- delivery waits (one requeued from the dead-letter queue after its webhook was disabled, say).
SELECT EXISTS (SELECT FROM {schema}.webhooks WHERE enabled)
    OR EXISTS (SELECT FROM {schema}.jobs WHERE queue = 'pageq.webhooks'
               AND state IN ('scheduled', 'queued', 'retrying'));

-- name: webhook_target
-- What a delivery needs: the URL, whether the webhook is enabled, its timeout and secrets (no row: deleted),
-- and whether its event (id, job, type) is one the audit trail recorded.
SELECT url, enabled, timeout, secret, CASE WHEN old_until > %(now)s THEN old_secret END,
       {schema}.event_recorded(%(event)s, %(job)s, %(type)s)
FROM {schema}.webhooks WHERE id = %(id)s;

-- name: webhook_log
-- Log one delivery attempt.
INSERT INTO {schema}.webhook_deliveries
    (webhook, delivery, event, event_type, attempt, at, outcome, status, latency, error)
SELECT %(webhook)s, %(delivery)s, %(event)s, %(event_type)s, %(attempt)s, %(at)s, %(outcome)s, %(status)s,
       %(latency)s, %(error)s
WHERE EXISTS (SELECT FROM {schema}.webhooks WHERE id = %(webhook)s);

-- name: webhook_deliveries
-- A webhook's delivery attempts, newest first (ids below `before_id` for the next page; NULL means any).
SELECT id, webhook, delivery, event, event_type, attempt, at, outcome, status, latency, error
FROM {schema}.webhook_deliveries
WHERE webhook = %(webhook)s AND (%(before_id)s::int8 IS NULL OR id < %(before_id)s)
ORDER BY id DESC
LIMIT %(limit)s;

-- name: webhook_deliveries_prune
-- Forget delivery attempts logged before a cut-off, in bounded batches.
DELETE FROM {schema}.webhook_deliveries
WHERE id IN (SELECT id FROM {schema}.webhook_deliveries WHERE at < %(before)s LIMIT %(limit)s);

-- name: events_listen
-- Register or renew an in-process listener of these audit actions until `expires` (NULL actions: remove it);
-- returns the audit level.
SELECT {schema}.events_listen(%(id)s, %(actions)s, %(expires)s, %(now)s);

-- name: events_sweep
-- Forget listeners that expired and update the trigger; returns how many were forgotten.
SELECT {schema}.events_sweep(%(now)s);

-- name: events_channel
-- Subscribe this session to the events the audit trigger announces to listeners.
LISTEN pageq_events_{schema};

-- name: event_routes
-- What the audit trigger currently does: the audit actions it fires on, those it NOTIFYs listeners of.
SELECT actions, notify FROM {schema}.event_routes;

-- name: webhook_secrets_sealed
-- Webhooks whose secret (or old secret) is encrypted under another key than the active one (`active`: a
-- LIKE pattern of the active key's envelopes), for `pageq keys rotate`.
SELECT id, secret, old_secret FROM {schema}.webhooks
WHERE (secret ? '$enc' AND secret->>'$enc' NOT LIKE %(active)s)
   OR (old_secret ? '$enc' AND old_secret->>'$enc' NOT LIKE %(active)s)
ORDER BY id;

-- name: webhook_secrets_reseal
-- Store a webhook's secrets re-encrypted, only if they did not change meanwhile; true when stored.
UPDATE {schema}.webhooks SET secret = %(secret)s::jsonb, old_secret = %(old_secret)s::jsonb
WHERE id = %(id)s AND secret = %(was)s::jsonb AND old_secret IS NOT DISTINCT FROM %(old_was)s::jsonb
RETURNING true;
