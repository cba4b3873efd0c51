/**
 * Building `EmitRequest`s, and the cheap checks made before sending them.
 *
 * The router rejects a whole EmitBatch when one item is invalid, so the
 * common mistakes are caught here, per item, before they cost the other
 * callers of a batch a round trip. The router stays the authority (id rules,
 * sizes, JSON texts).
 */

import { create } from "@bufbuild/protobuf";
import { invalid } from "./errors.js";
import type { EphemeralPayload, UpdatePayload } from "./gen/eventrouter/v1/events_pb.js";
import { type EmitRequest, EmitRequestSchema } from "./gen/eventrouter/v1/router_service_pb.js";
import type { RecipientFilter } from "./gen/eventrouter/v1/routing_pb.js";

/** Where an emit goes besides its user. */
export interface EmitOptions {
  /** Which of the user's connections receive it; unset: all of them. */
  recipientFilter?: RecipientFilter;
  /** A connection to leave out: the sender's own (its `Opened.opened.connectionId`), to avoid echo. */
  skipConnectionId?: string;
}

export interface EphemeralEmitOptions extends EmitOptions {
  /** Makes a repeat harmless (and so the emit retryable), as an update's id does. */
  idempotencyKey?: string;
}

export function updateRequest(
  userId: string,
  payload: UpdatePayload,
  options: EmitOptions = {},
): EmitRequest {
  return request(userId, { case: "update", value: payload }, options);
}

export function ephemeralRequest(
  userId: string,
  payload: EphemeralPayload,
  options: EphemeralEmitOptions = {},
): EmitRequest {
  return request(userId, { case: "ephemeral", value: payload }, options);
}

function request(
  userId: string,
  payload: EmitRequest["payload"],
  options: EphemeralEmitOptions,
): EmitRequest {
  return create(EmitRequestSchema, {
    userId,
    payload,
    recipientFilter: options.recipientFilter,
    skipConnectionId: options.skipConnectionId ?? "",
    idempotencyKey: options.idempotencyKey ?? "",
  });
}

const FILTER_IDS: Readonly<Record<string, string>> = {
  allInterestedInSession: "sessionId",
  machineScopedOnly: "machineId",
  machineOnly: "machineId",
};

const snake = (name: string): string => name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/** Throw, before sending, what the router would surely reject (field names as it names them). */
export function checkRequest(request: EmitRequest, prefix = ""): void {
  if (!request.userId) throw invalid(`${prefix}user_id`, "must be non-empty");
  const payload = request.payload;
  if (payload.case === "update") {
    if (!payload.value.id)
      throw invalid(`${prefix}update.id`, "must be non-empty (it is the idempotency key)");
    if (payload.value.body?.event.case === undefined)
      throw invalid(`${prefix}update.body.event`, "no update event is set");
  } else if (payload.case === "ephemeral") {
    if (payload.value.event.case === undefined)
      throw invalid(`${prefix}ephemeral.event`, "no ephemeral event is set");
  } else {
    throw invalid(`${prefix}payload`, "required: set update or ephemeral");
  }
  const filter = request.recipientFilter?.filter;
  const idField = filter?.case === undefined ? undefined : FILTER_IDS[filter.case];
  if (
    filter?.case !== undefined &&
    idField !== undefined &&
    !(filter.value as Record<string, unknown>)[idField]
  ) {
    throw invalid(`${prefix}recipient_filter.${snake(filter.case)}.${snake(idField)}`, "must be non-empty");
  }
}

/** Whether repeating this emit cannot deliver it twice (see `RetryPolicy`). */
export const retrySafe = (request: EmitRequest): boolean =>
  request.payload.case === "update" || request.idempotencyKey !== "";
