/**
 * Verifying pageq's webhook deliveries (docs/webhooks.md), the same check as Python's
 * `pageq.webhooks.verify`. A delivery carries
 *
 * `Pageq-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>[,v1=...]`
 *
 * (a second `v1` while the sender rotates the secret) and `Pageq-Delivery: <id>`, the same on every retry of
 * one delivery. Node only (`node:crypto`): receivers are servers.
 */

import { createHmac, timingSafeEqual } from "node:crypto";
import type { JobState } from "./types.js";

/** Seconds a signature stays valid on either side of the receiver's clock. */
export const TOLERANCE = 300;
export const SIGNATURE_HEADER = "Pageq-Signature";
export const DELIVERY_HEADER = "Pageq-Delivery";
const MAX_HEADER = 1024;
const STAMP = /^[0-9]{1,12}$/;

/** A secret as pageq showed it (`whsec_...`: its UTF-8 bytes are the key), or the key's bytes. */
export type WebhookSecret = string | Uint8Array;

/** Request headers: a fetch `Headers`, or an object such as Node's `req.headers` (names in any case). */
export type WebhookHeaders = Headers | Record<string, string | readonly string[] | undefined>;

/** A job event as a webhook receives it (docs/webhooks.md, "Event types"). */
export interface WebhookEvent {
  /** The audit row's id: unique per schema. */
  id: number;
  /** `job.enqueued`, `job.running`, `job.succeeded`, `job.retrying`, `job.dead`, `job.cancelled`, ... */
  type: string;
  /** When the transition happened (ISO 8601, UTC). */
  at: string;
  job: {
    id: number;
    task: string;
    queue: string;
    state: JobState;
    previous: JobState | null;
    attempt: number;
    max_attempts: number;
  };
  principal: string | null;
  reason: string | null;
  /** The last error, on `job.retrying`, `job.dead` and `job.cancelled`. */
  error?: { reason: string | null; message: string | null; encrypted?: true };
  /** The handler's result on `job.succeeded` (under 4 KiB and not encrypted). */
  result?: unknown;
  result_omitted?: "too_large" | "encrypted";
  [extension: string]: unknown;
}

/**
 * A delivery whose signature does not verify: a missing or malformed header, no signature matching (a wrong
 * secret, an altered body), a timestamp outside the tolerance, or a body that is not a JSON object.
 */
export class SignatureError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SignatureError";
  }
}

/**
 * Check a delivery's `Pageq-Signature` over the raw body and return the event it carries; throws a
 * {@link SignatureError} otherwise. `secret` may be a list (the old and the new one while you rotate yours).
 * `now` is in milliseconds since the epoch. Deduplicate by the `Pageq-Delivery` header: a delivery may
 * arrive more than once.
 *
 * ```ts
 * import { verify } from "@pageq/client";
 *
 * app.post("/pageq-events", express.raw({ type: "application/json" }), (req, res) => {
 *   const event = verify(req.headers, req.body, process.env.PAGEQ_WEBHOOK_SECRET!);
 *   res.sendStatus(204);
 * });
 * ```
 */
export function verify(
  headers: WebhookHeaders,
  rawBody: Uint8Array | string,
  secret: WebhookSecret | readonly WebhookSecret[],
  tolerance: number = TOLERANCE,
  now: number = Date.now(),
): WebhookEvent {
  const value = header(headers, SIGNATURE_HEADER);
  if (value === undefined) throw new SignatureError(`no ${SIGNATURE_HEADER} header`);
  const { stamp, given } = parse(value);
  if (Math.abs(now / 1000 - stamp) > tolerance) {
    throw new SignatureError(`the signature's timestamp is more than ${tolerance} s away`);
  }
  const body = typeof rawBody === "string" ? Buffer.from(rawBody, "utf8") : Buffer.from(rawBody);
  const keys: readonly WebhookSecret[] = typeof secret === "string" || secret instanceof Uint8Array ? [secret] : secret;
  const signed = Buffer.concat([Buffer.from(`${stamp}.`), body]);
  let matched = false;
  for (const key of keys) {
    const expected = Buffer.from(createHmac("sha256", key).update(signed).digest("hex"));
    for (const candidate of given) {
      // every pair is compared (no early exit): the time taken does not tell which one matched
      if (candidate.length === expected.length && timingSafeEqual(candidate, expected)) matched = true;
    }
  }
  if (!matched) throw new SignatureError("no signature matches (wrong secret, or an altered body)");
  let event: unknown;
  try {
    event = JSON.parse(body.toString("utf8"));
  } catch {
    event = undefined;
  }
  if (typeof event !== "object" || event === null || Array.isArray(event)) {
    throw new SignatureError("the body is not a JSON object");
  }
  return event as WebhookEvent;
}

/** The `Pageq-Signature` value for `body` at `stamp` (unix seconds): one `v1` per secret. For tests. */
export function sign(rawBody: Uint8Array | string, secrets: readonly WebhookSecret[], stamp: number): string {
  const body = typeof rawBody === "string" ? Buffer.from(rawBody, "utf8") : Buffer.from(rawBody);
  const signed = Buffer.concat([Buffer.from(`${stamp}.`), body]);
  const parts = secrets.map((key) => `v1=${createHmac("sha256", key).update(signed).digest("hex")}`);
  return [`t=${stamp}`, ...parts].join(",");
}

function header(headers: WebhookHeaders, name: string): string | undefined {
  if (typeof Headers !== "undefined" && headers instanceof Headers) return headers.get(name) ?? undefined;
  const wanted = name.toLowerCase();
  for (const [key, value] of Object.entries(headers as Record<string, string | readonly string[] | undefined>)) {
    if (key.toLowerCase() !== wanted || value === undefined) continue;
    if (typeof value === "string") return value;
    if (value.length !== 1) throw new SignatureError(`more than one ${SIGNATURE_HEADER} header`);
    return value[0];
  }
  return undefined;
}

function parse(value: string): { stamp: number; given: Buffer[] } {
  if (value.length > MAX_HEADER) throw new SignatureError("the signature header is too long");
  let stamp: number | undefined;
  const given: Buffer[] = [];
  for (const part of value.split(",")) {
    const entry = part.trim();
    const at = entry.indexOf("=");
    if (at < 0) throw new SignatureError("malformed signature header");
    const key = entry.slice(0, at);
    const item = entry.slice(at + 1);
    if (key === "t") {
      if (stamp !== undefined || !STAMP.test(item)) throw new SignatureError("malformed signature header");
      stamp = Number(item);
    } else if (key === "v1") {
      given.push(Buffer.from(item, "utf8"));
    }
  }
  if (stamp === undefined || given.length === 0) {
    throw new SignatureError("malformed signature header: it needs t= and v1=");
  }
  return { stamp, given };
}
