-- Security: principals, tokens, grants, the audit trail and its seals, key rotation, database roles.
-- Every change to principals, tokens and grants writes its audit row in the same statement (any level).

-- name: principal_create
-- Create a principal (fails if it exists).
WITH made AS (
    INSERT INTO {schema}.principals (name, note) VALUES (%(name)s, %(note)s) RETURNING name
), audited AS (
    INSERT INTO {schema}.audit (action, detail)
    SELECT 'principal.create', jsonb_build_object('principal', name) FROM made
)
SELECT name FROM made;

-- name: principal_set_disabled
-- Disable (all its tokens stop working at once) or re-enable a principal.
WITH changed AS (
    UPDATE {schema}.principals SET disabled_at = CASE WHEN %(disabled)s THEN now() END
    WHERE name = %(name)s RETURNING name
), audited AS (
    INSERT INTO {schema}.audit (action, detail)
    SELECT CASE WHEN %(disabled)s THEN 'principal.disable' ELSE 'principal.enable' END,
           jsonb_build_object('principal', name) FROM changed
)
SELECT name FROM changed;

-- name: principal_delete
-- Delete a principal with its tokens and grants.
WITH gone AS (
    DELETE FROM {schema}.principals WHERE name = %(name)s RETURNING name
), audited AS (
    INSERT INTO {schema}.audit (action, detail)
    SELECT 'principal.delete', jsonb_build_object('principal', name) FROM gone
)
SELECT name FROM gone;

-- name: principals_list
-- Principals with their number of live tokens and grants.
SELECT p.name, p.created_at, p.disabled_at, p.note,
       (SELECT count(*) FROM {schema}.tokens t WHERE t.principal = p.name AND t.revoked_at IS NULL),
       (SELECT count(*) FROM {schema}.grants g WHERE g.principal = p.name)
FROM {schema}.principals p ORDER BY p.name;

-- name: principal_active
-- Whether a principal exists and is enabled.
SELECT EXISTS (SELECT FROM {schema}.principals WHERE name = %(name)s AND disabled_at IS NULL);

-- name: token_create
-- Store a new token's hash for a principal; returns the token's id.
WITH made AS (
    INSERT INTO {schema}.tokens (hash, principal, hint) VALUES (%(hash)s, %(principal)s, %(hint)s)
    RETURNING id, principal
), audited AS (
    INSERT INTO {schema}.audit (action, detail)
    SELECT 'token.create', jsonb_build_object('principal', principal, 'token_id', id) FROM made
)
SELECT id FROM made;

-- name: token_revoke
-- Revoke a token by id (effective for the next request that checks it).
WITH revoked AS (
    UPDATE {schema}.tokens SET revoked_at = now() WHERE id = %(id)s AND revoked_at IS NULL
    RETURNING id, principal
), audited AS (
    INSERT INTO {schema}.audit (action, detail)
    SELECT 'token.revoke', jsonb_build_object('principal', principal, 'token_id', id) FROM revoked
)
SELECT id FROM revoked;

-- name: tokens_list
-- Tokens (never the secret: only a hint), optionally of one principal.
SELECT id, principal, hint, created_at, revoked_at FROM {schema}.tokens
WHERE %(principal)s::text IS NULL OR principal = %(principal)s
ORDER BY id;

-- name: authenticate
-- The principal of a live token of an enabled principal, by the token's hash.
SELECT t.principal FROM {schema}.tokens t
JOIN {schema}.principals p ON p.name = t.principal
WHERE t.hash = %(hash)s AND t.revoked_at IS NULL AND p.disabled_at IS NULL;

-- name: grant_add
-- Add a grant (allow or deny an action on queue and task patterns).
WITH made AS (
    INSERT INTO {schema}.grants (principal, action, queue_pattern, task_pattern, allow, queue_like, task_like)
    VALUES (coalesce(%(principal)s, nullif(current_setting('pageq.principal', true), '')), %(action)s, %(queue)s, %(task)s, %(allow)s, %(queue_like)s, %(task_like)s)
    RETURNING *
), audited AS (
    INSERT INTO {schema}.audit (action, detail)
    SELECT 'grant.add', jsonb_build_object('principal', principal, 'grant_id', id, 'action', action,
                                           'queue', queue_pattern, 'task', task_pattern, 'allow', allow)
    FROM made
)
SELECT id FROM made;

-- name: grant_remove
-- Remove a grant by id.
WITH gone AS (
    DELETE FROM {schema}.grants WHERE id = %(id)s RETURNING id, principal
), audited AS (
    INSERT INTO {schema}.audit (action, detail)
    SELECT 'grant.remove', jsonb_build_object('principal', principal, 'grant_id', id) FROM gone
)
SELECT id FROM gone;

-- name: grants_list
-- Grants, optionally of one principal; with whether that principal is enabled.
SELECT g.id, g.principal, g.action, g.queue_pattern, g.task_pattern, g.allow, p.disabled_at IS NULL
FROM {schema}.grants g JOIN {schema}.principals p ON p.name = g.principal
WHERE %(principal)s::text IS NULL OR g.principal = %(principal)s
ORDER BY g.id;

-- name: audit_record
-- Record an event that is not a job transition: a denied attempt, a setting changed, a rotation.
INSERT INTO {schema}.audit (principal, action, decision, reason, job_id, queue, task, detail)
VALUES (coalesce(%(principal)s, nullif(current_setting('pageq.principal', true), '')), %(action)s, %(decision)s, %(reason)s, %(job_id)s, %(queue)s, %(task)s,
        %(detail)s::jsonb);

-- name: audit_level_get
-- The audit granularity: 0 off, 1 actions, 2 full.
SELECT level FROM {schema}.audit_config;

-- name: audit_level_set
-- Change the audit granularity (the change itself is always recorded).
WITH changed AS (
    UPDATE {schema}.audit_config SET level = %(level)s RETURNING level
), audited AS (
    INSERT INTO {schema}.audit (action, detail)
    SELECT 'audit.level', jsonb_build_object('level', level) FROM changed
)
SELECT level FROM changed;

-- name: audit_list
-- Audit rows, newest first, filtered by principal, job, action (prefix), time and, for the next page, ids
-- below `before_id` (NULL means any).
SELECT id, at, db_role, principal, action, decision, reason, job_id, queue, task, detail
FROM {schema}.audit
WHERE (%(principal)s::text IS NULL OR principal = %(principal)s)
  AND (%(before_id)s::int8 IS NULL OR id < %(before_id)s)
  AND (%(job_id)s::int8 IS NULL OR job_id = %(job_id)s)
  AND (%(action)s::text IS NULL OR action = %(action)s OR action LIKE %(action)s || '.%%')
  AND (%(decision)s::text IS NULL OR decision = %(decision)s)
  AND (%(since)s::timestamptz IS NULL OR at >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR at < %(until)s)
ORDER BY id DESC
LIMIT %(limit)s;

-- name: audit_seal
-- Seal the rows of every transaction that ended since the last seal into a checkpoint chained to the
-- previous digest: digest = sha256(previous digest | 'from:to' | the row hashes in id order).
-- The range ends at the oldest transaction still running in this database (others cannot write here), or
-- at the snapshot's xmax: every transaction below it has ended, so no row can join the range later.
WITH prev AS (
    SELECT seq, to_xid, digest FROM {schema}.audit_seals ORDER BY seq DESC LIMIT 1
), snap AS (
    SELECT pg_current_snapshot() AS s, (SELECT oid FROM pg_database WHERE datname = current_database()) AS db
), bound AS (
    SELECT coalesce((SELECT to_xid FROM prev), 0) AS lo,
           coalesce((SELECT min(x::text::bigint) FROM pg_snapshot_xip(snap.s) AS x
                     WHERE NOT EXISTS (SELECT FROM pg_stat_activity AS a  -- running in another database
                                       WHERE a.backend_xid = xid(x) AND a.datid <> snap.db)),
                    pg_snapshot_xmax(snap.s)::text::bigint) AS hi
    FROM snap
), sealed AS (
    SELECT coalesce(array_agg(a.id ORDER BY a.id), '{}') AS ids,
           coalesce(string_agg({schema}.audit_row_hash(a), ''::bytea ORDER BY a.id), ''::bytea) AS hashes,
           count(*) AS n
    FROM {schema}.audit a, bound WHERE a.xid >= bound.lo AND a.xid < bound.hi
)
INSERT INTO {schema}.audit_seals (seq, from_xid, to_xid, ids, hashes, prev_digest, digest, sealed_by)
SELECT coalesce((SELECT seq FROM prev), 0) + 1, bound.lo, bound.hi, sealed.ids, sealed.hashes,
       coalesce((SELECT digest FROM prev), ''::bytea),
       sha256(coalesce((SELECT digest FROM prev), ''::bytea) || convert_to(bound.lo || ':' || bound.hi, 'UTF8')
              || sealed.hashes),
       %(holder)s
FROM bound, sealed WHERE sealed.n > 0
RETURNING seq, cardinality(ids);

-- name: audit_seals
-- The seals in chain order, from a sequence number on.
SELECT seq, from_xid, to_xid, ids, hashes, prev_digest, digest FROM {schema}.audit_seals
WHERE seq >= %(from_seq)s ORDER BY seq LIMIT %(limit)s;

-- name: audit_hashes
-- The current rows of a sealed transaction range with their recomputed hashes, in id order.
SELECT a.id, {schema}.audit_row_hash(a) FROM {schema}.audit a
WHERE a.xid >= %(lo)s AND a.xid < %(hi)s ORDER BY a.id;

-- name: audit_unsealed
-- How many rows no seal covers yet (written after the last seal).
SELECT count(*) FROM {schema}.audit
WHERE xid >= coalesce((SELECT max(to_xid) FROM {schema}.audit_seals), 0);

-- name: encrypted_batch
-- Rows holding values encrypted under another key than the active one, for re-encryption in batches.
-- `tbl` picks live jobs ('jobs') or finished ones ('finished_jobs'); `after` pages by id.
SELECT id, queue, task, args, result, errors FROM (
    SELECT id, queue, task, args, NULL::jsonb AS result, errors, 'jobs' AS tbl FROM {schema}.jobs
    WHERE %(tbl)s = 'jobs' AND id > %(after)s
    UNION ALL
    SELECT id, queue, task, args, result, errors, 'finished_jobs' FROM {schema}.finished_jobs
    WHERE %(tbl)s = 'finished_jobs' AND id > %(after)s
) AS r
WHERE (args ? '$enc' AND args->>'$enc' NOT LIKE %(active)s)
   OR (result ? '$enc' AND result->>'$enc' NOT LIKE %(active)s)
   OR jsonb_path_exists(errors, '$[*]."$enc"')
ORDER BY id LIMIT %(limit)s;

-- name: reencrypt
-- Replace values with their re-encrypted twins, only where they did not change meanwhile.
WITH live AS (
    UPDATE {schema}.jobs AS j SET args = n.args::jsonb, errors = n.errors::jsonb
    FROM unnest(%(ids)b::int8[], %(old_args)b::text[], %(old_errors)b::text[], %(args)b::text[],
                %(errors)b::text[]) AS n(id, old_args, old_errors, args, errors)
    WHERE %(tbl)s = 'jobs' AND j.id = n.id AND j.args = n.old_args::jsonb AND j.errors = n.old_errors::jsonb
    RETURNING j.id
), done AS (
    UPDATE {schema}.finished_jobs AS f
    SET args = n.args::jsonb, errors = n.errors::jsonb, result = n.result::jsonb
    FROM unnest(%(ids)b::int8[], %(old_args)b::text[], %(old_errors)b::text[], %(old_results)b::text[],
                %(args)b::text[], %(errors)b::text[], %(results)b::text[])
         AS n(id, old_args, old_errors, old_result, args, errors, result)
    WHERE %(tbl)s = 'finished_jobs' AND f.id = n.id AND f.args = n.old_args::jsonb
      AND f.errors = n.old_errors::jsonb AND f.result IS NOT DISTINCT FROM n.old_result::jsonb
    RETURNING f.id
)
SELECT id FROM live UNION ALL SELECT id FROM done;

-- name: db_login_create
-- Create (or update) the database login role of a principal, in the group of its kind (needs CREATEROLE).
SELECT {schema}.create_db_login(%(principal)s, %(kind)s, %(password)s);

-- name: db_roles_list
-- Database login roles and their principals.
SELECT role, principal, kind FROM {schema}.db_roles ORDER BY role;

-- name: db_roles_drop
-- Drop the database roles of this schema (before dropping the schema; roles are cluster-wide).
DO $$
BEGIN
    IF to_regproc('{schema}.drop_db_roles') IS NOT NULL THEN
        PERFORM {schema}.drop_db_roles();
    END IF;
END
$$;

-- name: set_principal
-- Name the principal acting on this session: audit rows written on it default to it.
SELECT set_config('pageq.principal', %(principal)s, false);

-- name: set_principal_local
-- The same for the current transaction only: on the caller's connection (`conn=`), whose session is not
-- pageq's to name, and behind a transaction pooler, where a session setting would not follow the client.
SELECT set_config('pageq.principal', %(principal)s, true);

-- name: row_security_active
-- Whether row-level security applies to this session on jobs (then COPY into it is refused: use INSERT).
SELECT row_security_active('{schema}.jobs');

-- name: nonce_use
-- Record the nonce of a signed request; returns a row only if it was not seen before (a replay gets none).
INSERT INTO {schema}.request_nonces (key_id, nonce, expires_at)
VALUES (%(key_id)s, %(nonce)s, %(expires_at)s)
ON CONFLICT (key_id, nonce) DO UPDATE SET expires_at = excluded.expires_at
    WHERE {schema}.request_nonces.expires_at < %(now)s
RETURNING 1;

-- name: nonce_prune
-- Forget nonces whose request window has passed.
DELETE FROM {schema}.request_nonces WHERE expires_at < %(now)s;
