/**
 * What Happy sends beyond the contract is kept and rendered back exactly, not refused:
 * the Python suite's tests/unit/test_happy_wire_forward_compat.py, case for case,
 * plus the rules of the JSON texts (jsontext) as the codec applies them.
 */

import assert from "node:assert/strict";
import { test } from "node:test";
import { create, type DescMessage, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  createHappyBuilders,
  type EphemeralPayload,
  EphemeralPayloadSchema,
  ephemeralFromHappyJson,
  fromHappyJson,
  type GitHubProfileRecord,
  HappyWireError,
  JsonMemberSchema,
  toHappyJson,
  type UpdatePayload,
  UpdatePayloadSchema,
  updateFromHappyJson,
} from "@eventrouter/client";

const NOW = 1_764_000_000_000;
const builders = createHappyBuilders({ now: () => NOW, publicUrl: (path) => path });

const schemaOf = (payload: UpdatePayload | EphemeralPayload): DescMessage =>
  payload.$typeName === UpdatePayloadSchema.typeName ? UpdatePayloadSchema : EphemeralPayloadSchema;

/** Decode `sent`; assert it renders back to the same text, before and after protobuf bytes. */
function roundTrip(sent: Record<string, unknown>): UpdatePayload | EphemeralPayload {
  const payload = fromHappyJson(sent);
  assert.equal(JSON.stringify(toHappyJson(payload)), JSON.stringify(sent));
  const schema = schemaOf(payload);
  const clone = fromBinary(schema, toBinary(schema, payload as never)) as UpdatePayload | EphemeralPayload;
  assert.equal(JSON.stringify(toHappyJson(clone)), JSON.stringify(sent));
  return payload;
}

const feedBody = () => ({
  t: "new-feed-post",
  id: "feed_1",
  body: { kind: "text", text: "hi" },
  cursor: "0-1",
  createdAt: 1,
});
const feedPost = (extra: Record<string, unknown> = {}) => ({
  id: "upd_1",
  seq: 7,
  body: { ...feedBody(), ...extra },
  createdAt: NOW,
});

const update = (payload: UpdatePayload | EphemeralPayload) => payload as UpdatePayload;

for (const repeatKey of [null, "friend_request:u2"]) {
  test(`new-feed-post with repeatKey ${repeatKey} keeps it`, () => {
    const payload = update(roundTrip(feedPost({ repeatKey })));
    const event = payload.body?.event;
    assert.ok(event?.case === "newFeedPost");
    assert.equal(event.value.cursor, "0-1"); // the modelled fields are still typed
    assert.deepEqual(
      event.value.jsonExtras?.members.map((m) => [m.key, JSON.parse(m.json)]),
      [["repeatKey", repeatKey]],
    );
    assert.deepEqual(event.value.jsonExtras?.keyOrder, []); // last: the default order reproduces it
  });
}

test("a key between known keys keeps its place", () => {
  const { t, ...rest } = feedBody();
  const sent = { ...feedPost(), body: { t, repeatKey: null, ...rest } };
  const event = update(roundTrip(sent)).body?.event;
  assert.ok(event?.case === "newFeedPost");
  assert.deepEqual(event.value.jsonExtras?.keyOrder, Object.keys(sent.body));
});

test("unknown keys of the container and of nested objects are kept", () => {
  const sent = {
    id: "upd_2",
    seq: 8,
    body: {
      t: "kv-batch-update",
      changes: [
        { key: "a", value: null, version: -1 },
        { key: "b", value: "dg==", version: 2, expiresAt: 5, meta: { z: [1.5] } },
      ],
    },
    createdAt: NOW,
    traceId: "tr_1",
  };
  const payload = update(roundTrip(sent));
  assert.deepEqual(
    payload.jsonExtras?.members.map((m) => m.key),
    ["traceId"],
  );
  const event = payload.body?.event;
  assert.ok(event?.case === "kvBatchUpdate");
  assert.equal(event.value.changes[0]?.jsonExtras, undefined);
  assert.deepEqual(
    event.value.changes[1]?.jsonExtras?.members.map((m) => m.json),
    ["5", '{"z":[1.5]}'],
  );
});

test("an update of an unknown kind is carried raw", () => {
  const body = { t: "delete-artifact-folder", folderId: "f_1", tags: ["é", 1.25, null] };
  const payload = update(roundTrip({ id: "upd_3", seq: 9, body, createdAt: NOW }));
  assert.equal(payload.seq, 9n);
  const event = payload.body?.event;
  assert.ok(event?.case === "raw");
  assert.equal(event.value.kind, "delete-artifact-folder");
  assert.equal(event.value.json, JSON.stringify(body));
});

test("an ephemeral of an unknown kind is carried raw; session-event is an ephemeral although it has a body", () => {
  const typing = roundTrip({ type: "typing", sessionId: "s1", body: "…", until: NOW }) as EphemeralPayload;
  assert.equal(typing.event.case, "raw");
  const sent = {
    type: "session-event",
    sessionId: "s1",
    kind: "question",
    title: "?",
    body: "happy",
    timestamp: NOW,
  };
  const event = (roundTrip(sent) as EphemeralPayload).event;
  assert.ok(event.case === "sessionEvent");
  assert.equal(event.value.kind, "question");
});

test("an object that is both is decoded by the socket event name", () => {
  const sent = { type: "digest", body: { t: "x" } };
  assert.throws(() => fromHappyJson(sent), /both an update/);
  const ephemeral = ephemeralFromHappyJson(sent);
  assert.equal(ephemeral.event.case, "raw");
  assert.equal(JSON.stringify(toHappyJson(ephemeral)), JSON.stringify(sent));
  const asUpdate = updateFromHappyJson({ ...feedPost(), type: "x" });
  assert.deepEqual(
    asUpdate.jsonExtras?.members.map((m) => m.key),
    ["type"],
  );
});

test("a modelled kind sent raw renders as sent and decodes typed", () => {
  const body = { t: "delete-machine", machineId: "m1" };
  const raw = create(UpdatePayloadSchema, {
    id: "u",
    seq: 1n,
    createdAtMs: BigInt(NOW),
    body: { event: { case: "raw", value: { kind: "delete-machine", json: JSON.stringify(body) } } },
  });
  const wire = toHappyJson(raw);
  assert.deepEqual(wire.body, body);
  const typed = update(fromHappyJson(wire));
  assert.equal(typed.body?.event.case, "deleteMachine");
});

// GitHub's `GET /user` answer, in GitHub's key order: Happy stores and sends it whole.
const GITHUB_USER = {
  login: "ada",
  id: 1,
  node_id: "MDQ6VXNlcjE=",
  avatar_url: "https://avatars.example.invalid/u/1?v=4",
  gravatar_id: "",
  url: "https://api.github.com/users/ada",
  html_url: "https://github.com/ada",
  type: "User",
  user_view_type: "public",
  site_admin: false,
  name: "Ada",
  company: null,
  blog: "",
  location: null,
  email: null,
  hireable: null,
  bio: null,
  twitter_username: null,
  notification_email: null,
  public_repos: 12,
  public_gists: 0,
  followers: 3,
  following: 1,
  created_at: "2011-01-25T18:44:36Z",
  updated_at: "2026-01-01T00:00:00Z",
  private_gists: 0,
  total_private_repos: 2,
  owned_private_repos: 2,
  disk_usage: 1024,
  collaborators: 0,
  two_factor_authentication: true,
  plan: { name: "free", space: 976562499, collaborators: 0, private_repos: 10000, filled_seats: 1 },
} satisfies GitHubProfileRecord;

test("a GitHub profile keeps GitHub's keys and order from the wire", () => {
  const sent = {
    id: "u",
    seq: 1,
    body: { t: "update-account", id: "u1", github: GITHUB_USER },
    createdAt: NOW,
  };
  const event = update(roundTrip(sent)).body?.event;
  assert.ok(event?.case === "updateAccount");
  const profile = event.value.github?.profile;
  assert.equal(profile?.login, "ada");
  assert.deepEqual(
    profile?.jsonExtras?.members.map((m) => m.key),
    ["node_id", "url", "html_url", "user_view_type", "notification_email"],
  );
  assert.deepEqual(
    profile?.plan?.jsonExtras?.members.map((m) => m.key),
    ["filled_seats"],
  );
});

test("the account builder spreads the profile as Happy does: GitHub whole, keys in the given order", () => {
  const payload = builders.buildUpdateAccountUpdate("u1", { github: GITHUB_USER }, 3, "upd_4");
  const body = toHappyJson(payload).body as Record<string, unknown>;
  assert.equal(JSON.stringify(body.github), JSON.stringify(GITHUB_USER));
  // A profile whose keys come in another order than the contract's, plus one it does not model.
  const profile = { username: "ada", firstName: "Ada", pronouns: "she/her" } as Record<string, unknown>;
  const wire = toHappyJson(builders.buildUpdateAccountUpdate("u1", profile, 4, "upd_5"));
  assert.equal(
    JSON.stringify(wire.body),
    JSON.stringify({ t: "update-account", id: "u1", username: "ada", firstName: "Ada", pronouns: "she/her" }),
  );
});

test("keys whose value is undefined are absent, as JSON.stringify makes them", () => {
  const payload = builders.buildUpdateSessionUpdate("s1", 1, "upd_6", undefined, { value: null, version: 2 });
  assert.equal(
    JSON.stringify(toHappyJson(payload).body),
    JSON.stringify({ t: "update-session", id: "s1", agentState: { value: null, version: 2 } }),
  );
});

test("JSON texts that break the rules are refused, naming their field", () => {
  const rawUpdate = (kind: string, json: string) =>
    create(UpdatePayloadSchema, { id: "u", body: { event: { case: "raw", value: { kind, json } } } });
  const cases: [UpdatePayload, string, RegExp][] = [
    [rawUpdate("x", '{"t":"y"}'), "body.raw.json", /must be the kind/],
    [rawUpdate("x", '{"t":"x","a":1,"a":2}'), "body.raw.json", /repeated/],
    [rawUpdate("x", "[1]"), "body.raw.json", /must be a JSON object/],
    [rawUpdate("x", `{"t":"x","d":${"[".repeat(40)}${"]".repeat(40)}}`), "body.raw.json", /deeper than 32/],
    [rawUpdate("no spaces", '{"t":"no spaces"}'), "body.raw.kind", /1 to 64 characters/],
    [rawUpdate("x", '{"t":"x",}'), "body.raw.json", /not valid JSON/],
  ];
  for (const [payload, field, reason] of cases) {
    assert.throws(
      () => toHappyJson(payload),
      (e: unknown) => e instanceof HappyWireError && e.field === field && reason.test(e.reason),
      field,
    );
  }
  const extras = updateFromHappyJson(feedPost({ repeatKey: null }));
  const event = extras.body?.event;
  assert.ok(event?.case === "newFeedPost" && event.value.jsonExtras);
  event.value.jsonExtras.members.push(create(JsonMemberSchema, { key: "cursor", json: '"c"' }));
  assert.throws(() => toHappyJson(extras), /json_extras\.members\[1\]\.key: "cursor" is a modelled key/);
  assert.throws(() => fromHappyJson(feedPost({ extra: Number.NaN })), /NaN/);
  assert.throws(() => fromHappyJson({ ...feedPost(), seq: 1.5 }), /seq: expected an integer/);
  assert.throws(
    () => fromHappyJson({ id: "u", seq: 1, body: { t: "new-artifact" }, createdAt: 1 }),
    /body\.artifactId: required key is missing/,
  );
});
