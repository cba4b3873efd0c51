// Load generators of the Socket.IO peer, speaking run.py's line protocol
// (see bench/common.py): the same spec files, the same plan, the same results
// format as bench/loadgen_sub.py and bench/loadgen_pub.py.
//
//   node client.mjs sub SPEC.json   hold the subscriber sockets, record arrivals
//   node client.mjs pub SPEC.json   send the plan: "emit" per event, or batched
//
// Payloads are Happy's JSON as its Socket.IO server sends it; the benchmark's
// emit index k and send stamp (µs of CLOCK_MONOTONIC) ride in an update's
// `seq` and `createdAt`, and in an ephemeral usage's first two token counts,
// as in the gRPC payloads; an emit with `pad` > 0 is an update whose
// ciphertext is `pad` bytes instead of 200.
//
// With "stall" in its spec, `sub` holds connections that stop reading once
// open (W2s): each WebSocket's TCP socket is paused (ws's pause()), so the
// kernel's buffers fill and the server's writes queue up, until "finish"
// resumes them and reads what was kept for them.

import { readFileSync } from "node:fs";
import { io } from "socket.io-client";
import { emitBytes, takeBatch } from "../batch.mjs";
import {
  awaitExpected,
  command,
  cpuSince,
  nowUs,
  say,
  sayLast,
  sleep,
  writeResults,
} from "../lineproto.mjs";

const CIPHERTEXT = "q".repeat(200);

const [mode, specPath] = process.argv.slice(2);
const spec = JSON.parse(readFileSync(specPath, "utf8"));

function connect(target, auth) {
  return io(`http://${target}`, {
    transports: ["websocket"],
    forceNew: true, // one WebSocket per client, as each app or daemon has
    reconnection: false,
    auth,
  });
}

// -- subscribers -------------------------------------------------------------

async function subscribe() {
  const stats = { received: 0, first: 0, last: 0 };
  const streams = [];
  const open = (conn) =>
    new Promise((resolve, reject) => {
      const s = {
        index: conn.index,
        ks: [],
        lats: [],
        error: "",
        socket: connect(spec.targets[conn.node ?? 0], {
          userId: conn.user,
          scope: conn.scope,
          scopeId: conn.scope_id,
        }),
      };
      const onEvent = (k, sent) => {
        const now = nowUs();
        s.ks.push(k);
        s.lats.push(now - sent);
        if (!stats.first) stats.first = now;
        stats.last = now;
        stats.received += 1;
      };
      s.socket.on("update", (p) => onEvent(p.seq, p.createdAt));
      s.socket.on("ephemeral", (p) => onEvent(p.tokens.input, p.tokens.output));
      s.socket.on("disconnect", (reason) => {
        if (!s.closing) s.error = `disconnect: ${reason}`;
      });
      s.socket.once("connect", () => resolve(s));
      s.socket.once("connect_error", (e) => reject(e));
    });
  const limit = spec.open_concurrency ?? 200;
  let opened = 0;
  for (const stage of [...(spec.stages ?? []), spec.conns.length]) {
    const batch = spec.conns.slice(opened, stage);
    opened = Math.max(opened, stage);
    for (let i = 0; i < batch.length; i += limit) {
      streams.push(...(await Promise.all(batch.slice(i, i + limit).map(open))));
    }
    if (stage < spec.conns.length) {
      say("stage", { opened: streams.length });
      if ((await command()) !== "next") process.exit(0);
    }
  }
  // engine.io-client's WebSocket transport, and its `ws` WebSocket.
  const wsOf = (s) => s.socket.io.engine.transport.ws;
  if (spec.stall) for (const s of streams) wsOf(s).pause();
  say("ready", { ids: Object.fromEntries(streams.map((s) => [String(s.index), s.socket.id])) });
  const cpuStart = process.cpuUsage(); // from "ready" to just before writing the results
  const cmd = await command();
  if (cmd.startsWith("finish ")) {
    if (spec.stall) for (const s of streams) wsOf(s).resume();
    await awaitExpected(cmd.slice(7), streams, stats);
  }
  writeResults(spec.out, streams, stats, cpuSince(cpuStart));
}

// -- producer ----------------------------------------------------------------

function emitOf(e, k) {
  const sent = nowUs();
  const payload =
    e.kind === "u"
      ? {
          id: `${spec.run_id}-${k}`,
          seq: k,
          body: {
            t: "new-message",
            sid: "session",
            message: {
              id: "msg",
              seq: 1,
              content: { t: "encrypted", c: e.pad > 0 ? padding(e.pad) : CIPHERTEXT },
              localId: null,
              createdAt: 1700000000000,
              updatedAt: 1700000000000,
            },
          },
          createdAt: sent,
        }
      : {
          type: "usage",
          id: "session",
          key: "claude-session",
          tokens: { input: k, output: sent, cache_read: 120 },
          cost: { total: 0.0125 },
          timestamp: 1700000000000,
        };
  const skip = e.skip >= 0 ? spec.ids[String(e.skip)] ?? "" : "";
  return { userId: e.user, kind: e.kind, filter: e.filter, skip, payload };
}

// Padded ciphertexts, by size: built once.
const paddings = new Map();
function padding(size) {
  if (!paddings.has(size)) paddings.set(size, "q".repeat(size));
  return paddings.get(size);
}

// The same auto-batching as eventrouter.client: one call in flight per
// server; emits queued meanwhile leave together (within ../batch.mjs's
// limits) when it returns.
class Batcher {
  constructor(socket) {
    this.socket = socket;
    this.queue = [];
    this.sending = false;
  }
  emit(e, size) {
    return new Promise((resolve) => {
      this.queue.push({ e, size, resolve });
      if (!this.sending) this.flush();
    });
  }
  async flush() {
    this.sending = true;
    while (this.queue.length) {
      const batch = takeBatch(this.queue);
      const results = await this.socket.emitWithAck(
        "emitBatch",
        batch.map((b) => b.e),
      );
      batch.forEach((b, i) => b.resolve(results[i]));
    }
    this.sending = false;
  }
}

async function produce() {
  const sockets = await Promise.all(
    spec.targets.map(
      (t) =>
        new Promise((resolve, reject) => {
          const s = connect(t, { service: true });
          s.once("connect", () => resolve(s));
          s.once("connect_error", reject);
        }),
    ),
  );
  const batchers = sockets.map((s) => new Batcher(s));
  const plan = spec.plan;
  say("ready");
  if ((await command()) !== "go") process.exit(1);
  const cpuStart = process.cpuUsage(); // from "go" to just before saying "done"
  let next = 0;
  let errors = 0;
  let lastReply = 0;
  const calls = new Array(plan.length).fill(0); // each emit's wait for its reply, µs
  const startMs = performance.now();
  const firstSend = nowUs();
  async function worker() {
    while (next < plan.length) {
      const k = next++;
      if (spec.rate) {
        const delay = startMs + (k * 1000) / spec.rate - performance.now();
        if (delay > 0) await sleep(delay);
      }
      const e = plan[k];
      const node = e.node ?? 0;
      const sent = nowUs();
      try {
        if (spec.mode === "emit") await sockets[node].emitWithAck("emit", emitOf(e, k));
        else await batchers[node].emit(emitOf(e, k), emitBytes(e));
      } catch {
        errors += 1;
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
    errors,
    first_errors: [],
    cpu_s: cpuSince(cpuStart),
    call_us: calls,
  });
}

if (mode === "sub") await subscribe();
else if (mode === "pub") await produce();
else {
  process.stderr.write("usage: node client.mjs sub|pub SPEC.json\n");
  process.exit(2);
}
