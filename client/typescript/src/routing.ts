/**
 * Connection scopes and recipient filters, one small constructor each.
 *
 * They return the contract's messages, for `subscribe(scope)` and
 * `emitUpdate(..., { recipientFilter })`. The routing rule they select is
 * the table in protos/eventrouter/v1/routing.proto.
 */

import { create, type MessageInitShape } from "@bufbuild/protobuf";
import {
  type ConnectionScope,
  ConnectionScopeSchema,
  type RecipientFilter,
  RecipientFilterSchema,
} from "./gen/eventrouter/v1/routing_pb.js";

type ScopeInit = NonNullable<MessageInitShape<typeof ConnectionScopeSchema>["scope"]>;
type FilterInit = NonNullable<MessageInitShape<typeof RecipientFilterSchema>["filter"]>;
const scope = (init: ScopeInit): ConnectionScope => create(ConnectionScopeSchema, { scope: init });
const filter = (init: FilterInit): RecipientFilter => create(RecipientFilterSchema, { filter: init });

/** Scope of one of the user's apps: sees everything routed to the apps. */
export const userScope = (): ConnectionScope => scope({ case: "user", value: {} });

/** Scope of a client watching one coding session. */
export const sessionScope = (sessionId: string): ConnectionScope =>
  scope({ case: "session", value: { sessionId } });

/** Scope of the daemon of one of the user's machines. */
export const machineScope = (machineId: string): ConnectionScope =>
  scope({ case: "machine", value: { machineId } });

/** Every connection of the user, whatever its scope (also what no filter means). */
export const allUserAuthenticatedConnections = (): RecipientFilter =>
  filter({ case: "allUserAuthenticatedConnections", value: {} });

/** Only the user's user-scoped connections (the apps). */
export const userScopedOnly = (): RecipientFilter => filter({ case: "userScopedOnly", value: {} });

/** User-scoped connections plus the session-scoped connections of `sessionId`. */
export const allInterestedInSession = (sessionId: string): RecipientFilter =>
  filter({ case: "allInterestedInSession", value: { sessionId } });

/** User-scoped connections plus the machine-scoped connections of `machineId`. */
export const machineScopedOnly = (machineId: string): RecipientFilter =>
  filter({ case: "machineScopedOnly", value: { machineId } });

/** Only the machine-scoped connections of `machineId` (the apps do not see it). */
export const machineOnly = (machineId: string): RecipientFilter =>
  filter({ case: "machineOnly", value: { machineId } });

/** Happy's own `recipientFilter` objects (`events/eventRouter.ts`), plus the later `machine-only`. */
export type HappyRecipientFilter =
  | { type: "all-user-authenticated-connections" }
  | { type: "user-scoped-only" }
  | { type: "all-interested-in-session"; sessionId: string }
  | { type: "machine-scoped-only"; machineId: string }
  | { type: "machine-only"; machineId: string };

/** Happy's recipient filter as the contract's (undefined: Happy's default, every connection). */
export function recipientFilterFromHappy(filter: HappyRecipientFilter | undefined): RecipientFilter {
  switch (filter?.type) {
    case undefined:
    case "all-user-authenticated-connections":
      return allUserAuthenticatedConnections();
    case "user-scoped-only":
      return userScopedOnly();
    case "all-interested-in-session":
      return allInterestedInSession(filter.sessionId);
    case "machine-scoped-only":
      return machineScopedOnly(filter.machineId);
    case "machine-only":
      return machineOnly(filter.machineId);
    default:
      throw new TypeError(
        `unknown recipient filter type ${JSON.stringify((filter as { type: unknown }).type)}`,
      );
  }
}
