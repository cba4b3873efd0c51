/**
 * `Subscription`: a Subscribe stream as an async iterator that survives disconnects.
 *
 *     for await (const event of client.subscribe(sessionScope("s1"), { token, signal })) {
 *       switch (event.type) {
 *         case "update": apply(event.payload); break;
 *         case "ephemeral": show(event.payload); break;
 *         case "refetch-required": await reloadState(); break;
 *       }
 *     }
 *
 * Each stream message carries a batch of events; they are kept in a buffer
 * and handed out one at a time. Nothing is read ahead of the consumer: one
 * that stops reading lets HTTP/2 flow control push back to the router, which
 * ends the stream as too slow (RESOURCE_EXHAUSTED) once its per-connection
 * queue is full; the subscription then reconnects and resumes after the last
 * update it handed out, so the consumer still sees every update once.
 *
 * After UNAVAILABLE (router restart, shutdown, `Disconnect`), RESOURCE_EXHAUSTED
 * or a broken transport it reconnects with jittered backoff and resumes;
 * UNAUTHENTICATED, PERMISSION_DENIED and INVALID_ARGUMENT throw the matching
 * `EventRouterError` from the iterator instead. Aborting the signal, `close()`
 * or leaving a `for await` loop ends the stream, and iteration ends cleanly.
 */

import type { CallOptions, ConnectError } from "@connectrpc/connect";
import type { Credentials } from "./credentials.js";
import { callError } from "./errors.js";
import type { SubscriptionEvent, SubscriptionState } from "./events.js";
import type { EphemeralPayload, UpdatePayload } from "./gen/eventrouter/v1/events_pb.js";
import type {
  ConnectionOpened,
  StreamPosition,
  SubscribeRequest,
  SubscribeResponse,
} from "./gen/eventrouter/v1/router_service_pb.js";
import { sleep } from "./policy.js";

/** Opens one Subscribe stream (the Connect client's `subscribe`). */
export type OpenStream = (
  request: SubscribeRequest,
  options: CallOptions,
) => AsyncIterable<SubscribeResponse>;

const DONE: IteratorReturnResult<undefined> = { done: true, value: undefined };
const NO_HEARTBEAT = "no heartbeat from the router";

export class Subscription implements AsyncIterableIterator<SubscriptionEvent> {
  private readonly buffer: SubscriptionEvent[] = [];
  private readonly closing = new AbortController();
  private stream: { iterator: AsyncIterator<SubscribeResponse>; abort: AbortController } | undefined;
  private delayMs = 0;
  private filling: Promise<void> | undefined;
  private isClosed = false;

  constructor(
    private readonly openStream: OpenStream,
    private readonly state: SubscriptionState,
    private readonly credentials: Credentials | undefined,
    signal?: AbortSignal,
    private readonly onClose?: (subscription: Subscription) => void,
  ) {
    if (signal?.aborted) this.close();
    signal?.addEventListener("abort", () => this.close(), { once: true, signal: this.closing.signal });
  }

  /** The id of the current connection (changes on reconnect); undefined before it opened. */
  get connectionId(): string | undefined {
    return this.state.connectionId;
  }

  /** The `ConnectionOpened` of the current stream. */
  get opened(): ConnectionOpened | undefined {
    return this.state.opened;
  }

  /** The last position handed out (initially `ConnectionOpened.position`): resume from it. */
  get position(): StreamPosition | undefined {
    return this.state.position;
  }

  /** How many times a new stream was opened after the first. */
  get reconnects(): number {
    return this.state.reconnects;
  }

  /** Events received and not yet handed out. */
  get pending(): number {
    return this.buffer.length;
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /** Wait until the first stream is open (`connectionId` is known); the `opened` event is still yielded. */
  async open(): Promise<this> {
    while (this.state.opens === 0) {
      if (this.isClosed) throw new Error("subscription is closed");
      await this.fill();
    }
    return this;
  }

  /** End the stream; iteration stops. Safe to call more than once. */
  close(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    this.closing.abort();
    this.dropStream();
    this.onClose?.(this);
  }

  async next(): Promise<IteratorResult<SubscriptionEvent, undefined>> {
    while (this.buffer.length === 0) {
      if (this.isClosed) return DONE;
      await this.fill();
    }
    if (this.isClosed) return DONE;
    return { done: false, value: this.buffer.shift() as SubscriptionEvent };
  }

  /** Called when a `for await` loop is left early: ends the subscription. */
  async return(): Promise<IteratorResult<SubscriptionEvent, undefined>> {
    this.close();
    return DONE;
  }

  [Symbol.asyncIterator](): this {
    return this;
  }

  /** Only the payloads, for callers that care about neither positions nor refetches. */
  async *payloads(): AsyncGenerator<UpdatePayload | EphemeralPayload, void> {
    for await (const event of this) {
      if (event.type === "update" || event.type === "ephemeral") yield event.payload;
    }
  }

  /** Read the next stream message into the buffer, reconnecting as needed (one at a time). */
  private fill(): Promise<void> {
    this.filling ??= this.readOnce().finally(() => {
      this.filling = undefined;
    });
    return this.filling;
  }

  private async readOnce(): Promise<void> {
    if (this.stream === undefined) {
      if (this.delayMs > 0) await sleep(this.delayMs, this.closing.signal);
      if (this.isClosed) return;
      await this.startStream();
      if (this.isClosed) return;
    }
    const stream = this.stream as NonNullable<typeof this.stream>;
    const idleMs = this.state.idleTimeoutMs();
    let idle = false;
    const timer =
      idleMs === undefined
        ? undefined
        : setTimeout(() => {
            // Heartbeats were promised and none came: the transport is dead even if TCP has not noticed.
            idle = true;
            stream.abort.abort();
          }, idleMs);
    let result: IteratorResult<SubscribeResponse>;
    try {
      result = await stream.iterator.next();
    } catch (reason) {
      if (this.isClosed) return;
      if (idle) return this.streamEnded(undefined, NO_HEARTBEAT, reason);
      const error = callError(reason);
      return this.streamEnded(error.code, error.rawMessage, error);
    } finally {
      clearTimeout(timer);
    }
    if (this.isClosed) return;
    if (result.done) return this.streamEnded(undefined, "the stream ended without a status");
    this.buffer.push(...this.state.onResponse(result.value));
  }

  private async startStream(): Promise<void> {
    const request = this.state.request();
    const headers = this.credentials === undefined ? undefined : await this.credentials.headers();
    if (this.isClosed) return;
    const abort = new AbortController();
    const options: CallOptions = { signal: abort.signal };
    if (headers !== undefined) options.headers = headers;
    this.stream = { iterator: this.openStream(request, options)[Symbol.asyncIterator](), abort };
  }

  private dropStream(): void {
    const stream = this.stream;
    this.stream = undefined;
    stream?.abort.abort();
  }

  /** Forget the stream; plan the reconnect wait, or throw when there is none. */
  private streamEnded(code: ConnectError["code"] | undefined, details: string, cause?: unknown): void {
    this.dropStream();
    if (this.isClosed) return;
    try {
      this.delayMs = this.state.onStreamEnd(code, details);
    } catch (error) {
      this.close();
      if (cause !== undefined && error instanceof Error) Object.assign(error, { cause });
      throw error;
    }
    this.buffer.push(this.state.reconnecting(code, details, this.delayMs));
  }
}
