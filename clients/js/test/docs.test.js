// The JavaScript examples of docs/http-api.md (its ```js blocks), each run by node as a module against the
// live server, with PAGEQ_URL, PAGEQ_TOKEN and PAGEQ_SIGNING_SECRET set (as tests/test_http_docs.py runs
// the curl and Python ones); then Python checks the jobs they made.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import { after, before, it } from "node:test";
import { fileURLToPath } from "node:url";
import { Pageq, ROOT } from "./harness.js";

const PACKAGE = fileURLToPath(new URL("..", import.meta.url)); // where "@pageq/client" resolves to itself
const DOC = path.join(ROOT, "docs", "http-api.md");
const BLOCK = /^```js\n(.*?)^```/gms;

/** @type {Pageq} */
let pageq;
before(async () => {
  pageq = await Pageq.start();
});
after(() => pageq?.stop());

/** Run `code` as an ES module: its exit code and output. @param {string} code @param {NodeJS.ProcessEnv} env */
function run(code, env) {
  const child = spawn(process.execPath, ["--input-type=module", "-e", code], { cwd: PACKAGE, env });
  let output = "";
  child.stdout.on("data", (chunk) => (output += chunk));
  child.stderr.on("data", (chunk) => (output += chunk));
  return new Promise((resolve) => child.once("exit", (status) => resolve({ status, output })));
}

it("runs the JavaScript examples of docs/http-api.md", async () => {
  const blocks = [...readFileSync(DOC, "utf8").matchAll(BLOCK)].map((match) => match[1] ?? "");
  assert.ok(blocks.length >= 3, "the JavaScript examples are missing");
  const env = {
    ...process.env,
    PAGEQ_URL: pageq.url,
    PAGEQ_TOKEN: pageq.token,
    PAGEQ_SIGNING_SECRET: pageq.hello.secret,
  };
  for (const code of blocks) {
    const { status, output } = /** @type {{status: number, output: string}} */ (await run(code, env));
    assert.equal(status, 0, `this example failed:\n${code}\n${output}`);
  }
  /** @type {import("@pageq/client").Job[]} */
  const emails = await pageq.call("jobs", { task: "email.send" });
  assert.deepEqual(emails.map((job) => job.state).sort(), ["dead", "succeeded", "succeeded"]);
  assert.ok(emails.every((job) => job.worker?.startsWith("js-")));
  assert.equal((await pageq.call("jobs", { task: "report.build" })).length, 3);
});
