// run.py's line protocol for the Node load generators (see bench/common.py):
// JSON events out on stdout, one command per line in on stdin, and the
// clock and CPU readings every load generator reports. Shared by
// socketio/client.mjs and grpc/client.mjs; no dependencies, so each peer's
// own node_modules is enough.

import { readFileSync, writeFileSync } from "node:fs";
import { createInterface } from "node:readline";

// µs of CLOCK_MONOTONIC, the clock of bench/common.py's now_us().
export const nowUs = () => Number(process.hrtime.bigint() / 1000n);

export const say = (event, fields = {}) =>
  process.stdout.write(JSON.stringify({ event, ...fields }) + "\n");

// The last line, then exit once it is written: a pipe takes a long line (a
// publisher's call_us) in pieces, and exiting at once would cut it short.
export const sayLast = (event, fields = {}) =>
  process.stdout.write(JSON.stringify({ event, ...fields }) + "\n", () => process.exit(0));

// This process's CPU (user + system, all threads) in seconds since `start`
// (a process.cpuUsage() reading): every load generator reports its own in
// `done`, so a run shows whether the load generators were the bottleneck.
export const cpuSince = (start) => {
  const { user, system } = process.cpuUsage(start);
  return (user + system) / 1e6;
};

const lines = createInterface({ input: process.stdin });
const pendingLines = [];
let lineWaiter = null;
lines.on("line", (line) => {
  if (lineWaiter) {
    const w = lineWaiter;
    lineWaiter = null;
    w(line.trim());
  } else pendingLines.push(line.trim());
});
lines.on("close", () => lineWaiter?.(""));

// The next command from run.py ("" once stdin closes).
export const command = () =>
  pendingLines.length ? Promise.resolve(pendingLines.shift()) : new Promise((r) => (lineWaiter = r));

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const STALL_MS = 5000; // a subscriber finishes when nothing arrived for this long
const FINISH_CAP_MS = 120000;

// A subscriber told `finish EXPECTED_FILE`: waits until every stream
// ({ index, ks, error }) has its expected count or has ended, or nothing
// arrived (stats.received) for STALL_MS.
export async function awaitExpected(expectedPath, streams, stats) {
  const expected = JSON.parse(readFileSync(expectedPath, "utf8"));
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

// A subscriber's results file (spec.out) and its last line, `done`.
export function writeResults(out, streams, stats, cpuS) {
  const conns = {};
  for (const s of streams) conns[String(s.index)] = { ks: s.ks, lat: s.lats, error: s.error };
  writeFileSync(out, JSON.stringify({ first_recv_us: stats.first, last_recv_us: stats.last, conns }));
  sayLast("done", { received: stats.received, cpu_s: cpuS });
}
