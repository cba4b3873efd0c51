/**
 * The TypeScript client against a real eventrouter server (started by the
 * Python suite: tests/polyglot/test_typescript_client.py), over the transport
 * ER_PROTOCOL names: routing for every filter and scope, resume after the
 * server ends a stream, refetch on a stale position, the batching emitter's
 * results, duplicates, and refused credentials.
 */

import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import type { Interceptor } from "@connectrpc/connect";
import {
  allInterestedInSession,
  allUserAuthenticatedConnections,
  Backoff,
  buildDeleteSessionUpdate,
  buildSessionEventEphemeral,
  type EmitOptions,
  InvalidArgumentError,
  machineOnly,
  machineScope,
  machineScopedOnly,
  PermissionDeniedError,
  type RecipientFilter,
  ReconnectPolicy,
  ResumeStatus,
  StreamPositionSchema,
  type Subscription,
  type SubscriptionEvent,
  sessionScope,
  toHappyJson,
  UnauthenticatedError,
  UpdatePayloadSchema,
  updateRequest,
  userScope,
  userScopedOnly,
} from "@eventrouter/client/node";
import {
  client,
  freshId,
  isOpened,
  isUpdate,
  nextMatching,
  SKIP,
  tokens,
  updatesUntil,
  user,
} from "./harness.js";

const service = SKIP ? undefined : client();
after(() => service?.close());
const router = () => service as NonNullable<typeof service>;

const update = (id: string) => buildDeleteSessionUpdate("S1", 1, id);

describe("routing: every filter reaches exactly the connections of the rule", { skip: SKIP }, () => {
  test("user, session and machine scopes under every filter, skip-sender and ephemerals", async () => {
    const { id: userId, tokens: t } = user("routing");
    const subscriptions: Record<string, Subscription> = {
      user: router().subscribe(userScope(), { token: t.user }),
      sessionS1: router().subscribe(sessionScope("S1"), { token: t.sessionS1 }),
      sessionS2: router().subscribe(sessionScope("S2"), { token: t.sessionS2 }),
      machineM1: router().subscribe(machineScope("M1"), { token: t.machineM1 }),
      machineM2: router().subscribe(machineScope("M2"), { token: t.machineM2 }),
    };
    await Promise.all(Object.values(subscriptions).map((s) => s.open()));
    const everyone = Object.keys(subscriptions);
    // filter -> who receives it (routing.proto's table).
    const cases: [string, RecipientFilter | undefined, string[]][] = [
      ["unset", undefined, everyone],
      ["all", allUserAuthenticatedConnections(), everyone],
      ["user-only", userScopedOnly(), ["user"]],
      ["session-S1", allInterestedInSession("S1"), ["user", "sessionS1"]],
      ["machine-scoped-M1", machineScopedOnly("M1"), ["user", "machineM1"]],
      ["machine-only-M1", machineOnly("M1"), ["machineM1"]],
    ];
    const ids: Record<string, string> = {};
    for (const [name, filter] of cases) {
      ids[name] = freshId(name);
      const options: EmitOptions = filter === undefined ? {} : { recipientFilter: filter };
      const result = await router().emitUpdate(userId, update(ids[name] as string), options);
      assert.equal(result.reached, cases.find((c) => c[0] === name)?.[2].length, `reached for ${name}`);
    }
    // The sender's own connection is skipped (Happy's skipSenderConnection).
    const skipped = freshId("skip-user");
    const skip = { skipConnectionId: subscriptions.user?.connectionId as string };
    assert.equal((await router().emitUpdate(userId, update(skipped), skip)).reached, 4);
    const marker = freshId("marker");
    await router().emitUpdate(userId, update(marker));

    for (const [who, subscription] of Object.entries(subscriptions)) {
      const expected = cases.filter(([, , reached]) => reached.includes(who)).map(([name]) => ids[name]);
      if (who !== "user") expected.push(skipped);
      assert.deepEqual(
        await updatesUntil(subscription, marker),
        expected,
        `updates of the ${who} connection`,
      );
    }

    // An ephemeral follows the same rule (Happy's session-event goes to the session's viewers).
    const event = buildSessionEventEphemeral("S1", "done", "It's ready!", "happy-server");
    const result = await router().emitEphemeral(userId, event, {
      recipientFilter: allInterestedInSession("S1"),
    });
    assert.equal(result.reached, 2);
    assert.equal(result.position, undefined);
    const got = await nextMatching(
      subscriptions.sessionS1 as Subscription,
      (e) => e.type === "ephemeral",
      "ephemeral",
    );
    assert.ok(got.type === "ephemeral");
    assert.equal(JSON.stringify(toHappyJson(got.payload)), JSON.stringify(toHappyJson(event)));

    const connections = await router().getConnections(userId);
    assert.equal(connections.length, 5);
    for (const subscription of Object.values(subscriptions)) subscription.close();
  });
});

describe("resume", { skip: SKIP }, () => {
  test("after the server ends the stream it reconnects and resumes: nothing lost, nothing twice, own emits not echoed", async () => {
    const { id: userId, tokens: t } = user("resume");
    const fast = new ReconnectPolicy({ backoff: new Backoff({ baseMs: 10, maxMs: 50 }) });
    const subscription = router().subscribe(userScope(), { token: t.user, reconnect: fast });
    await subscription.open();
    const first = freshId("before");
    await router().emitUpdate(userId, update(first));
    assert.equal((await nextMatching(subscription, isUpdate, "the first update")).payload.id, first);
    const oldConnection = subscription.connectionId as string;

    // The subscription reads nothing while the server ends its stream and more is emitted:
    // it finds out on its next read, then reconnects with resume_from and its old connection id.
    assert.equal(await router().disconnect({ connectionId: oldConnection, reason: "maintenance" }), 1);
    const missed = freshId("missed");
    const own = freshId("own-echo");
    await router().emitUpdate(userId, update(missed));
    await router().emitUpdate(userId, update(own), { skipConnectionId: oldConnection });

    const reconnecting = await nextMatching(
      subscription,
      (e): e is Extract<SubscriptionEvent, { type: "reconnecting" }> => e.type === "reconnecting",
      "reconnecting",
    );
    assert.equal(reconnecting.codeName, "UNAVAILABLE");
    assert.match(reconnecting.details, /maintenance/);
    const reopened = await nextMatching(subscription, isOpened, "the new stream");
    assert.equal(reopened.opened.resume?.status, ResumeStatus.RESUMED);
    assert.notEqual(subscription.connectionId, oldConnection);
    const live = freshId("after");
    await router().emitUpdate(userId, update(live));
    assert.deepEqual(await updatesUntil(subscription, live), [missed]);
    assert.equal(subscription.reconnects, 1);
    subscription.close();
  });
});

describe("refetch on a stale position", { skip: SKIP }, () => {
  const refetch = async (token: string, offset: bigint, epoch?: string) => {
    const { id: userId } = user("refetch");
    const probe = router().subscribe(userScope(), { token });
    const opened = await nextMatching(probe, isOpened, "opened");
    probe.close();
    const position = create(StreamPositionSchema, {
      offset,
      epoch: epoch ?? opened.opened.position?.epoch ?? "",
    });
    const subscription = router().subscribe(userScope(), { token, resumeFrom: position });
    const event = await nextMatching(
      subscription,
      (e): e is Extract<SubscriptionEvent, { type: "refetch-required" }> => e.type === "refetch-required",
      "refetch-required",
    );
    // The stream goes on live after it.
    const live = freshId("live");
    await router().emitUpdate(userId, update(live));
    assert.equal((await nextMatching(subscription, isUpdate, "the live update")).payload.id, live);
    subscription.close();
    return event;
  };

  test("another epoch: epoch_changed", async () => {
    const event = await refetch(user("refetch").tokens.user, 1n, "not-this-epoch");
    assert.equal(event.reason, "epoch_changed");
  });

  test("a position never handed out: unknown_position", async () => {
    const event = await refetch(user("refetch").tokens.user, 1_000_000n);
    assert.equal(event.reason, "unknown_position");
  });

  test("older than the history kept: too_old", async () => {
    const { id: userId, tokens: t } = user("refetch");
    const kept = Number(process.env.ER_HISTORY_MAX_UPDATES ?? "0");
    assert.ok(kept > 0, "the server keeps a short history for this test");
    for (let i = 0; i <= kept + 1; i++) await router().emitUpdate(userId, update(freshId("fill")));
    const event = await refetch(t.user, 1n);
    assert.equal(event.reason, "too_old");
  });
});

describe("the batching emitter", { skip: SKIP }, () => {
  test("concurrent emits leave as one EmitBatch; each caller gets its own result", async () => {
    const { id: userId, tokens: t } = user("batch");
    const calls: string[] = [];
    const counting: Interceptor = (next) => (request) => {
      calls.push(request.method.name);
      return next(request);
    };
    const emitter = client({ interceptors: [counting] });
    const subscription = router().subscribe(userScope(), { token: t.user });
    await subscription.open();
    const ids = Array.from({ length: 20 }, (_, i) => freshId(`b${i}`));
    const results = await Promise.all(ids.map((id) => emitter.emitUpdate(userId, update(id))));
    assert.deepEqual(calls, ["EmitBatch"]);
    assert.ok(results.every((r) => r.reached === 1 && !r.duplicate));
    const offsets = results.map((r) => Number(r.position?.offset));
    assert.deepEqual(
      offsets,
      offsets.map((_, i) => (offsets[0] as number) + i),
      "positions follow the call order",
    );

    // One item the router refuses: only its caller fails, naming the field.
    // (A raw event whose `t` is not its kind: the client does not parse JSON texts, the router does.)
    const good = [freshId("g1"), freshId("g2")];
    const refused = create(UpdatePayloadSchema, {
      id: freshId("bad"),
      body: { event: { case: "raw", value: { kind: "new-kind", json: '{"t":"other-kind"}' } } },
    });
    const outcomes = await Promise.allSettled([
      emitter.emitUpdate(userId, update(good[0] as string)),
      emitter.emitUpdate(userId, refused),
      emitter.emitUpdate(userId, update(good[1] as string)),
    ]);
    assert.deepEqual(
      outcomes.map((o) => o.status),
      ["fulfilled", "rejected", "fulfilled"],
    );
    const error = (outcomes[1] as PromiseRejectedResult).reason;
    assert.ok(error instanceof InvalidArgumentError, String(error));
    assert.equal(error.field, "update.body.raw.json");
    const marker = freshId("marker");
    await emitter.emitUpdate(userId, update(marker));
    assert.deepEqual(await updatesUntil(subscription, marker), [...ids, ...good]);
    subscription.close();
    await emitter.close();
  });

  test("an emit repeated is answered as a duplicate and delivered once", async () => {
    const { id: userId, tokens: t } = user("duplicate");
    const subscription = router().subscribe(userScope(), { token: t.user });
    await subscription.open();
    const id = freshId("dup");
    const first = await router().emitUpdate(userId, update(id));
    const again = await router().emitUpdate(userId, update(id));
    assert.equal(first.duplicate, false);
    assert.equal(again.duplicate, true);
    assert.equal(again.position?.offset, first.position?.offset);
    const [batched] = await router().emitBatch([updateRequest(userId, update(id))]);
    assert.equal(batched?.duplicate, true);
    const marker = freshId("marker");
    await router().emitUpdate(userId, update(marker));
    assert.deepEqual(await updatesUntil(subscription, marker), [id]);
    subscription.close();
  });
});

describe("refused credentials are typed errors", { skip: SKIP }, () => {
  const firstEvent = (subscription: Subscription) => nextMatching(subscription, isOpened, "opened");

  test("a subscriber with a malformed, expired or badly signed token: UnauthenticatedError", async () => {
    for (const token of ["not-a-jwt", tokens.expired, tokens.badSignature]) {
      await assert.rejects(firstEvent(router().subscribe(userScope(), { token })), UnauthenticatedError);
    }
  });

  test("an emit without a token: UnauthenticatedError; with a subscriber's: PermissionDeniedError", async () => {
    const { id: userId, tokens: t } = user("auth");
    const anonymous = client({ credentials: { headers: () => ({}) } });
    await assert.rejects(anonymous.emitUpdate(userId, update(freshId("x"))), UnauthenticatedError);
    const subscriberToken = client({ token: t.user });
    await assert.rejects(subscriberToken.emitUpdate(userId, update(freshId("x"))), PermissionDeniedError);
    await Promise.all([anonymous.close(), subscriberToken.close()]);
  });

  test("a session's token opening another session: PermissionDeniedError", async () => {
    const { tokens: t } = user("auth");
    await assert.rejects(
      firstEvent(router().subscribe(sessionScope("S2"), { token: t.sessionS1 })),
      PermissionDeniedError,
    );
  });

  test("a revoked stream ends with PermissionDeniedError instead of reconnecting", async () => {
    const { id: userId, tokens: t } = user("auth");
    const subscription = router().subscribe(userScope(), { token: t.user });
    await subscription.open();
    await router().disconnect({ userId, reason: "account closed", revoke: true });
    await assert.rejects(nextMatching(subscription, isUpdate, "an update"), (e: unknown) => {
      assert.ok(e instanceof PermissionDeniedError);
      assert.match(e.details, /account closed/);
      return true;
    });
    assert.equal(subscription.closed, true);
  });
});
