// The subscriber side of run.py's line protocol for the Node subscribers of
// the eventrouter's targets (grpc/client.mjs, web/client.mjs): open the
// spec's connections stage by stage (at most `open_concurrency` at once), say
// `ready` with their connection ids, wait for `finish`, write the results.
// How a stream is opened and read is the caller's `start(conn, target, stats)`:
// it resolves once the stream's ConnectionOpened arrived, with a stream
// record { index, connId, ks, lats, error } that it fills as events arrive
// (see record() and arrived()).

import { readFileSync, writeFileSync } from "node:fs";
import { command, cpuSince, nowUs, say, sayLast, sleep } from "./lineproto.mjs";
import { readEvents } from "./proto.mjs";

const STALL_MS = 5000; // finish when nothing arrived for this long
const FINISH_CAP_MS = 120000;

/** A fresh stream record for `conn`. */
export const streamOf = (conn) => ({ index: conn.index, connId: "", ks: [], lats: [], error: "" });

/**
 * A reader of a stream's messages after its ConnectionOpened: each call takes
 * one SubscribeResponse's bytes, records (k, latency) of its events in `s`
 * and counts them in `stats`.
 */
export function eventReader(s, stats) {
  const { ks, lats } = s;
  let now = 0;
  const record = (index, stamp) => {
    ks.push(index);
    lats.push(now - stamp);
  };
  return (buffer) => {
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
  };
}

export async function holdStreams(spec, start) {
  const conns = spec.conns;
  const stats = { received: 0, first: 0, last: 0 };
  const limit = spec.open_concurrency ?? 200;
  let active = 0;
  const waiting = [];

  // At most `limit` streams opening at once (loadgen_sub.py's semaphore).
  async function open(conn) {
    while (active >= limit) await new Promise((r) => waiting.push(r));
    active += 1;
    try {
      return await start(conn, spec.targets[conn.node ?? 0], stats);
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
  // Then exit without closing thousands of connections one by one, which
  // measures nothing: the orchestrator stops the server next, dropping them all.
  sayLast("done", { received: stats.received, cpu_s: cpuS });
}
