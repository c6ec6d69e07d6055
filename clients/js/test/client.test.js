// The client against a live `pageq serve`: producing from JavaScript for Python workers, reading and
// managing jobs, signed requests, and every error as a typed RemoteError carrying the RFC 9457 problem.
import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import {
  Client,
  ConflictError,
  ForbiddenError,
  InvalidError,
  InvalidStateError,
  isTransient,
  MalformedError,
  NotFoundError,
  RateLimitedError,
  RemoteError,
  StaleLeaseError,
  TooLargeError,
  TransportError,
  UnauthenticatedError,
  UnavailableError,
  UnknownTaskError,
} from "@pageq/client";
import { Pageq } from "./harness.js";

/** @type {Pageq} */
let pageq;
/** @type {Client} */
let client;

before(async () => {
  pageq = await Pageq.start();
  client = new Client(pageq.url, { token: pageq.token });
});
after(() => pageq?.stop());

/**
 * The error `promise` rejects with, checked to be a `kind`.
 * @template {new (...args: any[]) => Error} K
 * @param {Promise<unknown>} promise
 * @param {K} kind
 * @returns {Promise<InstanceType<K>>}
 */
async function rejection(promise, kind) {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof kind, `expected a ${kind.name}, got ${error}`);
    return /** @type {InstanceType<K>} */ (error);
  }
  assert.fail(`expected a ${kind.name}`);
}

describe("JavaScript produces, Python works", () => {
  it("enqueues one job and a batch that a Python worker completes", async () => {
    const one = await client.enqueue("py.greet", { name: "one" }, { priority: 3 });
    const many = await client.enqueueMany([
      { task: "py.greet", args: { name: "two" } },
      { task: "py.greet", args: { name: "three", punctuation: "?" }, max_attempts: 2 },
    ]);
    assert.equal(many.length, 2);
    assert.equal((await client.getJob(one)).state, "queued");
    await pageq.call("drain", { queues: ["py"] });
    for (const [id, name, mark] of [
      [one, "one", "!"],
      [many[0], "two", "!"],
      [many[1], "three", "?"],
    ]) {
      const job = await pageq.job(Number(id)); // as Python sees it
      assert.equal(job.state, "succeeded");
      assert.deepEqual(job.result, { greeting: `hello ${name}${mark}`, by: "python" });
      assert.deepEqual(await client.getJob(Number(id)), job); // and as the client reads it
    }
    assert.equal((await pageq.job(one)).priority, 3);
    assert.equal((await pageq.job(many[1])).max_attempts, 2);
    assert.ok((await pageq.call("audit", { action: "enqueue" })).every((/** @type {string} */ p) => p === "js"));
  });

  it("enqueues a batch all or none, and once per idempotency key", async () => {
    const before = (await client.listJobs({ limit: 1000 })).jobs.length;
    const error = await rejection(
      client.enqueueMany([{ task: "py.greet", args: { name: "a" } }, { task: "no.such.task" }]),
      UnknownTaskError,
    );
    assert.ok(error instanceof InvalidError && error instanceof RemoteError);
    assert.equal((await client.listJobs({ limit: 1000 })).jobs.length, before);
    const jobs = [1, 2, 3].map((n) => ({ task: "py.greet", args: { name: `n${n}` }, delay: 3600 }));
    const ids = await client.enqueueMany(jobs, { idempotencyKey: "batch-7" });
    assert.deepEqual(await client.enqueueMany(jobs, { idempotencyKey: "batch-7" }), ids);
    const id = await client.enqueue("py.greet", { name: "k" }, { delay: 3600 }, { idempotencyKey: "one-7" });
    assert.equal(await client.enqueue("py.greet", { name: "k" }, { delay: 3600 }, { idempotencyKey: "one-7" }), id);
    assert.equal((await client.listJobs({ limit: 1000 })).jobs.length, before + 4);
  });

  it("takes a run_at Date and lists jobs page by page", async () => {
    const at = new Date(Date.now() + 86_400_000);
    const ids = await client.enqueueMany(
      [1, 2, 3].map((n) => ({ task: "py.greet", args: { name: `p${n}` }, run_at: at })),
    );
    assert.equal(Date.parse((await pageq.job(ids[0])).run_at), at.getTime());
    const page = await client.listJobs({ state: ["scheduled"], task: "py.greet", limit: 2 });
    assert.equal(page.jobs.length, 2);
    assert.notEqual(page.next_cursor, null);
    /** @type {number[]} */
    const all = [];
    for await (const job of client.iterJobs({ state: "scheduled", limit: 2, created_after: new Date(0) }))
      all.push(job.id);
    assert.ok(ids.every((id) => all.includes(id)));
    assert.deepEqual(
      all,
      [...all].sort((a, b) => b - a),
    ); // newest first
  });
});

describe("managing jobs", () => {
  it("cancels a waiting job once, then answers a typed 409", async () => {
    const id = await client.enqueue("py.greet", { name: "later" }, { delay: 3600 });
    const cancelled = await client.cancel(id);
    assert.equal(cancelled.state, "cancelled");
    assert.equal((await pageq.job(id)).state, "cancelled");
    const error = await rejection(client.cancel(id), InvalidStateError);
    assert.ok(error instanceof ConflictError);
    assert.equal(error.status, 409);
    assert.equal(error.code, "invalid_state");
    assert.equal(error.instance, `/v1/jobs/${id}/cancel`);
  });

  it("requeues, pauses and resumes", async () => {
    const id = await client.enqueue("py.greet", { name: "r" }, { delay: 3600 });
    assert.equal((await client.requeue(id)).state, "queued");
    assert.equal((await client.pauseQueue("py")).paused, true);
    assert.equal((await client.queue("py")).paused, true);
    assert.equal((await client.resumeQueue("py")).paused, false);
    const limited = await client.limitQueue("py", { concurrency: 4, rate_limit: null });
    assert.equal(limited.concurrency, 4);
    assert.ok((await client.queues()).some((queue) => queue.name === "py"));
    await client.cancel(id);
  });
});

describe("errors are typed RFC 9457 problems", () => {
  it("a bad token gets 401", async () => {
    const stranger = new Client(pageq.url, { token: "pq_not_a_real_token_at_all" });
    const error = await rejection(stranger.enqueue("py.greet", { name: "x" }), UnauthenticatedError);
    assert.equal(error.status, 401);
    assert.equal(error.code, "unauthenticated");
    assert.equal(error.title, "Unauthorized");
    assert.equal(error.type, "about:blank");
    assert.equal(error.problem.status, 401);
    assert.equal(typeof error.detail, "string");
  });

  it("signed requests work, and a wrong secret gets 401", async () => {
    const signed = new Client(pageq.url, { signingKey: { keyId: pageq.keyId, secret: pageq.secret } });
    const id = await signed.enqueue("py.greet", { name: "signed" }, { delay: 3600 });
    const page = await signed.listJobs({ task: "py.greet", state: "scheduled", limit: 1 }); // a query string, signed
    assert.equal(page.jobs[0]?.id, id);
    assert.equal((await signed.cancel(id)).state, "cancelled");
    const forged = new Client(pageq.url, { signingKey: { keyId: pageq.keyId, secret: new Uint8Array(32) } });
    await rejection(forged.getJob(id), UnauthenticatedError);
    assert.throws(() => new Client(pageq.url, { signingKey: { keyId: "k", secret: new Uint8Array(8) } }), TypeError);
    assert.throws(() => new Client(pageq.url, {}), TypeError);
  });

  it("403 without the grant, 404, 400 with the fields, 422", async () => {
    const reader = new Client(pageq.url, {
      token: await pageq.call("principal", { name: "reader", actions: ["read"] }),
    });
    const denied = await rejection(reader.enqueue("py.greet", { name: "x" }), ForbiddenError);
    assert.equal(denied.code, "forbidden");
    assert.equal((await rejection(client.getJob(987654321), NotFoundError)).code, "not_found");
    const malformed = await rejection(client.enqueue("py.greet", { name: "x" }, { priority: 99_999 }), MalformedError);
    assert.equal(malformed.code, "malformed");
    assert.ok(malformed.errors?.some((e) => e.loc.includes("priority")));
    const invalid = await rejection(client.enqueue("py.greet", { nom: "x" }), InvalidError);
    assert.equal(invalid.code, "invalid");
    assert.ok(!(invalid instanceof UnknownTaskError));
  });

  it("413 for a body beyond the server's limit, before any work", async () => {
    const before = (await client.listJobs({ limit: 1000 })).jobs.length;
    const error = await rejection(client.enqueue("py.greet", { name: "x".repeat(2 << 20) }), TooLargeError);
    assert.equal(error.code, "too_large");
    assert.equal((await client.listJobs({ limit: 1000 })).jobs.length, before);
  });

  it("an answer that is not problem details (a proxy's) is typed by its status", async () => {
    /** @type {typeof fetch} */
    const proxy = async () => new Response("<html>Bad Gateway</html>", { status: 502, statusText: "Bad Gateway" });
    const error = await rejection(
      new Client(pageq.url, { token: pageq.token, fetch: proxy }).getJob(1),
      UnavailableError,
    );
    assert.equal(error.status, 502);
    assert.equal(error.title, "Bad Gateway");
    assert.equal(error.detail, "<html>Bad Gateway</html>");
    assert.ok(isTransient(error));
    /** @type {typeof fetch} */
    const limited = async () =>
      Response.json(
        { status: 429, code: "rate_limited", title: "Too Many Requests" },
        { status: 429, headers: { "Retry-After": "3" } },
      );
    const slow = await rejection(
      new Client(pageq.url, { token: pageq.token, fetch: limited }).getJob(1),
      RateLimitedError,
    );
    assert.equal(slow.retryAfter, 3);
  });

  it("no answer is a TransportError", async () => {
    const nowhere = new Client("http://127.0.0.1:9", { token: pageq.token, timeout: 5 });
    await rejection(nowhere.getJob(1), TransportError);
  });
});

describe("the remote-worker protocol", () => {
  it("an expired lease gets a typed 409 on complete, and the job is unchanged", async () => {
    const id = await pageq.call("enqueue", { task: "js.add", args: { a: 1, b: 2 } });
    const [job] = await client.claim(["js"], { limit: 1, lease: 60, worker: "js-test" });
    assert.equal(job?.id, id);
    assert.deepEqual(job.args, { a: 1, b: 2 });
    await client.heartbeat(job.id, job.lease_token, 60);
    assert.deepEqual(await pageq.call("rescue", { ahead: 120 }), [1, 0]); // the lease expired; the rescuer ran
    const before = await pageq.job(id);
    assert.equal(before.state, "retrying");
    const error = await rejection(client.complete(job.id, job.lease_token, 3), StaleLeaseError);
    assert.ok(error instanceof ConflictError && error instanceof RemoteError);
    assert.equal(error.status, 409);
    assert.equal(error.code, "stale_lease");
    assert.equal(error.title, "Conflict");
    assert.equal(error.instance, `/v1/jobs/${id}/complete`);
    await rejection(client.fail(job.id, job.lease_token, "late"), StaleLeaseError);
    await rejection(client.heartbeat(job.id, job.lease_token), StaleLeaseError);
    assert.deepEqual(await pageq.job(id), before);
    await client.cancel(id);
  });

  it("claims, fails with a retry hint, then for good", async () => {
    const id = await pageq.call("enqueue", { task: "js.fail", args: { how: "manual" } });
    const [job] = await client.claim(["js"], { tasks: ["js.fail"] });
    assert.ok(job);
    const failed = await client.fail(id, job.lease_token, "Busy: later", { retry_in: 0, traceback: "at x" });
    assert.equal(failed.state, "retrying");
    const [again] = await client.claim(["js"], { tasks: ["js.fail"] });
    assert.equal(again?.attempts, 2);
    assert.equal((await client.fail(id, again.lease_token, "Bad: input", { retryable: false })).state, "dead");
    const dead = await pageq.job(id);
    assert.deepEqual(
      dead.errors.map((e) => e.error),
      ["Busy: later", "Bad: input"],
    );
    assert.equal(dead.errors[0]?.traceback, "at x");
  });

  it("releases a job: queued again, the attempt not counted", async () => {
    const id = await pageq.call("enqueue", { task: "js.add", args: { a: 0, b: 0 } });
    const [job] = await client.claim(["js"], { tasks: ["js.add"] });
    assert.equal(job?.id, id);
    assert.equal((await client.release(id, job.lease_token)).state, "queued");
    assert.equal((await pageq.job(id)).attempts, 0);
    await client.cancel(id);
  });
});
