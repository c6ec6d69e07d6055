// The JavaScript Worker against a live `pageq serve`, working jobs that Python enqueued, with Python
// checking what became of them: results, failures (a retry hint, a non-retryable error), heartbeats, a
// lost lease, a timeout, and graceful stops.
import assert from "node:assert/strict";
import { once } from "node:events";
import { after, before, it } from "node:test";
import { Client, JobTimeoutError, NonRetryableError, RetryLaterError, StaleLeaseError, Worker } from "@pageq/client";
import { Pageq } from "./harness.js";

/** @type {Pageq} */
let pageq;
/** @type {Client} */
let client;
/** Requests of the client that succeeded, by path (heartbeats are counted here). @type {Map<string, number>} */
const answered = new Map();
/** @type {string[]} */
const warnings = [];
const logger = { warn: (/** @type {string} */ message) => void warnings.push(message) };

before(async () => {
  pageq = await Pageq.start();
  /** @type {typeof fetch} */
  const counting = async (input, init) => {
    const response = await fetch(input, init);
    const path = new URL(String(input)).pathname;
    if (response.ok) answered.set(path, (answered.get(path) ?? 0) + 1);
    return response;
  };
  client = new Client(pageq.url, { token: pageq.token, fetch: counting });
});
after(() => pageq?.stop());

/** Resolves once `check()` holds (checked every 20 ms), or fails after `seconds`. */
async function until(/** @type {() => boolean | Promise<boolean>} */ check, seconds = 20) {
  const deadline = Date.now() + seconds * 1000;
  while (!(await check())) {
    assert.ok(Date.now() < deadline, "timed out waiting");
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Python enqueues a job; its id. @param {string} task @param {Record<string, unknown>} [args] */
const enqueue = (task, args = {}) => pageq.call("enqueue", { task, args });

it("works jobs Python enqueued, and Python reads their results", async () => {
  const ids = [];
  for (let n = 0; n < 6; n += 1) ids.push(await enqueue("js.add", { a: n, b: 10 }));
  /** @type {number[]} */
  const seen = [];
  const handlers = {
    "js.add": async (
      /** @type {{a: number, b: number}} */ { a, b },
      /** @type {import("@pageq/client").JobContext} */ { job },
    ) => {
      seen.push(job.id);
      await new Promise((resolve) => setTimeout(resolve, 10));
      return { sum: a + b, attempt: job.attempts };
    },
  };
  const worker = new Worker(client, handlers, { queues: ["js"], concurrency: 3, name: "js-test", logger });
  const stats = await worker.run({ idleExit: true });
  assert.deepEqual(stats, { done: 6, failed: 0, lost: 0, released: 0 });
  assert.deepEqual(
    [...seen].sort((x, y) => x - y),
    ids,
  );
  for (const [n, id] of ids.entries()) {
    const job = await pageq.job(id);
    assert.equal(job.state, "succeeded");
    assert.deepEqual(job.result, { sum: n + 10, attempt: 1 });
    assert.equal(job.worker, "js-test");
  }
});

it("fails a job for a retry later, or for good", async () => {
  const later = await enqueue("js.fail", { how: "later" });
  const never = await enqueue("js.fail", { how: "never" });
  const plain = await enqueue("js.fail", { how: "plain" });
  const handlers = {
    "js.fail": (/** @type {{how: string}} */ { how }) => {
      if (how === "later") throw new RetryLaterError("the mail server is busy", 3600);
      if (how === "never") throw new NonRetryableError("no such mailbox");
      throw new TypeError("a bug");
    },
  };
  const stats = await new Worker(client, handlers, { queues: ["js"], logger }).run({ idleExit: true });
  assert.deepEqual(stats, { done: 0, failed: 3, lost: 0, released: 0 });
  const retrying = await pageq.job(later);
  assert.equal(retrying.state, "retrying");
  assert.equal(retrying.errors[0]?.error, "RetryLaterError: the mail server is busy");
  assert.match(retrying.errors[0]?.traceback ?? "", /worker\.test\.js/);
  const delay = Date.parse(retrying.run_at) - Date.now();
  assert.ok(delay > 3000_000 && delay <= 3600_000, `retried in ${delay} ms`);
  const dead = await pageq.job(never);
  assert.equal(dead.state, "dead");
  assert.equal(dead.attempts, 1);
  assert.equal(dead.errors[0]?.error, "NonRetryableError: no such mailbox");
  const bug = await pageq.job(plain);
  assert.equal(bug.state, "retrying"); // the task's backoff
  assert.equal(bug.errors[0]?.error, "TypeError: a bug");
  for (const id of [later, plain]) await client.cancel(id);
});

it("fails a job whose result cannot be sent", async () => {
  const id = await enqueue("js.add", { a: 1, b: 2 });
  const handlers = { "js.add": () => ({ sum: 3n }) }; // a BigInt is not JSON
  const stats = await new Worker(client, handlers, { queues: ["js"], logger }).run({ idleExit: true });
  assert.deepEqual(stats, { done: 0, failed: 1, lost: 0, released: 0 });
  const job = await pageq.job(id);
  assert.equal(job.state, "retrying");
  assert.match(job.errors[0]?.error ?? "", /^TypeError: .*BigInt/);
  await client.cancel(id);
});

it("claims again after a claim got no answer", async () => {
  const id = await enqueue("js.add", { a: 2, b: 3 });
  let failures = 1;
  /** @type {typeof fetch} */
  const flaky = async (input, init) => {
    if (String(input).endsWith("/v1/claims") && failures-- > 0) throw new TypeError("fetch failed");
    return fetch(input, init);
  };
  const unreliable = new Client(pageq.url, { token: pageq.token, fetch: flaky });
  warnings.length = 0;
  const stats = await new Worker(
    unreliable,
    { "js.add": ({ a, b }) => a + b },
    { queues: ["js"], pollInterval: 0.05, logger },
  ).run({ maxJobs: 1 });
  assert.deepEqual(stats, { done: 1, failed: 0, lost: 0, released: 0 });
  assert.match(warnings.join("\n"), /claim failed, trying again in 0.05 s: POST \/v1\/claims: fetch failed/);
  assert.equal((await pageq.job(id)).result, 5);
});

it("heartbeats a job that runs longer than its lease", async () => {
  const id = await enqueue("js.sleep");
  const path = `/v1/jobs/${id}/heartbeat`;
  const handlers = {
    "js.sleep": async () => {
      await until(() => (answered.get(path) ?? 0) >= 4); // 4 heartbeats: 2 s, past the 1.5 s lease
      assert.deepEqual(await pageq.call("rescue"), [0, 0]); // the rescuer finds the lease alive
      return "awake";
    },
  };
  const stats = await new Worker(client, handlers, { queues: ["js"], lease: 1.5, logger }).run({ maxJobs: 1 });
  assert.deepEqual(stats, { done: 1, failed: 0, lost: 0, released: 0 });
  assert.equal((await pageq.job(id)).result, "awake");
});

it("drops a job whose lease was lost: the handler is told, nothing is acknowledged", async () => {
  const id = await enqueue("js.sleep");
  /** @type {unknown} */
  let reason;
  const handlers = {
    "js.sleep": async (/** @type {unknown} */ _args, /** @type {import("@pageq/client").JobContext} */ { signal }) => {
      assert.deepEqual(await pageq.call("rescue", { ahead: 3600 }), [1, 0]); // as if the worker had stalled
      await once(signal, "abort"); // the next heartbeat gets 409
      reason = signal.reason;
      return "too late";
    },
  };
  warnings.length = 0;
  const stats = await new Worker(client, handlers, { queues: ["js"], lease: 1.5, logger }).run({ maxJobs: 1 });
  assert.deepEqual(stats, { done: 0, failed: 0, lost: 1, released: 0 });
  assert.ok(reason instanceof StaleLeaseError);
  assert.ok(
    warnings.some((w) => w.includes(`job ${id}: lease lost`)),
    warnings.join("\n"),
  );
  const job = await pageq.job(id);
  assert.equal(job.state, "retrying");
  assert.equal(job.result, null);
  await client.cancel(id);
});

it("fails a job that runs past its timeout", async () => {
  const id = await pageq.call("enqueue", { task: "js.sleep", args: {}, timeout: 0.5 });
  const handlers = {
    "js.sleep": async (/** @type {unknown} */ _args, /** @type {import("@pageq/client").JobContext} */ { signal }) => {
      await once(signal, "abort");
      assert.ok(signal.reason instanceof JobTimeoutError);
    },
  };
  const stats = await new Worker(client, handlers, { queues: ["js"], logger }).run({ maxJobs: 1 });
  assert.deepEqual(stats, { done: 0, failed: 1, lost: 0, released: 0 });
  const job = await pageq.job(id);
  assert.equal(job.state, "retrying");
  assert.match(job.errors[0]?.error ?? "", /^JobTimeoutError: job \d+ ran longer than its timeout of 0.5 s$/);
  await client.cancel(id);
});

it("stops gracefully: no more claims, running jobs finish", async () => {
  const first = await enqueue("js.add", { a: 1, b: 1 });
  const second = await enqueue("js.add", { a: 2, b: 2 });
  /** @type {() => void} */
  let proceed = () => {};
  const gate = new Promise((resolve) => {
    proceed = () => resolve(undefined);
  });
  let started = 0;
  const handlers = {
    "js.add": async (/** @type {{a: number, b: number}} */ { a, b }) => {
      started += 1;
      await gate;
      return a + b;
    },
  };
  const worker = new Worker(client, handlers, { queues: ["js"], concurrency: 1, logger });
  const running = worker.run();
  await until(() => started === 1);
  const stopped = worker.stop();
  proceed();
  await stopped;
  assert.deepEqual(await running, { done: 1, failed: 0, lost: 0, released: 0 });
  const states = [(await pageq.job(first)).state, (await pageq.job(second)).state].sort();
  assert.deepEqual(states, ["queued", "succeeded"]); // the one it ran finished, the other was never claimed
  await client.cancel((await pageq.job(first)).state === "queued" ? first : second);
});

it("stops with a grace period: unfinished jobs are released, their attempt not counted", async () => {
  const id = await enqueue("js.sleep");
  /** @type {AbortSignal | undefined} */
  let handed;
  const handlers = {
    "js.sleep": (/** @type {unknown} */ _args, /** @type {import("@pageq/client").JobContext} */ { signal }) => {
      handed = signal;
      return new Promise(() => {}); // never ends on its own
    },
  };
  const abort = new AbortController();
  const worker = new Worker(client, handlers, { queues: ["js"], logger });
  const running = worker.run({ signal: abort.signal });
  await until(() => handed !== undefined);
  abort.abort(); // as a SIGTERM handler would: stop, letting the job finish
  await worker.stop({ timeout: 0.2 }); // but not for long
  assert.deepEqual(await running, { done: 0, failed: 0, lost: 0, released: 1 });
  assert.equal(handed?.aborted, true);
  const job = await pageq.job(id);
  assert.equal(job.state, "queued");
  assert.equal(job.attempts, 0);
  await client.cancel(id);
});

it("stops on an error it cannot work around (no grant to work)", async () => {
  const token = await pageq.call("principal", { name: "js-reader", actions: ["read"] });
  const worker = new Worker(new Client(pageq.url, { token }), { "js.add": () => 0 }, { queues: ["js"], logger });
  await assert.rejects(worker.run(), { name: "ForbiddenError", status: 403, code: "forbidden" });
});
