/**
 * pageq's JavaScript client: enqueue, inspect and work jobs over pageq's HTTP API (`pageq serve`).
 *
 * ```ts
 * import { Client, Worker } from "@pageq/client";
 *
 * const client = new Client("https://pageq.internal", { token: process.env.PAGEQ_TOKEN });
 * await client.enqueue("email.send", { to: "a@example.com" });
 * await new Worker(client, { "email.send": async ({ to }) => ({ sent: to }) }, { queues: ["emails"] }).run();
 * ```
 *
 * A webhook receiver checks each delivery with {@link verify} (docs/webhooks.md).
 */

export { Client, type ClientOptions, type RequestOptions } from "./client.js";
export {
  ConflictError,
  ForbiddenError,
  InvalidError,
  InvalidStateError,
  isTransient,
  JobTimeoutError,
  MalformedError,
  NonRetryableError,
  NotFoundError,
  type Problem,
  type ProblemFieldError,
  RateLimitedError,
  RemoteError,
  RetryLaterError,
  StaleLeaseError,
  TooLargeError,
  TransportError,
  UnauthenticatedError,
  UnavailableError,
  UnknownTaskError,
} from "./errors.js";
export { type SigningKey } from "./signing.js";
export type * from "./types.js";
export {
  DELIVERY_HEADER,
  SIGNATURE_HEADER,
  SignatureError,
  sign,
  TOLERANCE,
  verify,
  type WebhookEvent,
  type WebhookHeaders,
  type WebhookSecret,
} from "./webhooks.js";
export {
  type Handler,
  type JobContext,
  type Logger,
  type RunOptions,
  type StopOptions,
  Worker,
  type WorkerOptions,
  type WorkerStats,
} from "./worker.js";
