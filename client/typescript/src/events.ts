/**
 * What a subscription yields, and its logic without any I/O.
 *
 * `SubscriptionState` builds each `SubscribeRequest` (resuming after the last
 * position seen, with the previous connection id), turns each
 * `SubscribeResponse` into typed events, and decides after a stream ended
 * whether to reconnect and after how long: the Python client's
 * `SubscriptionState`, decision for decision.
 *
 * Where the resume guarantee stops: the router replays every update after the
 * position that was routed to this connection, or says it cannot
 * (`refetch-required`); ephemerals are never replayed, so those sent while the
 * subscription was reconnecting are lost by design.
 */

import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { codeName, makeError } from "./errors.js";
import type { EphemeralPayload, UpdatePayload } from "./gen/eventrouter/v1/events_pb.js";
import {
  type ConnectionOpened,
  ResumeFailure,
  ResumeStatus,
  type StreamPosition,
  StreamPositionSchema,
  type SubscribeRequest,
  SubscribeRequestSchema,
  type SubscribeResponse,
  type UpdateDelivery,
} from "./gen/eventrouter/v1/router_service_pb.js";
import type { ConnectionScope } from "./gen/eventrouter/v1/routing_pb.js";
import { ReconnectPolicy } from "./policy.js";

/** A stream was opened, or reopened: its connection id, the user, the resume outcome. */
export interface Opened {
  readonly type: "opened";
  readonly opened: ConnectionOpened;
}

/** A persistent update and its position in the user's stream. */
export interface UpdateReceived {
  readonly type: "update";
  readonly payload: UpdatePayload;
  readonly position: StreamPosition;
}

/** A transient event (never replayed after a reconnect). */
export interface EphemeralReceived {
  readonly type: "ephemeral";
  readonly payload: EphemeralPayload;
}

/** Why a resume failed: the router lost its history, the gap is too long, or the position is unknown. */
export type RefetchReason = "epoch_changed" | "too_old" | "unknown_position" | "unknown";

/**
 * Resume failed: updates may have been missed, so reload your state, then read on.
 * `position` is where the live stream starts.
 */
export interface RefetchRequired {
  readonly type: "refetch-required";
  readonly reason: RefetchReason;
  readonly position: StreamPosition;
}

/** The server's keep-alive on an idle stream (asked for with `heartbeatMs`). */
export interface HeartbeatReceived {
  readonly type: "heartbeat";
  readonly serverTimeMs: bigint;
}

/**
 * A stream ended and a new one opens after `delayMs`. `code` / `details` say
 * why (a stream that ended without a status counts as UNAVAILABLE); `attempt`
 * counts the consecutive failed attempts, this one included (0 when an expired
 * token is refreshed and the stream reopens at once).
 */
export interface Reconnecting {
  readonly type: "reconnecting";
  readonly code: Code;
  readonly codeName: string;
  readonly details: string;
  readonly attempt: number;
  readonly maxAttempts: number | undefined;
  readonly delayMs: number;
}

export type SubscriptionEvent =
  | Opened
  | UpdateReceived
  | EphemeralReceived
  | RefetchRequired
  | HeartbeatReceived
  | Reconnecting;

/** Codes a reconnect cannot fix: the request or the credential is wrong, or the call does not exist. */
const FATAL_CODES = new Set([
  Code.Unauthenticated,
  Code.PermissionDenied,
  Code.InvalidArgument,
  Code.Unimplemented,
  Code.FailedPrecondition,
  Code.NotFound,
  Code.OutOfRange,
  Code.AlreadyExists,
]);

const FAILURE_REASON: Partial<Record<ResumeFailure, RefetchReason>> = {
  [ResumeFailure.EPOCH_CHANGED]: "epoch_changed",
  [ResumeFailure.TOO_OLD]: "too_old",
  [ResumeFailure.UNKNOWN_POSITION]: "unknown_position",
};

const copy = (position: StreamPosition): StreamPosition =>
  create(StreamPositionSchema, { offset: position.offset, epoch: position.epoch });

export interface SubscriptionStateOptions {
  resumeFrom?: StreamPosition | undefined;
  heartbeatMs?: number | undefined;
  policy?: ReconnectPolicy | undefined;
  refreshableCredentials?: boolean | undefined;
  clock?: () => number;
  rand?: () => number;
}

/** Position, connection and reconnect bookkeeping of one subscription (no I/O). */
export class SubscriptionState {
  readonly heartbeatMs: number;
  readonly policy: ReconnectPolicy;
  opened: ConnectionOpened | undefined;
  opens = 0;
  /** Consecutive failed attempts, for the backoff. */
  failures = 0;
  private positionSeen: StreamPosition | undefined;
  private readonly refreshable: boolean;
  private readonly clock: () => number;
  private readonly rand: () => number;
  // Resume bookkeeping of the current stream: updates still to come from the
  // replay, and the head to adopt once they have all arrived.
  private replayLeft = 0;
  private headAtOpen: StreamPosition | undefined;
  private openedAt: number | undefined;
  private progress = false;

  constructor(
    readonly scope: ConnectionScope,
    options: SubscriptionStateOptions = {},
  ) {
    if (scope.scope.case === undefined) {
      throw new TypeError("scope: set one of user, session, machine (see userScope() & co.)");
    }
    this.heartbeatMs = options.heartbeatMs ?? 0;
    this.policy = options.policy ?? new ReconnectPolicy();
    this.refreshable = options.refreshableCredentials ?? false;
    this.clock = options.clock ?? Date.now;
    this.rand = options.rand ?? Math.random;
    this.positionSeen = options.resumeFrom === undefined ? undefined : copy(options.resumeFrom);
  }

  get connectionId(): string | undefined {
    return this.opened?.connectionId;
  }

  /** The last position seen (a copy); resume after it to miss nothing. */
  get position(): StreamPosition | undefined {
    return this.positionSeen === undefined ? undefined : copy(this.positionSeen);
  }

  get reconnects(): number {
    return Math.max(0, this.opens - 1);
  }

  /** How long a stream with heartbeats may stay silent before it counts as dead. */
  idleTimeoutMs(): number | undefined {
    const interval = this.opened?.heartbeatIntervalMs ?? 0;
    return interval ? 3 * interval + 1_000 : undefined;
  }

  /** The request for the next stream: resumes after the last position seen, if any. */
  request(): SubscribeRequest {
    const request = create(SubscribeRequestSchema, {
      scope: this.scope,
      heartbeatIntervalMs: this.heartbeatMs,
    });
    if (this.positionSeen !== undefined) {
      request.resumeFrom = copy(this.positionSeen);
      // Updates this client emitted skipping its old connection are not echoed.
      if (this.connectionId) request.previousConnectionId = this.connectionId;
    }
    this.openedAt = undefined;
    this.progress = false;
    return request;
  }

  /** The events of one stream message, in order, with the bookkeeping done. */
  onResponse(response: SubscribeResponse): SubscriptionEvent[] {
    const out: SubscriptionEvent[] = [];
    for (const { event } of response.events) {
      switch (event.case) {
        case "opened":
          out.push(...this.onOpened(event.value));
          continue;
        case "update": {
          const received = this.onUpdate(event.value);
          if (received !== undefined) out.push(received);
          break;
        }
        case "ephemeral":
          out.push({ type: "ephemeral", payload: event.value });
          break;
        case "heartbeat":
          out.push({ type: "heartbeat", serverTimeMs: event.value.serverTimeMs });
          break;
        default:
          break; // a kind of event this client does not know yet
      }
      this.progress = true;
    }
    return out;
  }

  private onOpened(opened: ConnectionOpened): SubscriptionEvent[] {
    this.opened = opened;
    this.opens += 1;
    this.openedAt = this.clock();
    const out: SubscriptionEvent[] = [{ type: "opened", opened }];
    const resume = opened.resume;
    const position = opened.position ?? create(StreamPositionSchema);
    this.replayLeft = 0;
    if (resume?.status === ResumeStatus.RESUMED) {
      // Replayed updates come first; only after the last of them is the
      // connection at the head it was registered at (updates routed elsewhere
      // do not come, so offsets may jump).
      this.headAtOpen = copy(position);
      this.replayLeft = Number(resume.replayed);
      if (this.replayLeft === 0) this.adoptHead();
    } else {
      this.positionSeen = copy(position);
      if (resume?.status === ResumeStatus.FAILED) {
        const reason = FAILURE_REASON[resume.failure] ?? "unknown";
        out.push({ type: "refetch-required", reason, position: copy(position) });
      }
    }
    return out;
  }

  private adoptHead(): void {
    const head = this.headAtOpen;
    const current = this.positionSeen;
    if (
      head !== undefined &&
      (current === undefined || current.epoch !== head.epoch || current.offset < head.offset)
    ) {
      this.positionSeen = head;
    }
    this.headAtOpen = undefined;
  }

  private onUpdate(delivery: UpdateDelivery): UpdateReceived | undefined {
    const position = delivery.position ?? create(StreamPositionSchema);
    const current = this.positionSeen;
    const replaying = this.replayLeft > 0;
    if (replaying) this.replayLeft -= 1;
    const duplicate =
      current !== undefined && current.epoch === position.epoch && position.offset <= current.offset;
    if (!duplicate) this.positionSeen = copy(position);
    if (replaying && this.replayLeft === 0) this.adoptHead();
    if (duplicate || delivery.payload === undefined) return undefined;
    return { type: "update", payload: delivery.payload, position };
  }

  /**
   * A stream ended (`code` undefined: without a status); returns the wait in ms.
   * Throws the matching EventRouterError when reconnecting cannot help or is not allowed.
   */
  onStreamEnd(code: Code | undefined, details: string): number {
    const policy = this.policy;
    const ended = code ?? Code.Unavailable;
    if (ended === Code.Unauthenticated && this.refreshable && this.openedAt !== undefined && policy.enabled) {
      // The credential was good when the stream opened and has expired since:
      // reopen now with a fresh one. If that one is refused too, the handshake
      // fails before `opened` and this throws.
      return 0;
    }
    if (FATAL_CODES.has(ended) || !policy.enabled) throw makeError(ended, details || "the stream ended");
    const healthy =
      this.openedAt !== undefined && (this.progress || this.clock() - this.openedAt >= policy.healthyAfterMs);
    if (healthy) this.failures = 0;
    this.failures += 1;
    if (policy.maxAttempts !== undefined && this.failures > policy.maxAttempts) {
      throw makeError(ended, `${details} (gave up after ${policy.maxAttempts} reconnects)`);
    }
    return policy.backoff.delayMs(this.failures - 1, this.rand);
  }

  /** The `reconnecting` event for a stream that ended with `code`, reopening after `delayMs`. */
  reconnecting(code: Code | undefined, details: string, delayMs: number): Reconnecting {
    const ended = code ?? Code.Unavailable;
    return {
      type: "reconnecting",
      code: ended,
      codeName: codeName(ended),
      details,
      attempt: this.failures,
      maxAttempts: this.policy.maxAttempts,
      delayMs,
    };
  }
}
