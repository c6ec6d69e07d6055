/**
 * What the client throws: {@link RemoteError} and its subclasses for an error the API answered (RFC 9457
 * problem details), {@link TransportError} for a request that got no answer; and what a handler may throw
 * to steer its job's failure ({@link NonRetryableError}, {@link RetryLaterError}).
 */

/** One entry of a 400 problem's `errors`: where the request does not match the API schema. */
export interface ProblemFieldError {
  loc: string[];
  msg: string;
  type: string;
}

/** RFC 9457 problem details as pageq answers them, with its machine-readable `code`. */
export interface Problem {
  type: string;
  title: string;
  status: number;
  detail?: string;
  instance?: string;
  /** `malformed`, `unauthenticated`, `forbidden`, `not_found`, `stale_lease`, `invalid_state`, ... */
  code: string;
  /** For a malformed request (400): where it does not match the schema. */
  errors?: ProblemFieldError[];
  [extension: string]: unknown;
}

/**
 * The API answered an error. Its RFC 9457 fields are properties (`status`, `code`, `type`, `title`,
 * `detail`, `instance`, `errors`) and the whole body is `problem`. Subclasses by status (and code) let a
 * caller catch what it can handle:
 *
 * ```ts
 * try {
 *   await client.complete(job.id, job.lease_token, result);
 * } catch (error) {
 *   if (!(error instanceof StaleLeaseError)) throw error; // the lease was lost: nothing was written
 * }
 * ```
 */
export class RemoteError extends Error {
  readonly status: number;
  readonly code: string;
  readonly type: string;
  readonly title: string;
  readonly detail: string | undefined;
  readonly instance: string | undefined;
  readonly errors: ProblemFieldError[] | undefined;
  readonly problem: Problem;
  /** Seconds to wait before trying again, from a `Retry-After` header (429, 503). */
  readonly retryAfter: number | undefined;

  constructor(problem: Problem, retryAfter?: number) {
    super(`${problem.status} ${problem.code}: ${problem.detail ?? problem.title}`);
    this.name = new.target.name;
    this.problem = problem;
    this.status = problem.status;
    this.code = problem.code;
    this.type = problem.type;
    this.title = problem.title;
    this.detail = problem.detail;
    this.instance = problem.instance;
    this.errors = problem.errors;
    this.retryAfter = retryAfter;
  }
}

/** 400 `malformed`: the body or a parameter does not match the API schema (see `errors`). */
export class MalformedError extends RemoteError {}
/** 401 `unauthenticated`: missing, wrong, revoked or malformed credentials, or a bad signature. */
export class UnauthenticatedError extends RemoteError {}
/** 403 `forbidden`: the principal's grants do not allow it. */
export class ForbiddenError extends RemoteError {}
/** 404 `not_found`: no such job or queue. */
export class NotFoundError extends RemoteError {}
/** 409: a conflict with the job's state. */
export class ConflictError extends RemoteError {}
/** 409 `stale_lease`: the lease was lost (rescued, cancelled, finished) and nothing changed. */
export class StaleLeaseError extends ConflictError {}
/** 409 `invalid_state`: the job cannot be cancelled or requeued in its state. */
export class InvalidStateError extends ConflictError {}
/** 413 `too_large`: the body exceeds the server's limit, or a batch has too many jobs. */
export class TooLargeError extends RemoteError {}
/** 422 `invalid`: arguments that do not fit the task, or contradictory options. */
export class InvalidError extends RemoteError {}
/** 422 `unknown_task`: a task the served app does not define. */
export class UnknownTaskError extends InvalidError {}
/** 429 `rate_limited`: the principal exceeded the server's rate (see `retryAfter`). */
export class RateLimitedError extends RemoteError {}
/** 5xx: the server or its database is unavailable (`unavailable`, `not_ready`), or failed. */
export class UnavailableError extends RemoteError {}

const BY_CODE: Record<string, typeof RemoteError> = {
  stale_lease: StaleLeaseError,
  invalid_state: InvalidStateError,
  unknown_task: UnknownTaskError,
};

const BY_STATUS: Record<number, typeof RemoteError> = {
  400: MalformedError,
  401: UnauthenticatedError,
  403: ForbiddenError,
  404: NotFoundError,
  409: ConflictError,
  413: TooLargeError,
  422: InvalidError,
  429: RateLimitedError,
};

/** The error for an answer with this status and problem body (also for a body that is not a problem). */
export function remoteError(status: number, body: unknown, statusText = "", retryAfter?: number): RemoteError {
  const given = isObject(body) ? body : {};
  const problem: Problem = {
    ...given,
    type: typeof given.type === "string" ? given.type : "about:blank",
    title: typeof given.title === "string" ? given.title : statusText,
    status,
    code: typeof given.code === "string" ? given.code : "",
  };
  if (typeof given.detail !== "string") delete problem.detail;
  const kind = BY_CODE[problem.code] ?? BY_STATUS[status] ?? (status >= 500 ? UnavailableError : RemoteError);
  return new kind(problem, retryAfter);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A request that got no answer: the network, TLS, or the client's timeout (`cause` says which). */
export class TransportError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "TransportError";
  }
}

/** Whether trying the same request again later may succeed: no answer, 429, or a 5xx. */
export function isTransient(error: unknown): boolean {
  if (error instanceof TransportError) return true;
  return error instanceof RemoteError && (error.status === 429 || error.status >= 500);
}

/**
 * Throw from a handler to send the job straight to `dead`, whatever attempts remain (an error that will
 * not go away by retrying).
 */
export class NonRetryableError extends Error {
  constructor(message?: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "NonRetryableError";
  }
}

/** Throw from a handler to retry the job after `retryIn` seconds (instead of the task's backoff). */
export class RetryLaterError extends Error {
  readonly retryIn: number;

  constructor(message: string, retryIn: number, options?: { cause?: unknown }) {
    super(message, options);
    if (!(Number.isFinite(retryIn) && retryIn >= 0)) throw new RangeError("retryIn must be seconds >= 0");
    this.name = "RetryLaterError";
    this.retryIn = retryIn;
  }
}

/** A handler ran longer than its job's `timeout`: its signal is aborted and the attempt failed. */
export class JobTimeoutError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "JobTimeoutError";
  }
}
