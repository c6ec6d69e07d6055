// The Python side of the tests (tests/apps/js_harness.py): a database (PAGEQ_TEST_DSN, else an embedded
// PostgreSQL), a schema of its own, `pageq serve` on a free port, and Python producers and workers behind
// a control server. test/run.js starts one for all test files (PAGEQ_TEST_SERVER); a test file run alone
// starts its own. The interpreter is PAGEQ_PYTHON, else the repository's .venv.
import { spawn } from "node:child_process";
import path from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";

export const ROOT = fileURLToPath(new URL("../../..", import.meta.url));
export const PYTHON = process.env.PAGEQ_PYTHON ?? path.join(ROOT, ".venv", "bin", "python");
const HARNESS = path.join(ROOT, "tests", "apps", "js_harness.py");

/**
 * Where the served API and the control server are.
 * @typedef {{url: string, token: string, secret: string, key_id: string, log: string, control: string,
 *   control_key: string}} Hello
 */

/**
 * Start the harness serving `app` (module:attribute) for `principal`, who may do anything and signs with
 * the key `keyId`; it stops when `stop` is called (or this process ends).
 * @returns {Promise<{hello: Hello, stop: () => Promise<void>}>}
 */
export async function startHarness(app = "apps.js_app:app", principal = "js", keyId = "docs-key") {
  const child = spawn(PYTHON, [HARNESS, app, principal, keyId], { stdio: ["pipe", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.setEncoding("utf8").on("data", (chunk) => {
    stderr = (stderr + chunk).slice(-4000);
  });
  const exited = new Promise((resolve) => child.once("exit", resolve));
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  const first = await Promise.race([lines.next(), exited.then(() => ({ done: true, value: "" }))]);
  if (first.done) throw new Error(`the Python harness exited:\n${stderr}`);
  const stop = async () => {
    child.stdin.end();
    await exited;
  };
  return { hello: JSON.parse(first.value), stop };
}

/** A live `pageq serve` whose principal may do anything (a token and a signing key), and Python beside it. */
export class Pageq {
  /** @param {Hello} hello @param {() => Promise<void>} stop */
  constructor(hello, stop) {
    this.hello = hello;
    this.url = hello.url;
    this.token = hello.token;
    this.keyId = hello.key_id;
    this.secret = Buffer.from(hello.secret, "base64");
    this.stop = stop;
  }

  /** The server of test/run.js, or one of this test file's own. */
  static async start() {
    const shared = process.env.PAGEQ_TEST_SERVER;
    if (shared) return new Pageq(JSON.parse(shared), async () => {});
    const { hello, stop } = await startHarness();
    return new Pageq(hello, stop);
  }

  /**
   * Ask Python: enqueue, job, drain, rescue, principal, audit (see js_harness.py's Commands).
   * @param {string} op
   * @param {Record<string, unknown>} [args]
   * @returns {Promise<any>}
   */
  async call(op, args = {}) {
    const response = await fetch(this.hello.control, {
      method: "POST",
      headers: { Authorization: `Bearer ${this.hello.control_key}`, "Content-Type": "application/json" },
      body: JSON.stringify({ op, args }),
    });
    const reply = /** @type {{ok: boolean, value?: any, error?: string}} */ (await response.json());
    if (!reply.ok) throw new Error(`Python ${op}: ${reply.error}`);
    return reply.value;
  }

  /**
   * A job as Python sees it (the API's JSON of it).
   * @param {number} id
   * @returns {Promise<import("@pageq/client").Job>}
   */
  job(id) {
    return this.call("job", { id });
  }
}
