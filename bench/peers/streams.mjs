// The subscriber side of run.py's line protocol for the Node subscribers of
// the eventrouter's targets (grpc/client.mjs, web/client.mjs): open the
// spec's connections stage by stage (at most `open_concurrency` at once), say
// `ready` with their connection ids, wait for `finish`, write the results.
// How a stream is opened and read is the caller's `start(conn, target, stats)`:
// it resolves once the stream's ConnectionOpened arrived, with a stream
// record { index, connId, ks, lats, error } that it fills as events arrive
// (see record() and arrived()).

import {
  awaitExpected,
  command,
  cpuSince,
  nowUs,
  say,
  writeResults,
} from "./lineproto.mjs";
import { readEvents } from "./proto.mjs";

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
  if (cmd.startsWith("finish ")) await awaitExpected(cmd.slice(7), streams, stats);
  const cpuS = cpuSince(cpuStart);
  // Then exit without closing thousands of connections one by one, which
  // measures nothing: the orchestrator stops the server next, dropping them all.
  writeResults(spec.out, streams, stats, cpuS);
}
