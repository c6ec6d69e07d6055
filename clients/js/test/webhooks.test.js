// verify(): the shared test vector (the same as tests/test_webhook_signing.py), mutated bodies, wrong
// secrets, stale timestamps, malformed headers and two secrets during a rotation; and the receiver of
// docs/webhooks.md (its ```js block) run as it is. No pageq server needed.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { readFileSync } from "node:fs";
import { createServer } from "node:net";
import path from "node:path";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { SignatureError, sign, verify } from "@pageq/client";
import { ROOT } from "./harness.js";

const SECRET = "whsec_test_0123456789abcdefghijklmnop";
const BODY = '{"id":7,"type":"job.dead","job":{"id":42}}';
const T = 1800000000;
const NOW = T * 1000; // verify's clock is in milliseconds
const GOLDEN = "04f6b1d012f8d9ca0cc13e20e659cd3aeeb7d5c9b313c6d67865ad17a5d97b1c";
const OTHER = "whsec_wrong_0123456789abcdefghijkl";

/** @param {string} value @param {string} [message] */
function refused(value, message, body = BODY, secret = SECRET) {
  assert.throws(() => verify({ "pageq-signature": value }, body, secret, 300, NOW), (error) => {
    assert.ok(error instanceof SignatureError, String(error));
    if (message) assert.match(error.message, new RegExp(message));
    return true;
  });
}

describe("verify", () => {
  it("accepts the shared test vector and returns the event", () => {
    const expected = createHmac("sha256", SECRET).update(`${T}.${BODY}`).digest("hex");
    assert.equal(expected, GOLDEN);
    assert.equal(sign(BODY, [SECRET], T), `t=${T},v1=${GOLDEN}`);
    const header = `t=${T},v1=${GOLDEN}`;
    assert.deepEqual(verify({ "Pageq-Signature": header }, Buffer.from(BODY), SECRET, 300, NOW), JSON.parse(BODY));
    assert.equal(verify(new Headers({ "pageq-signature": header }), BODY, SECRET, 300, NOW).job.id, 42);
    assert.equal(verify({ "pageq-signature": [header] }, new TextEncoder().encode(BODY), SECRET, 300, NOW).id, 7);
  });

  it("refuses a mutated body, a wrong secret and a stale timestamp", () => {
    const header = `t=${T},v1=${GOLDEN}`;
    refused(header, "no signature matches", BODY.replace("42", "43"));
    refused(header, "no signature matches", `${BODY} `);
    refused(header, "no signature matches", BODY, OTHER);
    for (let i = 0; i < BODY.length; i++) {
      const bytes = Buffer.from(BODY);
      bytes[i] = (bytes[i] ?? 0) ^ 0x01;
      assert.throws(() => verify({ "pageq-signature": header }, bytes, SECRET, 300, NOW), SignatureError);
    }
    for (const skew of [-301, 301, -10000]) {
      const stale = sign(BODY, [SECRET], T + skew);
      refused(stale, "more than 300 s away");
      assert.equal(verify({ "pageq-signature": stale }, BODY, SECRET, Math.abs(skew), NOW).id, 7);
    }
  });

  it("refuses missing and malformed headers", () => {
    assert.throws(() => verify({}, BODY, SECRET, 300, NOW), /no Pageq-Signature header/);
    for (const value of [
      "",
      `t=${T}`,
      `v1=${GOLDEN}`,
      "garbage",
      `t=abc,v1=${GOLDEN}`,
      `t=${T},t=${T},v1=${GOLDEN}`,
      `t=${"9".repeat(13)},v1=00`,
      `t=-1,v1=${GOLDEN}`,
      `t=${T},v1=${GOLDEN},${"x".repeat(1024)}`,
      `t=${T},v1=é`,
    ]) {
      refused(value);
    }
    refused(`t=${T},v1=${"a".repeat(1100)}`, "too long");
    refused(sign("[1]", [SECRET], T), "not a JSON object", "[1]");
  });

  it("accepts either of two secrets, and either of two signatures", () => {
    const both = sign(BODY, [OTHER, SECRET], T); // the sender signs with both while a rotation lasts
    assert.equal(verify({ "pageq-signature": both }, BODY, SECRET, 300, NOW).id, 7);
    assert.equal(verify({ "pageq-signature": both }, BODY, OTHER, 300, NOW).id, 7);
    const onlyNew = sign(BODY, [OTHER], T); // the receiver accepts its old and its new secret
    assert.equal(verify({ "pageq-signature": onlyNew }, BODY, [SECRET, OTHER], 300, NOW).id, 7);
    assert.throws(() => verify({ "pageq-signature": onlyNew }, BODY, [SECRET], 300, NOW), SignatureError);
  });

  it("checks against the clock by default", () => {
    const now = Math.floor(Date.now() / 1000);
    assert.equal(verify({ "pageq-signature": sign(BODY, [SECRET], now) }, BODY, SECRET).id, 7);
    assert.throws(() => verify({ "pageq-signature": `t=${T},v1=${GOLDEN}` }, BODY, SECRET), /more than 300 s/);
  });
});

/** A free TCP port on 127.0.0.1. @returns {Promise<number>} */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer().once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      server.close(() => resolve(typeof address === "object" && address ? address.port : 0));
    });
  });
}

it("runs the receiver of docs/webhooks.md", async () => {
  const doc = readFileSync(path.join(ROOT, "docs", "webhooks.md"), "utf8");
  const code = doc.split("```js\n")[1]?.split("```")[0] ?? "";
  assert.match(code, /verify\(/);
  const port = await freePort();
  const cwd = fileURLToPath(new URL("..", import.meta.url)); // where "@pageq/client" resolves to itself
  const env = { ...process.env, PAGEQ_WEBHOOK_SECRET: SECRET, PORT: String(port) };
  const child = spawn(process.execPath, ["--input-type=module", "-e", code], { cwd, env });
  let output = "";
  child.stdout.on("data", (chunk) => (output += chunk));
  child.stderr.on("data", (chunk) => (output += chunk));
  try {
    /** @param {string} signature @param {string} body */
    const post = async (signature, body, delivery = "99") => {
      for (let tries = 0; ; tries++) {
        try {
          const headers = { "pageq-signature": signature, "pageq-delivery": delivery };
          return (await fetch(`http://127.0.0.1:${port}/`, { method: "POST", headers, body })).status;
        } catch (error) {
          if (tries > 100 || child.exitCode !== null) throw new Error(`${error}\n${output}`);
          await new Promise((resolve) => setTimeout(resolve, 50)); // the receiver is starting
        }
      }
    };
    const now = Math.floor(Date.now() / 1000);
    assert.equal(await post(sign(BODY, [SECRET], now), BODY), 204);
    assert.equal(await post(sign(BODY, [SECRET], now), BODY), 204); // the same delivery again: handled once
    assert.equal(await post(sign(BODY, [SECRET], now), BODY.replace("42", "43")), 400);
    assert.equal(await post(sign(BODY, [OTHER], now), BODY), 400);
    assert.equal(await post(sign(BODY, [SECRET], now - 400), BODY), 400);
    assert.equal(await post("", BODY), 400);
    assert.equal(output.trim(), "job.dead 42 undefined"); // the vector's job has no state
  } finally {
    child.kill();
  }
});
