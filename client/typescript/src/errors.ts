/**
 * The errors every call raises: `EventRouterError` and a subclass per code a caller acts on.
 *
 * Connect reports a failed call as a `ConnectError` whatever the transport
 * (gRPC, Connect, gRPC-Web); the client turns it into one of these, keeping it
 * as `cause`. `codeName` is the gRPC spelling the server and the Python client
 * use (`UNAVAILABLE`); `field` is the request field the server's message names
 * (`emits[2].update.id`), when it names one.
 */

import { Code, ConnectError } from "@connectrpc/connect";

const FIELD_PREFIX = /^([A-Za-z_][\w.[\]]*): /;

/** `Code.ResourceExhausted` as gRPC spells it: `RESOURCE_EXHAUSTED`. */
export function codeName(code: Code): string {
  return (Code[code] ?? "UNKNOWN").replace(/(?<=[a-z])(?=[A-Z])/g, "_").toUpperCase();
}

/** A call failed. The client raises only this hierarchy for failures of the router. */
export class EventRouterError extends Error {
  override name: string;
  /** The request field the server's message names, e.g. `update.body.raw.json`. */
  readonly field: string | undefined;

  constructor(
    readonly code: Code,
    readonly details: string,
    options?: { cause?: unknown },
  ) {
    super(details ? `${codeName(code)}: ${details}` : codeName(code), options);
    this.name = new.target.name;
    this.field = FIELD_PREFIX.exec(details)?.[1];
  }

  /** The gRPC name of `code`, e.g. `UNAVAILABLE`. */
  get codeName(): string {
    return codeName(this.code);
  }
}

// The codes a caller acts on. Each class names itself (`error.name`) through EventRouterError.

/** The request is malformed; also thrown before sending when that is cheap to tell. */
export class InvalidArgumentError extends EventRouterError {}
/** Missing, malformed, badly signed or expired credentials. */
export class UnauthenticatedError extends EventRouterError {}
/** Valid credentials that may not do this (a subscriber token emitting; a revoked stream). */
export class PermissionDeniedError extends EventRouterError {}
/** The router could not be reached (after the retries the policy allows). */
export class UnavailableError extends EventRouterError {}
/** Over a limit: an event or request too large, too many streams, an emit rate. */
export class ResourceExhaustedError extends EventRouterError {}
/** The per-call deadline passed. */
export class DeadlineExceededError extends EventRouterError {}

const ERROR_BY_CODE: Partial<Record<Code, typeof EventRouterError>> = {
  [Code.InvalidArgument]: InvalidArgumentError,
  [Code.Unauthenticated]: UnauthenticatedError,
  [Code.PermissionDenied]: PermissionDeniedError,
  [Code.Unavailable]: UnavailableError,
  [Code.ResourceExhausted]: ResourceExhaustedError,
  [Code.DeadlineExceeded]: DeadlineExceededError,
};

export function makeError(code: Code, details: string, cause?: unknown): EventRouterError {
  const ErrorClass = ERROR_BY_CODE[code] ?? EventRouterError;
  return new ErrorClass(code, details, { cause });
}

/**
 * A failed call as Connect reports it, a broken connection called UNAVAILABLE.
 *
 * connect-node reports an HTTP/2 stream its peer closed (a server that died,
 * a connection reset) as CANCELED. This client cancels a call only when its
 * caller closes it, and handles that before asking here, so CANCELED means the
 * connection broke: UNAVAILABLE, as grpc-js and grpcio say, and as retries and
 * reconnects expect.
 */
export function callError(reason: unknown): ConnectError {
  const error = ConnectError.from(reason);
  if (error.code !== Code.Canceled) return error;
  return new ConnectError(error.rawMessage, Code.Unavailable, error.metadata, undefined, error);
}

/** Any failure of a call (a ConnectError, or what the transport threw) as an EventRouterError. */
export function errorFromCall(reason: unknown): EventRouterError {
  if (reason instanceof EventRouterError) return reason;
  const error = callError(reason);
  return makeError(error.code, error.rawMessage, error);
}

export function invalid(field: string, message: string): InvalidArgumentError {
  return new InvalidArgumentError(Code.InvalidArgument, `${field}: ${message}`);
}
