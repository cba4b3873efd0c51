// What the Node subscribers of the eventrouter's targets share, whatever
// carries their streams (grpc/client.mjs: gRPC; web/client.mjs: the Connect
// protocol over HTTP/1.1): the contract's messages, loaded from protos/ with
// protobufjs (proto-loader's own parser, from the repository root's
// node_modules: `make node-deps`), and the reader of Subscribe's responses
// from the wire.

import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
export const require = createRequire(path.join(ROOT, "package.json"));
const protobuf = createRequire(require.resolve("@grpc/proto-loader"))("protobufjs");

export const PROTOS = path.join(ROOT, "protos");
export const PROTO_FILES = ["eventrouter/v1/router_service.proto"];
export const USER_ID_METADATA_KEY = "x-eventrouter-user-id";

const root = new protobuf.Root();
root.resolvePath = (_origin, target) =>
  path.isAbsolute(target) ? target : path.join(PROTOS, target);
root.loadSync(PROTO_FILES, { keepCase: true });
root.resolveAll();
export const type = (name) => root.lookupType(`eventrouter.v1.${name}`);

// Reading a SubscribeResponse for (k, sent) of each event, from the wire.
//
// Decoding every event whole (protobufjs) costs about 1.2 µs, as much as the
// router spends per delivery, nearly all of it on the update's body (a
// google.protobuf.Value tree) that nobody reads. So after the first message
// (ConnectionOpened, decoded whole) the stream's messages are scanned for the
// very fields loadgen_sub.py reads, and everything else is skipped by wire
// type: SubscribeResponse.events -> StreamEvent.update -> UpdateDelivery.payload
// -> UpdatePayload.seq (k) and .created_at_ms (stamp), int64 varints; or
// StreamEvent.ephemeral -> EphemeralPayload.usage -> Usage.tokens[0] (k) and
// [1] (stamp) -> UsageEntry.value, doubles. Their numbers and types are taken
// from the loaded .proto. Varints are read as Numbers: exact below 2^53
// (stamps are µs, k an emit index).

// The tag, (field number << 3) | wire type, of Type.field as it must be typed.
function tagOf(typeName, fieldName, fieldType) {
  const field = type(typeName).fields[fieldName];
  if (field?.type !== fieldType) throw new Error(`${typeName}.${fieldName} is not ${fieldType}`);
  const wireType = { int64: 0, double: 1 }[fieldType] ?? 2; // varint, fixed64, length-delimited
  return (field.id << 3) | wireType;
}
const EVENTS = tagOf("SubscribeResponse", "events", "StreamEvent");
const UPDATE = tagOf("StreamEvent", "update", "UpdateDelivery");
const EPHEMERAL = tagOf("StreamEvent", "ephemeral", "EphemeralPayload");
const PAYLOAD = tagOf("UpdateDelivery", "payload", "UpdatePayload");
const SEQ = tagOf("UpdatePayload", "seq", "int64");
const CREATED_AT = tagOf("UpdatePayload", "created_at_ms", "int64");
const USAGE = tagOf("EphemeralPayload", "usage", "Usage");
const TOKENS = tagOf("Usage", "tokens", "UsageEntry");
const VALUE = tagOf("UsageEntry", "value", "double");

let at = 0; // read position in the message being scanned
let k = 0; // what the event being scanned carries
let sent = 0;
let tokens = 0;

function varint(buf) {
  let value = 0;
  let scale = 1;
  let byte;
  do {
    byte = buf[at++];
    value += (byte & 0x7f) * scale;
    scale *= 128;
  } while (byte & 0x80);
  return value;
}

function skip(buf, tag) {
  const wireType = tag & 7;
  if (wireType === 0) varint(buf);
  else if (wireType === 1) at += 8;
  else if (wireType === 2) {
    const length = varint(buf); // first: `at += varint(buf)` would add to the old `at`
    at += length;
  } else if (wireType === 5) at += 4;
  else throw new Error(`unexpected wire type ${wireType}`);
}

// A length-delimited message at `at`: readField(buf, tag) consumes each field.
function readMessage(buf, readField) {
  const end = varint(buf) + at;
  while (at < end) readField(buf, varint(buf));
  if (at !== end) throw new Error("truncated message");
}

function readDelivery(buf, tag) {
  if (tag === PAYLOAD) readMessage(buf, readPayload);
  else skip(buf, tag);
}

function readPayload(buf, tag) {
  if (tag === SEQ) k = varint(buf);
  else if (tag === CREATED_AT) sent = varint(buf);
  else skip(buf, tag);
}

function readEphemeral(buf, tag) {
  if (tag === USAGE) readMessage(buf, readUsage);
  else skip(buf, tag);
}

function readUsage(buf, tag) {
  if (tag === TOKENS) {
    readMessage(buf, readToken);
    tokens += 1;
  } else skip(buf, tag);
}

function readToken(buf, tag) {
  if (tag === VALUE) {
    const value = Math.trunc(buf.readDoubleLE(at));
    at += 8;
    if (tokens === 0) k = value;
    else if (tokens === 1) sent = value;
  } else skip(buf, tag);
}

/** Calls onEvent(k, sent) for each update and usage ephemeral; returns the number of events. */
export function readEvents(buf, onEvent) {
  let events = 0;
  at = 0;
  while (at < buf.length) {
    const tag = varint(buf);
    if (tag !== EVENTS) {
      skip(buf, tag);
      continue;
    }
    const end = varint(buf) + at;
    let kind = 0;
    k = sent = tokens = 0;
    while (at < end) {
      const field = varint(buf);
      if (field === UPDATE) {
        kind = UPDATE;
        readMessage(buf, readDelivery);
      } else if (field === EPHEMERAL) {
        kind = EPHEMERAL;
        readMessage(buf, readEphemeral);
      } else skip(buf, field); // opened, heartbeat
    }
    if (at !== end) throw new Error("truncated event");
    events += 1;
    if (kind === UPDATE || (kind === EPHEMERAL && tokens >= 2)) onEvent(k, sent);
  }
  if (at !== buf.length) throw new Error("truncated response");
  return events;
}

export function scopeOf(conn) {
  if (conn.scope === "session") return { session: { session_id: conn.scope_id } };
  if (conn.scope === "machine") return { machine: { machine_id: conn.scope_id } };
  return { user: {} };
}
