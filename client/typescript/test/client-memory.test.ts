/**
 * The client's own logic against an in-memory router (Connect's createRouterTransport):
 * batching, retries, reconnect and resume decisions, refetch, abort, typed errors.
 * The same behaviours run against a real server in server.test.ts.
 */

import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createRouterTransport, type ServiceImpl } from "@connectrpc/connect";
import {
  Backoff,
  buildDeleteSessionUpdate,
  buildMachineStatusEphemeral,
  type EmitRequest,
  EmitResponseSchema,
  EventRouterClient,
  EventRouterService,
  InvalidArgumentError,
  ReconnectPolicy,
  ResumeFailure,
  ResumeStatus,
  RetryPolicy,
  StreamPositionSchema,
  type SubscribeRequest,
  type SubscribeResponse,
  SubscribeResponseSchema,
  type SubscriptionEvent,
  UnauthenticatedError,
  UnavailableError,
  userScope,
} from "@eventrouter/client";

type Impl = Partial<ServiceImpl<typeof EventRouterService>>;

function clientOf(impl: Impl, options: { retry?: RetryPolicy; reconnect?: ReconnectPolicy } = {}) {
  const transport = createRouterTransport((router) => router.service(EventRouterService, impl));
  return new EventRouterClient({
    transport,
    token: "t0k",
    retry:
      options.retry ?? new RetryPolicy({ maxAttempts: 3, backoff: new Backoff({ baseMs: 1, maxMs: 2 }) }),
    reconnect: options.reconnect ?? new ReconnectPolicy({ backoff: new Backoff({ baseMs: 1, maxMs: 2 }) }),
  });
}

const update = (id: string) => buildDeleteSessionUpdate("s1", 1, id);
const position = (offset: number, epoch = "e1") => ({ offset: BigInt(offset), epoch });
const updateIdOf = (request: EmitRequest) =>
  request.payload.case === "update" ? request.payload.value.id : "";

function opened(connectionId: string, offset: number, resume = ResumeStatus.NOT_REQUESTED, extra = {}) {
  return create(SubscribeResponseSchema, {
    events: [
      {
        event: {
          case: "opened",
          value: {
            connectionId,
            userId: "u1",
            position: position(offset),
            resume: { status: resume, ...extra },
          },
        },
      },
    ],
  });
}

function delivered(id: string, offset: number): SubscribeResponse {
  return create(SubscribeResponseSchema, {
    events: [{ event: { case: "update", value: { payload: update(id), position: position(offset) } } }],
  });
}

/** A promise and the function that settles it, to hold a call open until the test says so. */
function gate(): { wait: Promise<void>; open: () => void } {
  let open = () => {};
  const wait = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { wait, open };
}

const reached = (n: number) => create(EmitResponseSchema, { reached: n, position: position(n) });

describe("emitter", () => {
  test("emits of one synchronous stretch leave as one EmitBatch, each caller gets its result", async () => {
    const calls: string[][] = [];
    const client = clientOf({
      emit: (request) => {
        calls.push([updateIdOf(request)]);
        return reached(1);
      },
      emitBatch: (request) => {
        calls.push(request.emits.map(updateIdOf));
        return { results: request.emits.map((_, i) => reached(i + 1)) };
      },
    });
    const results = await Promise.all(["a", "b", "c"].map((id) => client.emitUpdate("u1", update(id))));
    assert.deepEqual(calls, [["a", "b", "c"]]);
    assert.deepEqual(
      results.map((r) => r.reached),
      [1, 2, 3],
    );
    assert.equal(results[2]?.position?.offset, 3n);
    await client.close();
  });

  test("a lone emit is sent at once; what arrives meanwhile waits for it, then leaves together", async () => {
    const calls: string[][] = [];
    const held = gate();
    const client = clientOf({
      emit: async (request) => {
        calls.push([updateIdOf(request)]);
        await held.wait;
        return reached(1);
      },
      emitBatch: (request) => {
        calls.push(request.emits.map(updateIdOf));
        return { results: request.emits.map(() => reached(2)) };
      },
    });
    const first = client.emitUpdate("u1", update("a"));
    await new Promise((resolve) => setTimeout(resolve, 10));
    assert.deepEqual(calls, [["a"]]);
    const later = [client.emitUpdate("u1", update("b")), client.emitUpdate("u1", update("c"))];
    held.open();
    await Promise.all([first, ...later]);
    assert.deepEqual(calls, [["a"], ["b", "c"]]);
    await client.close();
  });

  test("a batch the router rejects for one item is sent again one by one: only that caller fails", async () => {
    const client = clientOf({
      emit: (request) => {
        if (updateIdOf(request) === "bad") {
          throw new ConnectError("update.id: must be printable", Code.InvalidArgument);
        }
        return reached(1);
      },
      emitBatch: (request) => {
        const i = request.emits.findIndex((e) => updateIdOf(e) === "bad");
        throw new ConnectError(`emits[${i}].update.id: must be printable`, Code.InvalidArgument);
      },
    });
    const outcomes = await Promise.allSettled(
      ["ok1", "bad", "ok2"].map((id) => client.emitUpdate("u1", update(id))),
    );
    assert.deepEqual(
      outcomes.map((o) => o.status),
      ["fulfilled", "rejected", "fulfilled"],
    );
    const error = (outcomes[1] as PromiseRejectedResult).reason;
    assert.ok(error instanceof InvalidArgumentError);
    assert.equal(error.field, "update.id");
    assert.equal(error.codeName, "INVALID_ARGUMENT");
    await client.close();
  });

  test("UNAVAILABLE is retried for updates and keyed ephemerals, not for an ephemeral without a key", async () => {
    const tries = new Map<string, number>();
    const client = clientOf({
      emit: (request) => {
        const key =
          request.payload.case === "update" ? request.payload.value.id : request.idempotencyKey || "no-key";
        tries.set(key, (tries.get(key) ?? 0) + 1);
        if ((tries.get(key) ?? 0) < 2) throw new ConnectError("router restarting", Code.Unavailable);
        return reached(1);
      },
    });
    assert.equal((await client.emitUpdate("u1", update("u"))).reached, 1);
    const status = buildMachineStatusEphemeral("m1", true);
    assert.equal((await client.emitEphemeral("u1", status, { idempotencyKey: "k1" })).reached, 1);
    await assert.rejects(client.emitEphemeral("u1", status), UnavailableError);
    assert.deepEqual(Object.fromEntries(tries), { u: 2, k1: 2, "no-key": 1 });
    await client.close();
  });

  test("requests the router would surely refuse fail before they are sent", async () => {
    const client = clientOf({});
    await assert.rejects(client.emitUpdate("", update("a")), (e: unknown) => {
      assert.ok(e instanceof InvalidArgumentError);
      assert.equal(e.field, "user_id");
      return true;
    });
    await client.close();
  });
});

describe("subscription", () => {
  const collect = async (iterable: AsyncIterable<SubscriptionEvent>, count: number) => {
    const out: SubscriptionEvent[] = [];
    for await (const event of iterable) {
      out.push(event);
      if (out.length === count) break;
    }
    return out;
  };

  test("reconnects after the stream drops and resumes after its last position, with its old connection id", async () => {
    const requests: SubscribeRequest[] = [];
    const client = clientOf({
      async *subscribe(request) {
        requests.push(request);
        if (requests.length === 1) {
          yield opened("c1", 0);
          yield delivered("a", 1);
          throw new ConnectError("disconnected by the service", Code.Unavailable);
        }
        yield opened("c2", 1, ResumeStatus.RESUMED);
        yield delivered("b", 2);
        await new Promise(() => {}); // stay open
      },
    });
    const subscription = client.subscribe(userScope());
    const events = await collect(subscription, 5);
    assert.deepEqual(
      events.map((e) => e.type),
      ["opened", "update", "reconnecting", "opened", "update"],
    );
    const reconnecting = events[2];
    assert.ok(reconnecting?.type === "reconnecting");
    assert.equal(reconnecting.codeName, "UNAVAILABLE");
    assert.equal(reconnecting.attempt, 1);
    assert.equal(requests[1]?.resumeFrom?.offset, 1n);
    assert.equal(requests[1]?.previousConnectionId, "c1");
    assert.equal(subscription.closed, true, "leaving the loop ends the subscription");
    assert.equal(subscription.position?.offset, 2n);
    assert.equal(subscription.reconnects, 1);
    await client.close();
  });

  test("a failed resume yields refetch-required with its reason", async () => {
    const client = clientOf({
      async *subscribe() {
        yield opened("c1", 7, ResumeStatus.FAILED, { failure: ResumeFailure.EPOCH_CHANGED });
        await new Promise(() => {});
      },
    });
    const subscription = client.subscribe(userScope(), {
      resumeFrom: create(StreamPositionSchema, position(3, "old")),
    });
    const [first, second] = await collect(subscription, 2);
    assert.equal(first?.type, "opened");
    assert.ok(second?.type === "refetch-required");
    assert.equal(second.reason, "epoch_changed");
    assert.equal(second.position.offset, 7n);
    await client.close();
  });

  test("a refused token is a typed error, not a reconnect", async () => {
    const client = clientOf({
      // biome-ignore lint/correctness/useYield: refuses before its first message
      async *subscribe() {
        throw new ConnectError("token expired", Code.Unauthenticated);
      },
    });
    await assert.rejects(collect(client.subscribe(userScope()), 1), (e: unknown) => {
      assert.ok(e instanceof UnauthenticatedError);
      assert.equal(e.details, "token expired");
      return true;
    });
    await client.close();
  });

  test("aborting the signal ends the iteration cleanly", async () => {
    const client = clientOf({
      async *subscribe() {
        yield opened("c1", 0);
        await new Promise(() => {});
      },
    });
    const controller = new AbortController();
    const seen: string[] = [];
    for await (const event of client.subscribe(userScope(), { signal: controller.signal })) {
      seen.push(event.type);
      if (event.type === "opened") setTimeout(() => controller.abort(), 10);
    }
    assert.deepEqual(seen, ["opened"]);
    await client.close();
  });

  test("a stream whose heartbeats stop counts as dead and is reopened", async () => {
    let calls = 0;
    const client = clientOf({
      async *subscribe() {
        calls += 1;
        yield create(SubscribeResponseSchema, {
          events: [
            {
              event: {
                case: "opened",
                value: { connectionId: `c${calls}`, heartbeatIntervalMs: 1, position: position(0) },
              },
            },
            { event: { case: "heartbeat", value: { serverTimeMs: 5n } } },
          ],
        });
        await new Promise(() => {}); // then silence
      },
    });
    const events = await collect(client.subscribe(userScope(), { heartbeatMs: 1 }), 4);
    assert.deepEqual(
      events.map((e) => e.type),
      ["opened", "heartbeat", "reconnecting", "opened"],
    );
    assert.ok(events[2]?.type === "reconnecting" && events[2].details === "no heartbeat from the router");
    await client.close();
  });
});
