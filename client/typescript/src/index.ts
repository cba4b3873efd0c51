/**
 * @eventrouter/client: the platform-neutral part (any Connect transport).
 *
 * Import `@eventrouter/client/node` in Node (gRPC or Connect transports) and
 * `@eventrouter/client/web` in browsers and React Native (Connect or gRPC-Web):
 * both re-export everything here and add `createEventRouterClient(target)`.
 */

export { Code } from "@connectrpc/connect";
export type { DisconnectSelector, EmitResult, EventRouterClientOptions, SubscribeOptions } from "./client.js";
export { EventRouterClient } from "./client.js";
export type { CredentialOptions, Credentials, TokenSource } from "./credentials.js";
export { bearerToken, insecureUserId } from "./credentials.js";
export {
  codeName,
  DeadlineExceededError,
  EventRouterError,
  InvalidArgumentError,
  PermissionDeniedError,
  ResourceExhaustedError,
  UnauthenticatedError,
  UnavailableError,
} from "./errors.js";
export type {
  EphemeralReceived,
  HeartbeatReceived,
  Opened,
  Reconnecting,
  RefetchReason,
  RefetchRequired,
  SubscriptionEvent,
  SubscriptionStateOptions,
  UpdateReceived,
} from "./events.js";
export { SubscriptionState } from "./events.js";
// The contract's messages, enums, schemas (for `create`, `toBinary`, ...) and the service descriptor.
export * from "./gen/eventrouter/v1/events_pb.js";
export * from "./gen/eventrouter/v1/happy_json_pb.js";
export * from "./gen/eventrouter/v1/router_service_pb.js";
export * from "./gen/eventrouter/v1/routing_pb.js";
export * from "./happy/builders.js";
export type { HappyJson } from "./happy/codec.js";
export { ephemeralFromHappyJson, fromHappyJson, toHappyJson, updateFromHappyJson } from "./happy/codec.js";
export { HappyWireError } from "./happy/values.js";
export { Backoff, ReconnectPolicy, RetryPolicy } from "./policy.js";
export type { EmitOptions, EphemeralEmitOptions } from "./requests.js";
export { ephemeralRequest, updateRequest } from "./requests.js";
export type { HappyRecipientFilter } from "./routing.js";
export {
  allInterestedInSession,
  allUserAuthenticatedConnections,
  machineOnly,
  machineScope,
  machineScopedOnly,
  recipientFilterFromHappy,
  sessionScope,
  userScope,
  userScopedOnly,
} from "./routing.js";
export { Subscription } from "./subscription.js";
