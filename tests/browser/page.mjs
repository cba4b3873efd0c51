// The test page's script: subscriptions through @eventrouter/client/web, the
// package's browser entry, bundled for browsers by esbuild at test time
// (tests/browser/harness.py). Nothing here speaks the protocols itself.
//
// It exposes `window.harness`, which the driver (driver.mjs) calls with
// page.evaluate; each subscription keeps a log of what it yielded, as plain
// JSON the test asserts on.
import {
  Backoff,
  createEventRouterClient,
  ReconnectPolicy,
  ResumeStatus,
  sessionScope,
  userScope,
} from "@eventrouter/client/web";

const subscriptions = new Map();
const changed = new EventTarget();

function position(p) {
  return p === undefined ? null : { offset: String(p.offset), epoch: p.epoch };
}

function record(event) {
  switch (event.type) {
    case "opened": {
      const { connectionId, resume, heartbeatIntervalMs } = event.opened;
      return {
        type: "opened",
        connectionId,
        resume: ResumeStatus[resume?.status ?? 0],
        replayed: Number(resume?.replayed ?? 0),
        position: position(event.opened.position),
        heartbeatMs: heartbeatIntervalMs,
      };
    }
    case "update":
      return { type: "update", id: event.payload.id, ...position(event.position) };
    case "ephemeral":
      return { type: "ephemeral", kind: event.payload.body.case };
    case "heartbeat":
      return { type: "heartbeat" };
    case "refetch-required":
      return { type: "refetch-required", reason: event.reason };
    case "reconnecting":
      return { type: "reconnecting", codeName: event.codeName, details: event.details };
    default:
      return { type: event.type };
  }
}

function failure(error) {
  return {
    type: "error",
    name: error?.name ?? "Error",
    codeName: error?.codeName ?? null,
    details: error?.details ?? null,
    message: String(error?.message ?? error),
  };
}

function note(entry, item) {
  entry.log.push({ ...item, atMs: Math.round(performance.now()) });
  changed.dispatchEvent(new Event("change"));
}

async function run(entry, iterable) {
  try {
    for await (const event of iterable) note(entry, record(event));
    note(entry, { type: "end" });
  } catch (error) {
    note(entry, failure(error));
  }
}

// Resolves with the log once `test(log)` holds; rejects after `timeoutMs`.
function until(name, test, what, timeoutMs) {
  const entry = subscriptions.get(name);
  return new Promise((resolve, reject) => {
    const check = () => {
      if (!test(entry.log)) return false;
      changed.removeEventListener("change", check);
      clearTimeout(timer);
      resolve(entry.log);
      return true;
    };
    const timer = setTimeout(() => {
      changed.removeEventListener("change", check);
      reject(new Error(`${name}: timed out waiting for ${what}; log: ${JSON.stringify(entry.log)}`));
    }, timeoutMs);
    changed.addEventListener("change", check);
    check();
  });
}

const count = (log, type) => log.filter((e) => e.type === type).length;
const ended = (log) => log.some((e) => e.type === "error" || e.type === "end");

window.harness = {
  // Open a subscription; resolves with its first record (`opened`, or the error),
  // or at once with `wait: false`.
  async subscribe(name, { baseUrl, protocol, token, session, resumeFrom, heartbeatMs, reconnect, wait = true }) {
    if (subscriptions.has(name)) throw new Error(`${name}: already subscribed`);
    const router = createEventRouterClient(baseUrl, { protocol });
    const abort = new AbortController();
    const options = { token, signal: abort.signal };
    if (resumeFrom) options.resumeFrom = { offset: BigInt(resumeFrom.offset), epoch: resumeFrom.epoch };
    if (heartbeatMs !== undefined) options.heartbeatMs = heartbeatMs;
    // Quick reconnects (the test waits for them), or none at all.
    options.reconnect = reconnect === false ? false : new ReconnectPolicy({ backoff: new Backoff({ baseMs: 50, maxMs: 200 }) });
    const scope = session ? sessionScope(session) : userScope();
    const entry = { log: [], abort, router };
    subscriptions.set(name, entry);
    entry.done = run(entry, router.subscribe(scope, options));
    if (!wait) return null;
    const [first] = await until(name, (log) => log.length > 0, "the stream to open", 10_000);
    return first;
  },
  log: (name) => subscriptions.get(name).log,
  logs: () => Object.fromEntries([...subscriptions].map(([name, entry]) => [name, entry.log])),
  // Wait until the subscription has yielded `count` records of `type` (or ended, for type "ended").
  until(name, type, n = 1, timeoutMs = 10_000) {
    const test = type === "ended" ? ended : (log) => count(log, type) >= n;
    return until(name, test, `${n} ${type}`, timeoutMs);
  },
  // The page drops its stream: aborting ends the fetch, the router sees the client go.
  async close(name) {
    const entry = subscriptions.get(name);
    entry.abort.abort();
    await entry.done;
    await entry.router.close();
    subscriptions.delete(name);
    return entry.log;
  },
};
window.harnessReady = true;
