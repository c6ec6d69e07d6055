/**
 * A worker over HTTP with the guarantees of the Python one: it claims jobs of its queues, runs each with its
 * handler while heartbeating its lease, then completes or fails it; a lost lease is never acknowledged.
 */

import type { Client } from "./client.js";
import {
  isTransient,
  JobTimeoutError,
  NonRetryableError,
  NotFoundError,
  RemoteError,
  RetryLaterError,
  StaleLeaseError,
} from "./errors.js";
import type { Args, ClaimedJob, FailOptions } from "./types.js";

/** What a handler gets beside the job's arguments. */
export interface JobContext {
  /** The job as claimed (id, task, attempts, ...). */
  job: ClaimedJob;
  /**
   * Aborted when the handler should give up: the lease was lost (`reason` a {@link StaleLeaseError}), the
   * job's timeout passed ({@link JobTimeoutError}) or the worker is stopping past its grace period.
   */
  signal: AbortSignal;
}

/**
 * Runs one task: its return value (any JSON value) is the job's result; what it throws fails the attempt
 * (retried by the task's backoff, or as {@link RetryLaterError} says; {@link NonRetryableError}: dead).
 */
export type Handler<A extends Args = any, R = unknown> = (args: A, context: JobContext) => R | Promise<R>;

/** Where the worker reports what it cannot throw (lost leases, failed heartbeats, transient errors). */
export interface Logger {
  warn(message: string): void;
}

export interface WorkerOptions {
  /** The queues to claim from. */
  queues: string[];
  /** Jobs run at once (4). */
  concurrency?: number;
  /** Seconds each lease lasts (30); it is renewed every third of that while the handler runs. */
  lease?: number;
  /** Seconds between claims while the queues are empty (1). */
  pollInterval?: number;
  /** The worker's name, shown on its jobs (`js-<pid>`). */
  name?: string;
  /** Where warnings go (`console`). */
  logger?: Logger;
}

export interface RunOptions {
  /** Stop after this many jobs were finished (done, failed or lost). */
  maxJobs?: number;
  /** Stop when a claim finds nothing and no job is running. */
  idleExit?: boolean;
  /** Stop (gracefully, as {@link Worker.stop}) when this aborts. */
  signal?: AbortSignal;
}

export interface StopOptions {
  /**
   * Seconds to let running handlers finish (default: as long as they take). Past it, their signals abort
   * and their jobs are released: queued again, the attempt not counted.
   */
  timeout?: number;
}

/** What a run did. */
export interface WorkerStats {
  /** Jobs completed. */
  done: number;
  /** Jobs failed (retried later or dead). */
  failed: number;
  /** Jobs whose lease was lost before their acknowledgement (someone else has or had them). */
  lost: number;
  /** Jobs given back when stopping. */
  released: number;
}

interface Held {
  job: ClaimedJob;
  controller: AbortController;
  /** The acknowledgement is under way: no more heartbeats. */
  acking: boolean;
  /** Settles when the job is done with (acknowledged, lost or released). */
  settled?: Promise<void>;
}

type Outcome = { ok: true; result: unknown } | { ok: false; error: unknown };

/**
 * Works jobs over HTTP: claims up to `concurrency` jobs of `queues` (only tasks it has handlers for), runs
 * each as `handlers[task](args, context)`, heartbeats while it runs, then completes or fails it.
 * `stop()` stops claiming and lets running jobs finish (a graceful shutdown).
 *
 * ```ts
 * const worker = new Worker(client, { "email.send": async ({ to }) => ({ sent: to }) }, { queues: ["emails"] });
 * process.once("SIGTERM", () => worker.stop({ timeout: 25 }));
 * await worker.run();
 * ```
 */
export class Worker {
  readonly client: Client;
  readonly handlers: Readonly<Record<string, Handler>>;
  readonly queues: readonly string[];
  readonly concurrency: number;
  readonly lease: number;
  readonly pollInterval: number;
  readonly name: string;
  readonly #logger: Logger;
  readonly #stats: WorkerStats = { done: 0, failed: 0, lost: 0, released: 0 };
  readonly #held = new Map<number, Held>();
  readonly #running = new Set<Promise<void>>();
  #stopping = false;
  #deadline: number | undefined;
  #beating = false;
  #backoff = 0;
  #wake: () => void = () => {};
  #finished: Promise<WorkerStats> | undefined;

  constructor(client: Client, handlers: Record<string, Handler>, options: WorkerOptions) {
    if (Object.keys(handlers).length === 0) throw new TypeError("give at least one handler");
    if (options.queues.length === 0) throw new TypeError("give at least one queue");
    this.client = client;
    this.handlers = { ...handlers };
    this.queues = [...options.queues];
    this.concurrency = options.concurrency ?? 4;
    if (!(Number.isInteger(this.concurrency) && this.concurrency >= 1 && this.concurrency <= 1000)) {
      throw new RangeError("concurrency must be an integer from 1 to 1000");
    }
    this.lease = positive("lease", options.lease ?? 30);
    this.pollInterval = positive("pollInterval", options.pollInterval ?? 1);
    this.name = options.name ?? `js-${(globalThis as { process?: { pid: number } }).process?.pid ?? "worker"}`;
    this.#logger = options.logger ?? console;
  }

  /** Counts so far (of the current or last run). */
  get stats(): WorkerStats {
    return { ...this.#stats };
  }

  /** Work until {@link stop} (or `maxJobs`, or with `idleExit` until the queues are empty); its counts. */
  run(options: RunOptions = {}): Promise<WorkerStats> {
    if (this.#finished !== undefined) throw new Error("this worker is already running");
    this.#stopping = false;
    this.#deadline = undefined;
    this.#backoff = 0;
    Object.assign(this.#stats, { done: 0, failed: 0, lost: 0, released: 0 });
    const onAbort = () => void this.stop();
    options.signal?.addEventListener("abort", onAbort, { once: true });
    if (options.signal?.aborted) this.#stopping = true;
    this.#finished = this.#run(options).finally(() => {
      options.signal?.removeEventListener("abort", onAbort);
      this.#finished = undefined;
    });
    return this.#finished;
  }

  /** Stop claiming and let running jobs finish (see `timeout`); resolves when the run has ended. */
  async stop(options: StopOptions = {}): Promise<void> {
    this.#stopping = true;
    if (options.timeout !== undefined) {
      this.#deadline = Math.min(this.#deadline ?? Infinity, Date.now() + options.timeout * 1000);
    }
    this.#wake();
    await this.#finished?.catch(() => undefined);
  }

  async #run(options: RunOptions): Promise<WorkerStats> {
    const beat = setInterval(() => void this.#heartbeats(), (this.lease / 3) * 1000);
    try {
      await this.#loop(options);
    } finally {
      this.#stopping = true; // even after an error: the running jobs finish first
      await this.#drain();
      clearInterval(beat);
    }
    return this.stats;
  }

  async #loop({ maxJobs, idleExit }: RunOptions): Promise<void> {
    while (!this.#stopping) {
      let free = this.concurrency - this.#running.size;
      if (maxJobs !== undefined) {
        free = Math.min(free, maxJobs - this.#finishedCount() - this.#running.size);
        if (free <= 0 && this.#running.size === 0) return;
      }
      const jobs = free > 0 ? await this.#claim(free) : [];
      for (const job of jobs) this.#start(job);
      if (jobs.length === 0) {
        if (idleExit && this.#running.size === 0 && this.#backoff === 0) return;
        if (this.#stopping) return;
        await this.#sleep(this.#backoff || (free > 0 ? this.pollInterval : undefined));
      }
    }
  }

  /** Up to `limit` jobs; none after a transient failure, and then `#backoff` says how long to wait. */
  async #claim(limit: number): Promise<ClaimedJob[]> {
    const tasks = Object.keys(this.handlers).sort();
    try {
      const jobs = await this.client.claim([...this.queues], { limit, lease: this.lease, worker: this.name, tasks });
      this.#backoff = 0;
      return jobs;
    } catch (error) {
      if (!isTransient(error)) throw error;
      const doubled = Math.min(Math.max(this.#backoff * 2, this.pollInterval), 30);
      this.#backoff = error instanceof RemoteError && error.retryAfter ? error.retryAfter : doubled;
      this.#logger.warn(
        `pageq worker ${this.name}: claim failed, trying again in ${this.#backoff} s: ${describe(error)}`,
      );
      return [];
    }
  }

  #finishedCount(): number {
    const { done, failed, lost, released } = this.#stats;
    return done + failed + lost + released;
  }

  /** Until `seconds` pass (or forever), a job finishes, or stop is called. */
  #sleep(seconds: number | undefined): Promise<void> {
    return new Promise((resolve) => {
      const timer = seconds === undefined ? undefined : setTimeout(done, seconds * 1000);
      function done() {
        clearTimeout(timer);
        resolve();
      }
      this.#wake = done;
    });
  }

  #start(job: ClaimedJob): void {
    const held: Held = { job, controller: new AbortController(), acking: false };
    this.#held.set(job.id, held);
    const running: Promise<void> = this.#work(held).finally(() => {
      this.#held.delete(job.id);
      this.#running.delete(running);
      this.#wake();
    });
    held.settled = running;
    this.#running.add(running);
  }

  async #work(held: Held): Promise<void> {
    const { job, controller } = held;
    const handler = this.handlers[job.task];
    const outcome = await settle(
      this.#timed(job, controller, async () => {
        if (handler === undefined) throw new NonRetryableError(`no handler for task ${job.task}`);
        return handler(job.args, { job, signal: controller.signal });
      }),
    );
    if (controller.signal.aborted && !(controller.signal.reason instanceof JobTimeoutError)) return;
    held.acking = true;
    await this.#acknowledge(job, outcome);
  }

  /** The handler's outcome, or a JobTimeoutError when the job's timeout passes first. */
  #timed(job: ClaimedJob, controller: AbortController, run: () => Promise<unknown>): Promise<unknown> {
    if (job.timeout == null) return run();
    const seconds = job.timeout;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const error = new JobTimeoutError(`job ${job.id} ran longer than its timeout of ${seconds} s`);
        controller.abort(error);
        reject(error);
      }, seconds * 1000);
    });
    return Promise.race([run(), expired]).finally(() => clearTimeout(timer));
  }

  async #acknowledge(job: ClaimedJob, outcome: Outcome): Promise<void> {
    const result = outcome.ok ? (outcome.result ?? null) : undefined;
    let error: unknown = outcome.ok ? unsendable(result) : outcome.error;
    if (error === undefined) {
      try {
        await retried(() => this.client.complete(job.id, job.lease_token, result));
        this.#stats.done += 1;
        return;
      } catch (problem) {
        if (!refused(problem)) return this.#unacknowledged(job, "completion", problem);
        error = problem; // the server refused the result (too large, a NUL character): the attempt failed
      }
    }
    try {
      await retried(() => this.client.fail(job.id, job.lease_token, message(error), failure(error)));
      this.#stats.failed += 1;
    } catch (problem) {
      this.#unacknowledged(job, "failure", problem);
    }
  }

  #unacknowledged(job: ClaimedJob, what: string, problem: unknown): void {
    if (!(problem instanceof StaleLeaseError || problem instanceof NotFoundError)) {
      this.#logger.warn(`pageq worker ${this.name}: job ${job.id} not acknowledged: ${describe(problem)}`);
    }
    this.#lost(job, what);
  }

  #lost(job: ClaimedJob, what: string): void {
    this.#stats.lost += 1;
    this.#logger.warn(`pageq worker ${this.name}: job ${job.id}: lease lost before its ${what}`);
  }

  async #heartbeats(): Promise<void> {
    if (this.#beating) return; // the last round is still under way
    this.#beating = true;
    const held = [...this.#held.values()].filter((h) => !h.acking && !h.controller.signal.aborted);
    await Promise.all(held.map((h) => this.#heartbeat(h))).finally(() => {
      this.#beating = false;
    });
  }

  async #heartbeat(held: Held): Promise<void> {
    const { job, controller } = held;
    try {
      await this.client.heartbeat(job.id, job.lease_token, this.lease);
    } catch (error) {
      if (held.acking || controller.signal.aborted) return;
      if (error instanceof StaleLeaseError || error instanceof NotFoundError) {
        controller.abort(error instanceof StaleLeaseError ? error : new StaleLeaseError(error.problem));
        this.#lost(job, "acknowledgement");
        return;
      }
      this.#logger.warn(`pageq worker ${this.name}: heartbeat of job ${job.id} failed: ${describe(error)}`);
    }
  }

  /** Wait for running jobs; past the stop's grace period, abort and release them. */
  async #drain(): Promise<void> {
    while (this.#running.size > 0) {
      const left = this.#deadline === undefined ? undefined : (this.#deadline - Date.now()) / 1000;
      if (left !== undefined && left <= 0) return this.#releaseAll();
      await Promise.race([Promise.all(this.#running), this.#sleep(left)]); // woken by a job, or by a stop
      this.#wake(); // the jobs won: end the sleep and its timer
    }
  }

  /** Abort the handlers still running and give their jobs back; wait for the acknowledgements under way. */
  async #releaseAll(): Promise<void> {
    const held = [...this.#held.values()];
    const releasing = held.filter((h) => !h.acking && !h.controller.signal.aborted);
    await Promise.all(
      releasing.map(async ({ job, controller }) => {
        controller.abort(new Error("the worker is stopping"));
        try {
          await this.client.release(job.id, job.lease_token);
          this.#stats.released += 1;
        } catch (error) {
          this.#unacknowledged(job, "release", error);
        }
      }),
    );
    await Promise.all(held.filter((h) => h.acking).map((h) => h.settled));
  }
}

/** An answer that refuses the request for good (not a lost lease, not a transient failure). */
function refused(error: unknown): boolean {
  if (!(error instanceof RemoteError) || isTransient(error)) return false;
  return !(error instanceof StaleLeaseError || error instanceof NotFoundError);
}

/** Why `result` cannot be sent as JSON (a BigInt, a cycle, a function), or undefined when it can. */
function unsendable(result: unknown): TypeError | undefined {
  try {
    if (JSON.stringify(result) !== undefined) return undefined;
  } catch (error) {
    return new TypeError(`the result is not JSON: ${describe(error)}`);
  }
  return new TypeError(`the result is not JSON: ${typeof result}`);
}

function positive(name: string, value: number): number {
  if (!(Number.isFinite(value) && value > 0)) throw new RangeError(`${name} must be a positive number`);
  return value;
}

async function settle(promise: Promise<unknown>): Promise<Outcome> {
  try {
    return { ok: true, result: await promise };
  } catch (error) {
    return { ok: false, error };
  }
}

/** Run an acknowledgement, trying again (0.25, 0.5, 1 s later) while the failure is transient. */
async function retried<T>(send: () => Promise<T>): Promise<T> {
  for (let wait = 0.25; ; wait *= 2) {
    try {
      return await send();
    } catch (error) {
      if (!isTransient(error) || wait > 1) throw error;
      await new Promise((resolve) => setTimeout(resolve, wait * 1000));
    }
  }
}

/** The failure's one-line description as the Python worker writes it: "Type: message". */
function message(error: unknown): string {
  const text = error instanceof Error ? `${error.name}: ${error.message}` : `Error: ${String(error)}`;
  return text.slice(0, 10_000);
}

function failure(error: unknown): FailOptions {
  const options: FailOptions = {};
  if (error instanceof Error && error.stack) options.traceback = error.stack.slice(0, 65_536);
  if (error instanceof RetryLaterError) options.retry_in = error.retryIn;
  if (error instanceof NonRetryableError) options.retryable = false;
  return options;
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
