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

import { readFileSync } from "node:fs";
import { emitBytes, takeBatch } from "../batch.mjs";
import { command, cpuSince, nowUs, say, sayLast, sleep } from "../lineproto.mjs";
import {
  PROTO_FILES,
  PROTOS,
  USER_ID_METADATA_KEY,
  require,
  scopeOf,
  type,
} from "../proto.mjs";
import { eventReader, holdStreams, streamOf } from "../streams.mjs";

const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

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

// proto-loader's service definition with protobufjs codecs that take and give
// message objects as they are (no per-message conversion). Subscribe's
// responses are handed over undecoded: see ../proto.mjs (readEvents).
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

async function subscribe(spec) {
  const shared = spec.channel_per === "user" ? new Map() : null;

  function channelFor(conn, target) {
    if (shared === null) return new Client(target, insecure, SUB_CHANNEL_OPTIONS);
    // --channel-per user: a user's streams share one channel (one TCP connection).
    const key = `${target}/${conn.user}`;
    if (!shared.has(key)) shared.set(key, new Client(target, insecure, SUB_CHANNEL_OPTIONS));
    return shared.get(key);
  }

  // Resolves with the stream once its first message (ConnectionOpened) arrived.
  const start = (conn, target, stats) =>
    new Promise((resolve, reject) => {
      const s = streamOf(conn);
      const metadata = new grpc.Metadata({ waitForReady: true });
      metadata.set(USER_ID_METADATA_KEY, conn.user);
      const call = channelFor(conn, target).Subscribe({ scope: scopeOf(conn) }, metadata, {
        deadline: Date.now() + SUBSCRIBE_DEADLINE_MS,
      });
      const read = eventReader(s, stats);
      let opened = false;
      call.on("data", (buffer) => {
        if (opened) read(buffer);
        else {
          opened = true;
          s.connId = SubscribeResponse.decode(buffer).events[0].opened.connection_id;
          resolve(s);
        }
      });
      call.on("status", (status) => {
        if (status.code === grpc.status.OK) s.error = "EOF";
      });
      call.on("error", (e) => {
        if (e.code !== grpc.status.CANCELLED) s.error = `${statusName(e.code)}: ${e.details}`;
        if (!opened) reject(e);
      });
    });

  await holdStreams(spec, start);
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
