/**
 * The auto-batching emitter behind `EventRouterClient.emit*`.
 *
 * A unary call costs the router about the same CPU whatever it carries, so at
 * most one Emit/EmitBatch call is in flight; the emits that arrive meanwhile
 * are queued and, when the call returns, everything queued (up to
 * `maxBatchSize` emits / `maxBatchBytes`) leaves as one EmitBatch. There is no
 * timer: a lone emit goes out at once (the queue is looked at in a microtask,
 * so the emits of one synchronous stretch, such as `Promise.all([...])`, leave
 * together). Each caller gets its own result or error, and emits are applied
 * in the order they were called.
 *
 * Failures: the router rejects a whole batch when one item is invalid
 * (INVALID_ARGUMENT, or RESOURCE_EXHAUSTED naming `emits[i]`), so such a batch
 * is sent again one emit at a time and only the culprit's caller gets the
 * error. UNAVAILABLE is retried with backoff for the items that are safe to
 * repeat (updates, ephemerals with an idempotency key); the others fail at once.
 */

import { create, toBinary } from "@bufbuild/protobuf";
import { Code, type ConnectError } from "@connectrpc/connect";
import { callError, EventRouterError, errorFromCall } from "./errors.js";
import {
  type EmitBatchRequest,
  EmitBatchRequestSchema,
  type EmitRequest,
  EmitRequestSchema,
  type EmitResponse,
} from "./gen/eventrouter/v1/router_service_pb.js";
import { type RetryPolicy, sleep } from "./policy.js";
import { checkRequest, retrySafe } from "./requests.js";

/** The two calls the emitter makes; each throws what the transport throws. */
export interface EmitCalls {
  emit(request: EmitRequest): Promise<EmitResponse>;
  emitBatch(request: EmitBatchRequest): Promise<EmitResponse[]>;
}

interface Pending<T> {
  resolve(value: T): void;
  reject(error: unknown): void;
}

interface QueuedEmit extends Pending<EmitResponse> {
  readonly kind: "emit";
  readonly request: EmitRequest;
  readonly safe: boolean;
  readonly size: number;
}

interface QueuedBatch extends Pending<EmitResponse[]> {
  readonly kind: "batch";
  readonly request: EmitBatchRequest;
  readonly safe: boolean;
}

/** Whether the router rejected a whole batch for one item (re-send them one by one). */
function blamesOneItem(error: ConnectError): boolean {
  if (error.code === Code.InvalidArgument) return true;
  // RESOURCE_EXHAUSTED names an item over the size limit, but not an emit rate over its limit.
  return error.code === Code.ResourceExhausted && error.rawMessage.startsWith("emits[");
}

export class Emitter {
  private readonly queue: (QueuedEmit | QueuedBatch)[] = [];
  private sending: Promise<void> | undefined;

  constructor(
    private readonly calls: EmitCalls,
    private readonly retry: RetryPolicy,
    private readonly maxBatchSize: number,
    private readonly maxBatchBytes: number,
  ) {
    if (!(maxBatchSize >= 1) || !(maxBatchBytes >= 1)) {
      throw new RangeError("maxBatchSize and maxBatchBytes must be positive");
    }
  }

  /** One emit, batched with those that arrive while a call is in flight. */
  emit(request: EmitRequest): Promise<EmitResponse> {
    checkRequest(request);
    return new Promise((resolve, reject) => {
      const size = toBinary(EmitRequestSchema, request).length;
      this.enqueue({ kind: "emit", request, safe: retrySafe(request), size, resolve, reject });
    });
  }

  /** Many emits in one EmitBatch call of their own, all or none as the router defines it. */
  emitBatch(requests: readonly EmitRequest[]): Promise<EmitResponse[]> {
    requests.forEach((request, i) => {
      checkRequest(request, `emits[${i}].`);
    });
    if (requests.length === 0) return Promise.resolve([]);
    const request = create(EmitBatchRequestSchema, { emits: [...requests] });
    return new Promise((resolve, reject) => {
      this.enqueue({ kind: "batch", request, safe: requests.every(retrySafe), resolve, reject });
    });
  }

  /** Resolves once everything queued so far has been sent (or has failed). */
  async flush(): Promise<void> {
    while (this.sending !== undefined) await this.sending;
  }

  private enqueue(item: QueuedEmit | QueuedBatch): void {
    this.queue.push(item);
    this.sending ??= this.sendQueued();
  }

  private async sendQueued(): Promise<void> {
    // Start after the current synchronous stretch, so that its emits leave together.
    await new Promise<void>((resolve) => queueMicrotask(resolve));
    try {
      while (this.queue.length > 0) {
        const head = this.queue[0] as QueuedEmit | QueuedBatch;
        if (head.kind === "batch") {
          this.queue.shift();
          await this.sendBatch(head);
        } else {
          await this.sendEmits(this.take());
        }
      }
    } finally {
      // In the same step as the last look at the queue: an emit queued after
      // it finds no sender and starts one.
      this.sending = undefined;
    }
  }

  /** The queued emits for the next call, in order, within the batch limits. */
  private take(): QueuedEmit[] {
    const batch: QueuedEmit[] = [];
    let size = 0;
    while (batch.length < this.maxBatchSize) {
      const item = this.queue[0];
      if (item === undefined || item.kind !== "emit") break;
      if (batch.length > 0 && size + item.size > this.maxBatchBytes) break;
      this.queue.shift();
      batch.push(item);
      size += item.size;
    }
    return batch;
  }

  private async sendEmits(batch: QueuedEmit[]): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      let results: EmitResponse[];
      try {
        results = await this.callEmits(batch.map((item) => item.request));
      } catch (reason) {
        if (reason instanceof EventRouterError) {
          // A broken answer, not a failed call: fail the callers, not the queue.
          for (const item of batch) item.reject(reason);
          return;
        }
        const error = callError(reason);
        if (batch.length > 1 && blamesOneItem(error)) {
          for (const item of batch) await this.sendEmits([item]);
          return;
        }
        // A batch that may not be repeated whole is retried without the items
        // that may not be repeated; those fail now.
        const delay = this.retry.nextDelayMs(error.code, attempt, true);
        const again = delay === undefined ? [] : batch.filter((item) => item.safe);
        for (const item of batch) if (!again.includes(item)) item.reject(errorFromCall(error));
        if (delay === undefined || again.length === 0) return;
        batch = again;
        await sleep(delay);
        continue;
      }
      batch.forEach((item, i) => {
        item.resolve(results[i] as EmitResponse);
      });
      return;
    }
  }

  private async callEmits(requests: EmitRequest[]): Promise<EmitResponse[]> {
    if (requests.length === 1) return [await this.calls.emit(requests[0] as EmitRequest)];
    const results = await this.calls.emitBatch(create(EmitBatchRequestSchema, { emits: requests }));
    if (results.length !== requests.length) {
      throw new EventRouterError(
        Code.Internal,
        `router answered ${results.length} results for ${requests.length} emits`,
      );
    }
    return results;
  }

  private async sendBatch(batch: QueuedBatch): Promise<void> {
    try {
      batch.resolve(await retrying(this.retry, batch.safe, () => this.calls.emitBatch(batch.request)));
    } catch (error) {
      batch.reject(error);
    }
  }
}

/** One call under the retry policy; throws an EventRouterError. */
export async function retrying<T>(policy: RetryPolicy, safe: boolean, call: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await call();
    } catch (reason) {
      const error = errorFromCall(reason);
      const delay = policy.nextDelayMs(error.code, attempt, safe);
      if (delay === undefined) throw error;
      await sleep(delay);
    }
  }
}
