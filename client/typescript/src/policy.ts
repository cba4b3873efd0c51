/**
 * Backoff, and when calls are retried and streams reopened.
 *
 * The same decisions as the Python client (`_calls.py`, `_events.py`), in
 * milliseconds.
 */

import { Code } from "@connectrpc/connect";

/**
 * Exponential backoff with full jitter: attempt n waits U(0, min(maxMs, baseMs * 2^n)).
 *
 * Full jitter spreads the reconnects of many clients cut off at once (a
 * router restart) over the whole window instead of bunching them up.
 */
export class Backoff {
  readonly baseMs: number;
  readonly maxMs: number;

  constructor({ baseMs = 100, maxMs = 10_000 }: { baseMs?: number; maxMs?: number } = {}) {
    if (!(baseMs > 0) || !(maxMs >= baseMs)) throw new RangeError("Backoff needs 0 < baseMs <= maxMs");
    this.baseMs = baseMs;
    this.maxMs = maxMs;
  }

  delayMs(attempt: number, rand: () => number = Math.random): number {
    const ceiling = attempt >= 60 ? this.maxMs : Math.min(this.maxMs, this.baseMs * 2 ** attempt);
    return rand() * ceiling;
  }
}

/**
 * When a unary call (Emit, EmitBatch, GetConnections, Disconnect) is tried again.
 *
 * Only UNAVAILABLE is retried: the call did not reach the router, or the
 * router went away. A retried call may have been applied the first time, so
 * only calls that are safe to repeat are retried: updates (the router answers
 * a repeat of a recent update id as a duplicate), ephemerals that carry an
 * idempotency key, and reads. `maxAttempts` counts the first try.
 */
export class RetryPolicy {
  readonly maxAttempts: number;
  readonly backoff: Backoff;

  constructor({ maxAttempts = 5, backoff = new Backoff({ baseMs: 50, maxMs: 2_000 }) } = {}) {
    if (!(maxAttempts >= 1)) throw new RangeError("maxAttempts must be at least 1");
    this.maxAttempts = maxAttempts;
    this.backoff = backoff;
  }

  /** Milliseconds to wait before another try after try number `attempt` (1-based), or undefined. */
  nextDelayMs(code: Code, attempt: number, safe: boolean): number | undefined {
    if (code !== Code.Unavailable || !safe || attempt >= this.maxAttempts) return undefined;
    return this.backoff.delayMs(attempt - 1);
  }
}

/**
 * How a subscription comes back after its stream ended.
 *
 * Waits follow `backoff`; the count restarts after a stream that made
 * progress (delivered something after `opened`, or stayed open
 * `healthyAfterMs`). `maxAttempts` consecutive failed attempts give up
 * (undefined: never). `enabled: false` throws on any end.
 */
export class ReconnectPolicy {
  readonly enabled: boolean;
  readonly backoff: Backoff;
  readonly healthyAfterMs: number;
  readonly maxAttempts: number | undefined;

  constructor({
    enabled = true,
    backoff = new Backoff({ baseMs: 100, maxMs: 10_000 }),
    healthyAfterMs = 5_000,
    maxAttempts,
  }: { enabled?: boolean; backoff?: Backoff; healthyAfterMs?: number; maxAttempts?: number } = {}) {
    this.enabled = enabled;
    this.backoff = backoff;
    this.healthyAfterMs = healthyAfterMs;
    this.maxAttempts = maxAttempts;
  }
}

/** Wait `ms`, or less if `signal` aborts first (it then resolves; it never rejects). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener("abort", done, { once: true });
  });
}
