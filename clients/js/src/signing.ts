/**
 * Signed requests (`PQ-HMAC-SHA256`), with WebCrypto (`globalThis.crypto`, in Node >= 20 and browsers):
 *
 * `sig = hex(HMAC-SHA256(secret, METHOD \n PATH?QUERY \n TS \n NONCE \n hex(SHA-256(body))))`
 *
 * The server accepts a request within 300 s of its clock whose nonce it has not seen, so a captured request
 * can be neither replayed nor altered.
 */

export const SCHEME = "PQ-HMAC-SHA256";

const KEY_ID = /^[A-Za-z0-9_.-]{1,64}$/;

/** A signing key shared with the server (`PAGEQ_HTTP_KEYS` there): its id and secret (32 bytes at least). */
export interface SigningKey {
  keyId: string;
  secret: Uint8Array;
}

/** Throws a TypeError unless `key` can sign. */
export function checkSigningKey(key: SigningKey): void {
  if (!KEY_ID.test(key.keyId)) throw new TypeError("a signing key id is 1-64 of A-Za-z0-9_.-");
  if (!(key.secret instanceof Uint8Array) || key.secret.length < 32) {
    throw new TypeError("a signing key's secret must be a Uint8Array of 32 bytes at least");
  }
}

/** The string that is signed; `target` is the path with its query string, exactly as sent. */
export async function canonical(method: string, target: string, ts: number, nonce: string, body: Uint8Array) {
  const digest = hex(await crypto.subtle.digest("SHA-256", new Uint8Array(body)));
  return `${method.toUpperCase()}\n${target}\n${ts}\n${nonce}\n${digest}`;
}

/** The Authorization header value of a request signed at `now` (ms since the epoch) with a fresh nonce. */
export async function authorization(
  key: SigningKey,
  method: string,
  target: string,
  body: Uint8Array,
  now: number = Date.now(),
): Promise<string> {
  const ts = Math.floor(now / 1000);
  const nonce = base64url(crypto.getRandomValues(new Uint8Array(18)));
  const hmac = await crypto.subtle.importKey(
    "raw",
    new Uint8Array(key.secret),
    { name: "HMAC", hash: "SHA-256" },
    false,
    ["sign"],
  );
  const text = await canonical(method, target, ts, nonce, body);
  const sig = hex(await crypto.subtle.sign("HMAC", hmac, new TextEncoder().encode(text)));
  return `${SCHEME} key=${key.keyId},ts=${ts},nonce=${nonce},sig=${sig}`;
}

function hex(buffer: ArrayBuffer): string {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

function base64url(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes))
    .replaceAll("+", "-")
    .replaceAll("/", "_")
    .replaceAll("=", "");
}
