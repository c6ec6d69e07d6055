/**
 * The client of pageq's HTTP API: enqueue, inspect and manage jobs, and the remote-worker protocol (claim,
 * heartbeat, complete, fail, release) that {@link Worker} runs on.
 */

import { remoteError, TransportError } from "./errors.js";
import { authorization, checkSigningKey, type SigningKey } from "./signing.js";
import type {
  Acknowledged,
  Args,
  ClaimedJob,
  ClaimOptions,
  FailOptions,
  Job,
  JobFilters,
  JobOptions,
  JobPage,
  JobSpec,
  Queue,
  QueueControl,
  QueueLimits,
} from "./types.js";

/** How the client authenticates, and how it sends requests. */
export interface ClientOptions {
  /** A bearer token (`pageq tokens create PRINCIPAL`). Give this or `signingKey`. */
  token?: string;
  /** A signing key: each request is signed (`PQ-HMAC-SHA256`) instead of carrying a token. */
  signingKey?: SigningKey;
  /** Seconds a request may take before it fails with a {@link TransportError} (30). */
  timeout?: number;
  /** The fetch to use (default: the global one), e.g. one with a custom TLS agent. */
  fetch?: typeof globalThis.fetch;
}

/** Options of one request, beside its body. */
export interface RequestOptions {
  /**
   * Enqueue only: a retried request with the same key (up to 128 printable ASCII characters, scoped to the
   * principal) returns the ids the first one made instead of enqueueing again.
   */
  idempotencyKey?: string;
  /** Abort the request. */
  signal?: AbortSignal;
  /** More headers. */
  headers?: Record<string, string>;
}

type Method = "GET" | "POST" | "PATCH";

/**
 * Calls the API with a bearer token or signed requests. Every method returns the API's JSON answer, or
 * throws a {@link RemoteError} subclass carrying the RFC 9457 problem (or a {@link TransportError}).
 *
 * ```ts
 * const client = new Client("https://pageq.internal", { token: process.env.PAGEQ_TOKEN });
 * const id = await client.enqueue("email.send", { to: "a@example.com" }, { priority: 5 });
 * const job = await client.getJob(id);
 * ```
 */
export class Client {
  readonly url: string;
  readonly #token: string | undefined;
  readonly #key: SigningKey | undefined;
  readonly #timeout: number;
  readonly #fetch: typeof globalThis.fetch;

  constructor(url: string, options: ClientOptions) {
    if ((options.token === undefined) === (options.signingKey === undefined)) {
      throw new TypeError("give a token or a signing key");
    }
    if (options.signingKey !== undefined) checkSigningKey(options.signingKey);
    this.url = new URL(url).href.replace(/\/+$/, "");
    this.#token = options.token;
    this.#key = options.signingKey;
    this.#timeout = options.timeout ?? 30;
    this.#fetch = options.fetch ?? globalThis.fetch;
  }

  /** Never shows the credentials. */
  toString(): string {
    return `Client(${this.url})`;
  }

  /** Send one request: the decoded JSON answer, or a {@link RemoteError}. */
  async request<T = unknown>(method: Method, path: string, body?: unknown, options: RequestOptions = {}): Promise<T> {
    const url = new URL(this.url + path);
    const content = body === undefined ? undefined : new TextEncoder().encode(JSON.stringify(body));
    const headers: Record<string, string> = { Accept: "application/json", ...options.headers };
    if (content !== undefined) headers["Content-Type"] = "application/json";
    if (options.idempotencyKey !== undefined) headers["Idempotency-Key"] = options.idempotencyKey;
    headers.Authorization =
      this.#key === undefined
        ? `Bearer ${this.#token}`
        : await authorization(this.#key, method, url.pathname + url.search, content ?? new Uint8Array());
    const timeout = AbortSignal.timeout(this.#timeout * 1000);
    const signal = options.signal ? AbortSignal.any([options.signal, timeout]) : timeout;
    let response: Response;
    let text: string;
    try {
      response = await this.#fetch(url, { method, headers, body: content, signal });
      text = await response.text();
    } catch (error) {
      if (options.signal?.aborted) throw error;
      throw new TransportError(`${method} ${url.pathname}: ${describe(error)}`, { cause: error });
    }
    const value = parse(text);
    if (!response.ok) {
      const retryAfter = Number(response.headers.get("retry-after") ?? Number.NaN);
      const fallback = value === undefined ? { detail: text.slice(0, 200) } : value;
      throw remoteError(
        response.status,
        fallback,
        response.statusText,
        Number.isFinite(retryAfter) ? retryAfter : undefined,
      );
    }
    if (value === undefined) throw new TransportError(`${method} ${url.pathname}: the answer is not JSON`);
    return value as T;
  }

  // ----- producing

  /** Enqueue one job; its id. `options` override the task's defaults (queue, priority, delay, ...). */
  async enqueue(task: string, args: Args = {}, options: JobOptions = {}, request?: RequestOptions): Promise<number> {
    const answer = await this.request<{ id: number }>("POST", "/v1/jobs", spec({ ...options, task, args }), request);
    return answer.id;
  }

  /** Enqueue jobs in one transaction, all or none; their ids in order. */
  async enqueueMany(jobs: JobSpec[], request?: RequestOptions): Promise<number[]> {
    const answer = await this.request<{ ids: number[] }>("POST", "/v1/jobs/batch", { jobs: jobs.map(spec) }, request);
    return answer.ids;
  }

  // ----- inspecting and managing

  /** One job with its arguments, result and failed attempts. */
  getJob(id: number, request?: RequestOptions): Promise<Job> {
    return this.request("GET", `/v1/jobs/${jobId(id)}`, undefined, request);
  }

  /** One page of jobs, newest first. */
  listJobs(filters: JobFilters = {}, request?: RequestOptions): Promise<JobPage> {
    const query = new URLSearchParams();
    for (const [name, value] of Object.entries(filters)) {
      for (const item of Array.isArray(value) ? value : [value]) {
        if (item !== undefined && item !== null)
          query.append(name, item instanceof Date ? item.toISOString() : String(item));
      }
    }
    const search = query.size > 0 ? `?${query}` : "";
    return this.request("GET", `/v1/jobs${search}`, undefined, request);
  }

  /** Every job matching the filters, newest first, page after page. */
  async *iterJobs(filters: JobFilters = {}, request?: RequestOptions): AsyncGenerator<Job, void, undefined> {
    let cursor: string | null = null;
    do {
      const page: JobPage = await this.listJobs({ ...filters, cursor }, request);
      yield* page.jobs;
      cursor = page.next_cursor;
    } while (cursor !== null);
  }

  /** Cancel a job that has not finished (an {@link InvalidStateError} otherwise); the job as it is now. */
  cancel(id: number, request?: RequestOptions): Promise<Job> {
    return this.request("POST", `/v1/jobs/${jobId(id)}/cancel`, undefined, request);
  }

  /** Run a job again now; the job as it is now. */
  requeue(id: number, request?: RequestOptions): Promise<Job> {
    return this.request("POST", `/v1/jobs/${jobId(id)}/requeue`, undefined, request);
  }

  /** The queues with their counts and controls. */
  async queues(request?: RequestOptions): Promise<Queue[]> {
    return (await this.request<{ queues: Queue[] }>("GET", "/v1/queues", undefined, request)).queues;
  }

  queue(name: string, request?: RequestOptions): Promise<Queue> {
    return this.request("GET", `/v1/queues/${encodeURIComponent(name)}`, undefined, request);
  }

  pauseQueue(name: string, request?: RequestOptions): Promise<QueueControl> {
    return this.request("POST", `/v1/queues/${encodeURIComponent(name)}/pause`, undefined, request);
  }

  resumeQueue(name: string, request?: RequestOptions): Promise<QueueControl> {
    return this.request("POST", `/v1/queues/${encodeURIComponent(name)}/resume`, undefined, request);
  }

  /** Set a queue's concurrency, rate limit and weight in one write (`null` removes a limit). */
  limitQueue(name: string, limits: QueueLimits, request?: RequestOptions): Promise<QueueControl> {
    return this.request("PATCH", `/v1/queues/${encodeURIComponent(name)}`, limits, request);
  }

  // ----- working

  /** Lease up to `limit` runnable jobs of `queues` for `lease` seconds. */
  async claim(queues: string[], options: ClaimOptions = {}, request?: RequestOptions): Promise<ClaimedJob[]> {
    const body = { queues, limit: 10, lease: 30, worker: "remote", ...options };
    return (await this.request<{ jobs: ClaimedJob[] }>("POST", "/v1/claims", body, request)).jobs;
  }

  /** Extend the lease of a job the caller holds to `lease` seconds from now. */
  heartbeat(id: number, leaseToken: string, lease = 30, request?: RequestOptions): Promise<Acknowledged> {
    return this.request("POST", `/v1/jobs/${jobId(id)}/heartbeat`, { lease_token: leaseToken, lease }, request);
  }

  /** The job succeeded with `result` (any JSON value). */
  complete(id: number, leaseToken: string, result: unknown = null, request?: RequestOptions): Promise<Acknowledged> {
    const body = { lease_token: leaseToken, result: result ?? null };
    return this.request("POST", `/v1/jobs/${jobId(id)}/complete`, body, request);
  }

  /** The attempt failed: the job is retried (`retrying`, with its `run_at`) or `dead`. */
  fail(
    id: number,
    leaseToken: string,
    error: string,
    options: FailOptions = {},
    request?: RequestOptions,
  ): Promise<Acknowledged> {
    const body = { lease_token: leaseToken, error, ...options };
    return this.request("POST", `/v1/jobs/${jobId(id)}/fail`, body, request);
  }

  /** Give a held job back at once: queued again, the attempt not counted. */
  release(id: number, leaseToken: string, request?: RequestOptions): Promise<Acknowledged> {
    return this.request("POST", `/v1/jobs/${jobId(id)}/release`, { lease_token: leaseToken }, request);
  }
}

/** A job's body on the wire: options without `undefined`, times as RFC 3339. */
function spec(job: JobSpec): Record<string, unknown> {
  const body: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(job)) {
    if (value !== undefined) body[name] = value instanceof Date ? value.toISOString() : value;
  }
  return body;
}

function jobId(id: number): string {
  if (!Number.isSafeInteger(id) || id < 1) throw new TypeError(`a job id is a positive integer, got ${id}`);
  return String(id);
}

function parse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

function describe(error: unknown): string {
  if (error instanceof Error) {
    const cause = error.cause instanceof Error ? ` (${error.cause.message})` : "";
    return `${error.name === "TimeoutError" ? "timed out" : error.message}${cause}`;
  }
  return String(error);
}
