/**
 * A server that dies under a subscription: the client keeps trying with
 * backoff, and when a new server answers on the same address (in-memory
 * history gone, a new epoch) it yields refetch-required and reads on live.
 *
 * The test starts and kills a server of its own (ER_EVENTROUTER with the
 * suite's keys file, ER_KEYS_FILE), so that it may kill it: by its PID, with
 * SIGKILL, as a crash would.
 */

import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { createServer, Socket } from "node:net";
import { test } from "node:test";
import {
  Backoff,
  buildDeleteSessionUpdate,
  ReconnectPolicy,
  type SubscriptionEvent,
  userScope,
} from "@eventrouter/client/node";
import { client, freshId, isUpdate, nextMatching, PROTOCOL, SKIP, user } from "./harness.js";

const EVENTROUTER = process.env.ER_EVENTROUTER;
const skip =
  SKIP ??
  (PROTOCOL !== "grpc"
    ? "restarts are tested over gRPC"
    : EVENTROUTER
      ? undefined
      : "ER_EVENTROUTER is not set");

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

async function serve(port: number): Promise<ChildProcess> {
  const args = ["serve", "--listen", `127.0.0.1:${port}`, "--keys-file", process.env.ER_KEYS_FILE as string];
  args.push("--metrics-listen", "", "--shutdown-grace-s", "0", "--log-level", "warning");
  const child = spawn(EVENTROUTER as string, args, { stdio: ["ignore", "ignore", "inherit"] });
  const until = Date.now() + 20_000;
  while (Date.now() < until) {
    if (child.exitCode !== null) throw new Error(`eventrouter serve exited with ${child.exitCode}`);
    const listening = await new Promise<boolean>((resolve) => {
      const socket = new Socket();
      socket.once("connect", () => resolve(true)).once("error", () => resolve(false));
      socket.connect(port, "127.0.0.1");
    });
    if (listening) return child;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  child.kill("SIGKILL");
  throw new Error(`eventrouter serve is not listening on ${port}`);
}

const stopped = (child: ChildProcess) =>
  new Promise<void>((resolve) =>
    child.exitCode !== null || child.signalCode !== null ? resolve() : child.once("exit", () => resolve()),
  );

test("a crashed server: reconnect with backoff, then refetch-required from the new one", {
  skip,
}, async () => {
  const { id: userId, tokens: t } = user("restart");
  const port = await freePort();
  let server = await serve(port);
  const target = `127.0.0.1:${port}`;
  const service = client({}, target);
  const reconnect = new ReconnectPolicy({ backoff: new Backoff({ baseMs: 50, maxMs: 400 }) });
  const subscription = service.subscribe(userScope(), { token: t.user, reconnect });
  try {
    await subscription.open();
    const before = freshId("before");
    await service.emitUpdate(userId, buildDeleteSessionUpdate("S1", 1, before));
    assert.equal((await nextMatching(subscription, isUpdate, "the first update")).payload.id, before);

    server.kill("SIGKILL");
    await stopped(server);
    // While nothing listens, each attempt fails and is said.
    const failures: SubscriptionEvent[] = [];
    while (failures.length < 2) {
      failures.push(
        await nextMatching(
          subscription,
          (e): e is SubscriptionEvent => e.type === "reconnecting",
          "reconnecting",
        ),
      );
    }
    assert.ok(
      failures.every((e) => e.type === "reconnecting" && e.codeName === "UNAVAILABLE"),
      JSON.stringify(failures),
    );

    server = await serve(port);
    const refetch = await nextMatching(
      subscription,
      (e): e is Extract<SubscriptionEvent, { type: "refetch-required" }> => e.type === "refetch-required",
      "refetch-required",
      20_000,
    );
    assert.equal(refetch.reason, "epoch_changed");
    const after = freshId("after");
    await service.emitUpdate(userId, buildDeleteSessionUpdate("S1", 1, after));
    assert.equal((await nextMatching(subscription, isUpdate, "the live update")).payload.id, after);
  } finally {
    subscription.close();
    await service.close();
    server.kill("SIGTERM");
    await stopped(server);
  }
});
