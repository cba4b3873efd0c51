// Node.js load generators for the gRPC targets (eventrouter, bare and their
// +variants), speaking run.py's line protocol (see bench/common.py) with the
// same spec files, plan and results format as bench/loadgen_sub.py and
// bench/loadgen_pub.py, so that gRPC and Socket.IO targets can be measured
// with clients in the same language (`run.py --clients node`).
//
//   node bench/peers/grpc/client.mjs sub SPEC.json   hold Subscribe streams, record arrivals
//   node bench/peers/grpc/client.mjs pub SPEC.json   send the plan: unary "emit" or "batch"
//
// @grpc/grpc-js and @grpc/proto-loader come from the repository root's
// node_modules (`make node-deps`). The service definition is proto-loader's,
// loaded from protos/ as tests/polyglot/conformance.mjs does; the messages are
// encoded and decoded with protobufjs (proto-loader's own parser) directly,
// without proto-loader's toObject/fromObject copies, so this process spends as
// little CPU per event as it can (as loadgen_sub.py uses the generated stubs).
//
// Payloads are those of loadgen_pub.py: an update (new-message, as the Python
// client's build_new_message_update makes it) carries the emit index k in
// `seq` and the send stamp (µs of CLOCK_MONOTONIC) in `created_at_ms`; an
// ephemeral (usage) carries them in its first two token counts. An emit with
// `pad` > 0 is an update whose ciphertext is `pad` bytes instead of 200.

import { readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { emitBytes, takeBatch } from "../batch.mjs";
import { command, cpuSince, nowUs, say, sayLast, sleep } from "../lineproto.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..", "..");
const require = createRequire(path.join(ROOT, "package.json"));
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");
const protobuf = createRequire(require.resolve("@grpc/proto-loader"))("protobufjs");

const PROTOS = path.join(ROOT, "protos");
const PROTO_FILES = ["eventrouter/v1/router_service.proto"];
const USER_ID_METADATA_KEY = "x-eventrouter-user-id";
const STALL_MS = 5000; // finish when nothing arrived for this long
const FINISH_CAP_MS = 120000;
const SUBSCRIBE_DEADLINE_MS = 3600 * 1000;
const UNARY_DEADLINE_MS = 60 * 1000; // loadgen_pub.py's timeout=60
const READY_DEADLINE_MS = 300 * 1000;
const RETRY_MAX_ATTEMPTS = 5; // eventrouter.client.RetryPolicy defaults
const RETRY_BASE_S = 0.05;
const RETRY_MAX_S = 2.0;
// About what Happy's apps send: an encrypted message of a couple hundred bytes.
const CIPHERTEXT = "q".repeat(200);

const SUB_CHANNEL_OPTIONS = {
  // One TCP connection per channel: grpc-js channels with equal options
  // share a subchannel (connection) from the global pool; a local pool per
  // channel gives each its own, as loadgen_sub.py does with grpcio.
  "grpc.use_local_subchannel_pool": 1,
  "grpc.max_receive_message_length": 16 * 1024 * 1024,
  "grpc.enable_channelz": 0,
};
const PUB_CHANNEL_OPTIONS = { "grpc.enable_channelz": 0 };

// -- the contract --------------------------------------------------------------

const definition = protoLoader.loadSync(PROTO_FILES, {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: false,
  oneofs: true,
  includeDirs: [PROTOS],
});
const root = new protobuf.Root();
root.resolvePath = (_origin, target) =>
  path.isAbsolute(target) ? target : path.join(PROTOS, target);
root.loadSync(PROTO_FILES, { keepCase: true });
root.resolveAll();
const type = (name) => root.lookupType(`eventrouter.v1.${name}`);

// proto-loader's service definition with protobufjs codecs that take and give
// message objects as they are (no per-message conversion). Subscribe's
// responses are handed over undecoded: see readEvents.
const service = {};
for (const [name, method] of Object.entries(definition["eventrouter.v1.EventRouterService"])) {
  const request = type(method.requestType.type.name);
  const response = type(method.responseType.type.name);
  service[name] = {
    ...method,
    requestSerialize: (message) => request.encode(message).finish(),
    requestDeserialize: (buffer) => request.decode(buffer),
    responseSerialize: (message) => response.encode(message).finish(),
    responseDeserialize:
      name === "Subscribe" ? (buffer) => buffer : (buffer) => response.decode(buffer),
  };
}
const SubscribeResponse = type("SubscribeResponse");
const Client = grpc.makeGenericClientConstructor(service, "EventRouterService");
const insecure = grpc.credentials.createInsecure();

// -- the command line (the line protocol is ../lineproto.mjs) -------------------

const [role, specPath] = process.argv.slice(2);

const statusName = (code) => grpc.status[code] ?? String(code);

// -- subscribers ---------------------------------------------------------------

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
function readEvents(buf, onEvent) {
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

function scopeOf(conn) {
  if (conn.scope === "session") return { session: { session_id: conn.scope_id } };
  if (conn.scope === "machine") return { machine: { machine_id: conn.scope_id } };
  return { user: {} };
}

async function subscribe(spec) {
  const conns = spec.conns;
  const stats = { received: 0, first: 0, last: 0 };
  const shared = spec.channel_per === "user" ? new Map() : null;
  const limit = spec.open_concurrency ?? 200;
  let active = 0;
  const waiting = [];

  function channelFor(conn, target) {
    if (shared === null) return new Client(target, insecure, SUB_CHANNEL_OPTIONS);
    // --channel-per user: a user's streams share one channel (one TCP connection).
    const key = `${target}/${conn.user}`;
    if (!shared.has(key)) shared.set(key, new Client(target, insecure, SUB_CHANNEL_OPTIONS));
    return shared.get(key);
  }

  // Resolves with the stream once its first message (ConnectionOpened) arrived.
  const start = (conn, target) =>
    new Promise((resolve, reject) => {
      const s = { index: conn.index, connId: "", ks: [], lats: [], error: "", opened: false };
      const metadata = new grpc.Metadata({ waitForReady: true });
      metadata.set(USER_ID_METADATA_KEY, conn.user);
      s.call = channelFor(conn, target).Subscribe({ scope: scopeOf(conn) }, metadata, {
        deadline: Date.now() + SUBSCRIBE_DEADLINE_MS,
      });
      const { ks, lats } = s;
      let now = 0;
      const record = (index, stamp) => {
        ks.push(index);
        lats.push(now - stamp);
      };
      s.call.on("data", (buffer) => {
        if (!s.opened) {
          s.opened = true;
          s.connId = SubscribeResponse.decode(buffer).events[0].opened.connection_id;
          resolve(s);
          return;
        }
        now = nowUs();
        let events = 0;
        try {
          events = readEvents(buffer, record);
        } catch (e) {
          s.error = `unreadable message: ${e.message}`;
          return;
        }
        if (!stats.first) stats.first = now;
        stats.last = now;
        stats.received += events;
      });
      s.call.on("status", (status) => {
        if (status.code === grpc.status.OK) s.error = "EOF";
      });
      s.call.on("error", (e) => {
        if (e.code !== grpc.status.CANCELLED) s.error = `${statusName(e.code)}: ${e.details}`;
        if (!s.opened) reject(e);
      });
    });

  // At most `limit` streams opening at once (loadgen_sub.py's semaphore).
  async function open(conn) {
    while (active >= limit) await new Promise((r) => waiting.push(r));
    active += 1;
    try {
      return await start(conn, spec.targets[conn.node ?? 0]);
    } finally {
      active -= 1;
      waiting.shift()?.();
    }
  }

  const streams = [];
  let opened = 0;
  for (const stage of [...(spec.stages ?? []), conns.length]) {
    const batch = conns.slice(opened, stage);
    opened = Math.max(opened, stage);
    streams.push(...(await Promise.all(batch.map(open))));
    if (stage < conns.length) {
      say("stage", { opened: streams.length });
      if ((await command()) !== "next") process.exit(0);
    }
  }
  say("ready", { ids: Object.fromEntries(streams.map((s) => [String(s.index), s.connId])) });
  const cpuStart = process.cpuUsage(); // from "ready" to just before writing the results
  const cmd = await command();
  if (cmd.startsWith("finish ")) {
    // Wait until every stream has its expected count or has ended, or nothing
    // arrives for STALL_MS.
    const expected = JSON.parse(readFileSync(cmd.slice(7), "utf8"));
    const end = Date.now() + FINISH_CAP_MS;
    let lastTotal = -1;
    let lastChange = Date.now();
    while (Date.now() < end) {
      if (streams.every((s) => s.error || s.ks.length >= (expected[String(s.index)] ?? 0))) break;
      if (stats.received !== lastTotal) {
        lastTotal = stats.received;
        lastChange = Date.now();
      } else if (Date.now() - lastChange > STALL_MS) break;
      await sleep(20);
    }
  }
  const cpuS = cpuSince(cpuStart);
  const results = {};
  for (const s of streams) results[String(s.index)] = { ks: s.ks, lat: s.lats, error: s.error };
  writeFileSync(
    spec.out,
    JSON.stringify({ first_recv_us: stats.first, last_recv_us: stats.last, conns: results }),
  );
  // Then exit without closing thousands of channels one by one, which
  // measures nothing: the orchestrator stops the server next, dropping them all.
  sayLast("done", { received: stats.received, cpu_s: cpuS });
}

// -- producer ------------------------------------------------------------------

function recipientFilter(flt) {
  const [kind, id] = flt;
  if (kind === "user_only") return { user_scoped_only: {} };
  if (kind === "session") return { all_interested_in_session: { session_id: id } };
  if (kind === "machine_scoped") return { machine_scoped_only: { machine_id: id } };
  if (kind === "machine_only") return { machine_only: { machine_id: id } };
  return { all_user_authenticated_connections: {} };
}

// build_new_message_update({...}, "session", ...)'s body; the struct's
// well-known types keep protobufjs's camelCase names (stringValue, ...). The
// requests equal loadgen_pub.py's byte for byte but for the order of these
// two map entries, which Python's protobuf varies from process to process.
const updateBody = (ciphertext) =>
  type("UpdateEvent").fromObject({
    new_message: {
      session_id: "session",
      message: {
        id: "msg",
        seq: 1,
        content: {
          structValue: {
            fields: { t: { stringValue: "encrypted" }, c: { stringValue: ciphertext } },
          },
        },
        created_at_ms: 1700000000000,
        updated_at_ms: 1700000000000,
      },
    },
  });
const UPDATE_BODY = updateBody(CIPHERTEXT);

/** Each emit's request (loadgen_pub.Requests): built before the clock starts, stamped at send. */
class Requests {
  constructor(plan, ids, runId) {
    this.plan = plan;
    this.runId = runId;
    // Padded updates' bodies, by ciphertext size.
    this.padded = new Map();
    for (const e of plan) {
      if (e.pad > 0 && !this.padded.has(e.pad)) {
        this.padded.set(e.pad, updateBody("q".repeat(e.pad)));
      }
    }
    // Everything but the payload. Fields at their proto3 default are left out,
    // as the Python messages leave them out of the wire.
    this.base = plan.map((e) => {
      const request = { user_id: e.user };
      const skip = ids[String(e.skip)] ?? "";
      if (skip) request.skip_connection_id = skip;
      if (e.filter[0] !== "all") request.recipient_filter = recipientFilter(e.filter);
      return request;
    });
  }

  stamped(k) {
    const request = this.base[k];
    const sent = nowUs();
    const e = this.plan[k];
    if (e.kind === "u") {
      const body = e.pad > 0 ? this.padded.get(e.pad) : UPDATE_BODY;
      const update = { id: `${this.runId}-${k}`, body, created_at_ms: sent };
      if (k) update.seq = k;
      request.update = update;
    } else {
      const input = k ? { key: "input", value: k } : { key: "input" };
      request.ephemeral = {
        // build_usage_ephemeral("session", "claude-session", ...)
        usage: {
          session_id: "session",
          key: "claude-session",
          tokens: [input, { key: "output", value: sent }, { key: "cache_read", value: 120 }],
          cost: [{ key: "total", value: 0.0125 }],
          timestamp_ms: 1700000000000,
        },
      };
    }
    return request;
  }
}

function unary(client, method, request) {
  return new Promise((resolve, reject) =>
    client[method](request, { deadline: Date.now() + UNARY_DEADLINE_MS }, (error, response) =>
      error ? reject(error) : resolve(response),
    ),
  );
}

// INVALID_ARGUMENT names one bad item; so does RESOURCE_EXHAUSTED for an
// oversized one ("emits[3]..."): the batch is sent again one emit at a time.
const blamesOneItem = (e) =>
  e.code === grpc.status.INVALID_ARGUMENT ||
  (e.code === grpc.status.RESOURCE_EXHAUSTED && (e.details ?? "").startsWith("emits["));

/**
 * eventrouter.client.EventRouterClient's auto-batching: at most one Emit /
 * EmitBatch call in flight; the emits queued meanwhile leave together (within
 * ../batch.mjs's limits) when it returns, a lone one as a unary Emit; each
 * emit's promise resolves with its own EmitResponse. UNAVAILABLE is retried (updates
 * only: safe to repeat) as its default RetryPolicy does.
 */
class Batcher {
  constructor(client) {
    this.client = client;
    this.queue = [];
    this.sending = false;
  }

  emit(request, size) {
    return new Promise((resolve, reject) => {
      this.queue.push({ request, size, resolve, reject, safe: request.update !== undefined });
      if (!this.sending) {
        this.sending = true;
        // Like asyncio's create_task: the sender starts after what is already
        // running, so emits made in the same turn leave in one call.
        queueMicrotask(() => this.sendQueued());
      }
    });
  }

  async sendQueued() {
    try {
      while (this.queue.length) {
        const batch = takeBatch(this.queue);
        const outcomes = await this.send(batch);
        // Settled with no await before the next turn of the loop: the next
        // call takes only what queued while this one was in flight.
        for (const [item, result, error] of outcomes) {
          if (error) item.reject(error);
          else item.resolve(result);
        }
      }
    } finally {
      this.sending = false;
    }
  }

  /** [item, result, error] for each item of the batch. */
  async send(batch) {
    const outcomes = [];
    for (let attempt = 1; ; attempt++) {
      try {
        const requests = batch.map((item) => item.request);
        let results;
        if (requests.length === 1) {
          results = [await unary(this.client, "Emit", requests[0])];
        } else {
          results = (await unary(this.client, "EmitBatch", { emits: requests })).results;
          if (results.length !== requests.length) {
            const e = new Error(
              `router answered ${results.length} results for ${requests.length} emits`,
            );
            return [...outcomes, ...batch.map((item) => [item, null, e])];
          }
        }
        return [...outcomes, ...batch.map((item, i) => [item, results[i], null])];
      } catch (e) {
        if (e.code === undefined) return [...outcomes, ...batch.map((item) => [item, null, e])];
        if (batch.length > 1 && blamesOneItem(e)) {
          for (const item of batch) outcomes.push(...(await this.send([item])));
          return outcomes;
        }
        const retry = [];
        const again = e.code === grpc.status.UNAVAILABLE && attempt < RETRY_MAX_ATTEMPTS;
        for (const item of batch) {
          if (again && item.safe) retry.push(item);
          else outcomes.push([item, null, e]);
        }
        if (!retry.length) return outcomes;
        batch = retry;
        const ceiling = Math.min(RETRY_MAX_S, RETRY_BASE_S * 2 ** (attempt - 1));
        await sleep(Math.random() * ceiling * 1000);
      }
    }
  }
}

async function produce(spec) {
  const plan = spec.plan;
  const requests = new Requests(plan, spec.ids, spec.run_id);
  const rate = spec.rate;
  const errors = [];
  const clients = spec.targets.map((t) => new Client(t, insecure, PUB_CHANNEL_OPTIONS));
  const batchers = clients.map((c) => new Batcher(c));
  await Promise.all(
    clients.map(
      (c) =>
        new Promise((resolve, reject) =>
          c.waitForReady(Date.now() + READY_DEADLINE_MS, (e) => (e ? reject(e) : resolve())),
        ),
    ),
  );
  say("ready");
  if ((await command()) !== "go") process.exit(1);
  const cpuStart = process.cpuUsage(); // from "go" to just before saying "done"
  let next = 0;
  let lastReply = 0;
  const calls = new Array(plan.length).fill(0); // each emit's wait for its reply, µs
  const startMs = performance.now();
  const firstSend = nowUs();

  async function worker() {
    while (next < plan.length) {
      const k = next++;
      if (rate) {
        const delay = startMs + (k * 1000) / rate - performance.now();
        if (delay > 0) await sleep(delay);
      }
      const node = plan[k].node ?? 0;
      const sent = nowUs();
      const request = requests.stamped(k);
      try {
        if (spec.mode === "emit") await unary(clients[node], "Emit", request);
        else await batchers[node].emit(request, emitBytes(plan[k]));
      } catch (e) {
        errors.push(`${k}: ${e.name}: ${e.message}`);
      }
      lastReply = nowUs();
      calls[k] = lastReply - sent;
    }
  }

  await Promise.all(Array.from({ length: spec.inflight }, worker));
  sayLast("done", {
    first_send_us: firstSend,
    last_reply_us: lastReply,
    emits: plan.length,
    errors: errors.length,
    first_errors: errors.slice(0, 5),
    cpu_s: cpuSince(cpuStart),
    call_us: calls,
  });
}

if (role === "sub") await subscribe(JSON.parse(readFileSync(specPath, "utf8")));
else if (role === "pub") await produce(JSON.parse(readFileSync(specPath, "utf8")));
else {
  process.stderr.write("usage: node bench/peers/grpc/client.mjs sub|pub SPEC.json\n");
  process.exit(2);
}
