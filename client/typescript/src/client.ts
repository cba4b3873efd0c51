/**
 * `EventRouterClient`: what services use to emit and apps to subscribe, over any Connect transport.
 *
 *     const router = new EventRouterClient({ transport, token: serviceToken });
 *     const result = await router.emitUpdate("u1", payload, { recipientFilter: allInterestedInSession("s1") });
 *
 * The transport is a parameter: gRPC or Connect in Node (`@eventrouter/client/node`),
 * Connect or gRPC-Web in browsers and React Native (`@eventrouter/client/web`),
 * or any `Transport` of your own (interceptors, TLS, an in-memory router in
 * tests). The methods mirror the Python client's `EventRouterClient`: the
 * same batching, retries, reconnects and errors.
 */

import { create } from "@bufbuild/protobuf";
import { type CallOptions, type Client, createClient, type Transport } from "@connectrpc/connect";
import { type CredentialOptions, type Credentials, resolveCredentials } from "./credentials.js";
import { Emitter, retrying } from "./emitter.js";
import { SubscriptionState } from "./events.js";
import type { EphemeralPayload, UpdatePayload } from "./gen/eventrouter/v1/events_pb.js";
import {
  type ConnectionInfo,
  DisconnectRequestSchema,
  type EmitRequest,
  type EmitResponse,
  EventRouterService,
  MachineSelectorSchema,
  SessionSelectorSchema,
  type StreamPosition,
} from "./gen/eventrouter/v1/router_service_pb.js";
import type { ConnectionScope } from "./gen/eventrouter/v1/routing_pb.js";
import { ReconnectPolicy, RetryPolicy } from "./policy.js";
import { type EmitOptions, type EphemeralEmitOptions, ephemeralRequest, updateRequest } from "./requests.js";
import { Subscription } from "./subscription.js";

const MiB = 1024 * 1024;

export interface EventRouterClientOptions extends CredentialOptions {
  /** How calls reach the router (see the module comment). */
  transport: Transport;
  /** Deadline of each unary attempt, in ms (default 10 s; 0: none). */
  timeoutMs?: number;
  retry?: RetryPolicy;
  reconnect?: ReconnectPolicy;
  /** Most emits in one automatic EmitBatch (default 512). */
  maxBatchSize?: number;
  /** Most bytes of emits in one automatic EmitBatch (default 4 MiB; the router takes 16 MiB). */
  maxBatchBytes?: number;
}

/** What one emit did. */
export interface EmitResult {
  /** The connections the event was queued to (in a cluster: on every node, see the README). */
  readonly reached: number;
  /** True when the emit repeated an earlier one within the idempotency window: nothing was delivered again. */
  readonly duplicate: boolean;
  /** Where an update sits in the user's stream; undefined for an ephemeral. */
  readonly position: StreamPosition | undefined;
}

export interface SubscribeOptions extends CredentialOptions {
  /** Replay every update after this position first (or yield `refetch-required`). */
  resumeFrom?: StreamPosition;
  /** Ask for idle heartbeats every this many ms; three silent intervals count as a dead stream. */
  heartbeatMs?: number;
  /** True (the client's policy, the default), false (end on any stream end), or a policy. */
  reconnect?: boolean | ReconnectPolicy;
  /** Aborting it ends the subscription; iteration then ends cleanly. */
  signal?: AbortSignal;
}

/** Which streams `disconnect` ends, and how. */
export type DisconnectSelector = (
  | { userId: string; machineId?: string; sessionId?: string }
  | { connectionId: string }
  | { tokenId: string }
) & {
  /** Shown to the clients in the stream's status. */
  reason?: string;
  /** End with PERMISSION_DENIED (and refuse a `tokenId` from now on) instead of UNAVAILABLE. */
  revoke?: boolean;
};

const result = (response: EmitResponse): EmitResult => ({
  reached: response.reached,
  duplicate: response.duplicate,
  position: response.position,
});

export class EventRouterClient {
  readonly timeoutMs: number;
  readonly retry: RetryPolicy;
  readonly reconnect: ReconnectPolicy;
  private readonly rpc: Client<typeof EventRouterService>;
  private readonly credentials: Credentials | undefined;
  private readonly emitter: Emitter;
  private readonly subscriptions = new Set<Subscription>();
  private isClosed = false;

  constructor(options: EventRouterClientOptions) {
    this.timeoutMs = options.timeoutMs ?? 10_000;
    this.retry = options.retry ?? new RetryPolicy();
    this.reconnect = options.reconnect ?? new ReconnectPolicy();
    this.rpc = createClient(EventRouterService, options.transport);
    this.credentials = resolveCredentials(options);
    this.emitter = new Emitter(
      {
        emit: async (request) => this.rpc.emit(request, await this.callOptions()),
        emitBatch: async (request) => (await this.rpc.emitBatch(request, await this.callOptions())).results,
      },
      this.retry,
      options.maxBatchSize ?? 512,
      options.maxBatchBytes ?? 4 * MiB,
    );
  }

  private async callOptions(): Promise<CallOptions> {
    const options: CallOptions = { timeoutMs: this.timeoutMs };
    if (this.credentials !== undefined) options.headers = await this.credentials.headers();
    return options;
  }

  private checkOpen(): void {
    if (this.isClosed) throw new Error("EventRouterClient is closed");
  }

  /** Send a ready `EmitRequest` (batched with concurrent emits). */
  async emit(request: EmitRequest): Promise<EmitResult> {
    this.checkOpen();
    return result(await this.emitter.emit(request));
  }

  /** Route a persistent update; its `id` makes a repeat harmless (and retries safe). */
  emitUpdate(userId: string, payload: UpdatePayload, options?: EmitOptions): Promise<EmitResult> {
    return this.emit(updateRequest(userId, payload, options));
  }

  /** Route a transient event; retried on UNAVAILABLE only with an `idempotencyKey`. */
  emitEphemeral(
    userId: string,
    payload: EphemeralPayload,
    options?: EphemeralEmitOptions,
  ): Promise<EmitResult> {
    return this.emit(ephemeralRequest(userId, payload, options));
  }

  /**
   * Many emits in one EmitBatch call; one invalid item rejects them all.
   * Results come in request order. The batch keeps its place among this
   * client's emits and is never merged with or split into other calls.
   */
  async emitBatch(requests: readonly EmitRequest[]): Promise<EmitResult[]> {
    this.checkOpen();
    return (await this.emitter.emitBatch(requests)).map(result);
  }

  /** A user's open connections, oldest first (retried on UNAVAILABLE: it is a read). */
  async getConnections(userId: string): Promise<ConnectionInfo[]> {
    this.checkOpen();
    const response = await retrying(this.retry, true, async () =>
      this.rpc.getConnections({ userId }, await this.callOptions()),
    );
    return response.connections;
  }

  /**
   * End streams (service only); returns how many ended on the node that answered.
   * Clients see `reason` in the status: UNAVAILABLE (they reconnect) or, with
   * `revoke`, PERMISSION_DENIED. Retried on UNAVAILABLE: ending streams twice is harmless.
   */
  async disconnect(selector: DisconnectSelector): Promise<number> {
    this.checkOpen();
    const s = selector as {
      userId?: string;
      machineId?: string;
      sessionId?: string;
      connectionId?: string;
      tokenId?: string;
    };
    if (s.machineId !== undefined && s.sessionId !== undefined)
      throw new TypeError("pass machineId or sessionId, not both");
    if ((s.machineId !== undefined || s.sessionId !== undefined) && s.userId === undefined) {
      throw new TypeError("machineId and sessionId need the userId they belong to");
    }
    if ([s.userId, s.connectionId, s.tokenId].filter((x) => x !== undefined).length !== 1) {
      throw new TypeError("pass exactly one of userId, connectionId, tokenId");
    }
    const request = create(DisconnectRequestSchema, {
      reason: selector.reason ?? "",
      revoke: selector.revoke ?? false,
    });
    if (s.connectionId !== undefined) request.selector = { case: "connectionId", value: s.connectionId };
    else if (s.tokenId !== undefined) request.selector = { case: "tokenId", value: s.tokenId };
    else if (s.machineId !== undefined) {
      const value = create(MachineSelectorSchema, { userId: s.userId ?? "", machineId: s.machineId });
      request.selector = { case: "machine", value };
    } else if (s.sessionId !== undefined) {
      const value = create(SessionSelectorSchema, { userId: s.userId ?? "", sessionId: s.sessionId });
      request.selector = { case: "session", value };
    } else request.selector = { case: "userId", value: s.userId ?? "" };
    const response = await retrying(this.retry, true, async () =>
      this.rpc.disconnect(request, await this.callOptions()),
    );
    return response.disconnected;
  }

  /**
   * Open a connection of `scope` and iterate its events (see `Subscription`).
   * Credentials (at most one of `token`, `userId`, `credentials`) default to the client's.
   */
  subscribe(scope: ConnectionScope, options: SubscribeOptions = {}): Subscription {
    this.checkOpen();
    const credentials = resolveCredentials(options, this.credentials);
    const policy =
      options.reconnect instanceof ReconnectPolicy
        ? options.reconnect
        : options.reconnect === false
          ? new ReconnectPolicy({ enabled: false })
          : this.reconnect;
    const state = new SubscriptionState(scope, {
      resumeFrom: options.resumeFrom,
      heartbeatMs: options.heartbeatMs,
      policy,
      refreshableCredentials: credentials?.refreshable ?? false,
    });
    const subscription = new Subscription(
      (request, callOptions) => this.rpc.subscribe(request, callOptions),
      state,
      credentials,
      options.signal,
      (closed) => this.subscriptions.delete(closed),
    );
    if (!subscription.closed) this.subscriptions.add(subscription);
    return subscription;
  }

  /** Send what is queued, end the subscriptions. Safe to call more than once. */
  async close(): Promise<void> {
    if (this.isClosed) return;
    await this.emitter.flush();
    this.isClosed = true;
    for (const subscription of [...this.subscriptions]) subscription.close();
  }
}
