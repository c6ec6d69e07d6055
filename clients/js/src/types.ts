/**
 * The API's JSON, field for field (snake_case, as in docs/http-api.md and the OpenAPI document at
 * `/openapi.json`). Times are RFC 3339 strings; durations are seconds. Job ids are numbers (exact up to
 * 2^53, far beyond what a queue reaches).
 */

/** The states of docs/state-machine.md. */
export type JobState = "scheduled" | "queued" | "running" | "retrying" | "succeeded" | "dead" | "cancelled" | "blocked";

/** A task's keyword arguments. */
export type Args = Record<string, unknown>;

/** Options of one job; each overrides the task's default. */
export interface JobOptions {
  queue?: string;
  /** -32768..32767, lower runs first. */
  priority?: number;
  /** Seconds from now before the job may run (or `run_at`). */
  delay?: number;
  /** When the job may run: a `Date` or an RFC 3339 string with a time zone. */
  run_at?: Date | string;
  max_attempts?: number;
  /** Seconds an attempt may run. */
  timeout?: number;
}

/** One job of a batch: its task, arguments and options. */
export interface JobSpec extends JobOptions {
  task: string;
  args?: Args;
}

/** A failed attempt of a job. */
export interface Attempt {
  attempt: number;
  error: string;
  traceback: string | null;
  worker: string | null;
  at: string;
}

/** A job as stored (never its lease token). */
export interface Job {
  id: number;
  task: string;
  queue: string;
  args: Args;
  state: JobState;
  priority: number;
  attempts: number;
  max_attempts: number;
  run_at: string;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  worker: string | null;
  result: unknown;
  errors: Attempt[];
  timeout: number | null;
}

/** A page of jobs, newest first; `next_cursor` fetches the next one (null: this was the last). */
export interface JobPage {
  jobs: Job[];
  next_cursor: string | null;
}

/** Filters of `listJobs` (`cursor` and `limit` page through them). */
export interface JobFilters {
  state?: JobState | JobState[];
  queue?: string;
  task?: string;
  created_after?: Date | string;
  created_before?: Date | string;
  cursor?: string | null;
  /** 1-1000 jobs per page. */
  limit?: number;
}

/** A job leased to the caller: acknowledge it with its `lease_token` before `lease_expires_at`. */
export interface ClaimedJob {
  id: number;
  task: string;
  queue: string;
  args: Args;
  priority: number;
  attempts: number;
  max_attempts: number;
  run_at: string;
  created_at: string;
  timeout: number | null;
  lease_token: string;
  lease_expires_at: string;
}

/** Options of a claim. */
export interface ClaimOptions {
  /** Jobs to lease at most, 1-1000 (10). */
  limit?: number;
  /** Seconds the lease lasts, 1-86400 (30). */
  lease?: number;
  /** The worker's name, shown on the jobs it runs ("remote"). */
  worker?: string;
  /** Only jobs of these tasks (default: any the principal may work). */
  tasks?: string[];
}

/** Options of a failed attempt. */
export interface FailOptions {
  traceback?: string | null;
  /** Retry after this many seconds (default: the task's backoff). */
  retry_in?: number | null;
  /** False: the job goes to `dead` whatever attempts remain. */
  retryable?: boolean;
}

/** What an acknowledgement did. */
export interface Acknowledged {
  id: number;
  state: JobState;
  run_at: string | null;
  lease_expires_at: string | null;
}

/** A queue with its jobs by state, the age of its oldest waiting job, throughput and controls. */
export interface Queue {
  name: string;
  counts: Partial<Record<JobState, number>>;
  oldest_queued_age: number | null;
  completed_last_minute: number;
  paused: boolean;
  concurrency: number | null;
  rate_limit: number | null;
  rate_period: number | null;
  weight: number;
}

/** A queue's controls. */
export interface QueueControl {
  name: string;
  paused: boolean;
  concurrency: number | null;
  rate_limit: number | null;
  rate_period: number | null;
  weight: number;
}

/** Controls to change: absent ones are kept, `null` removes a limit. */
export interface QueueLimits {
  concurrency?: number | null;
  rate_limit?: number | null;
  rate_period?: number;
  weight?: number | null;
}
