/**
 * Happy's wire JSON <-> the protobuf contract, both ways, exactly.
 *
 * `toHappyJson` returns the object Happy's builders put on the wire, keys in
 * Happy's order, so `JSON.stringify` of it is the text Happy's apps receive
 * (see `values.ts` for the one place this cannot hold: key order inside a
 * `google.protobuf.Value` object). `fromHappyJson` is its inverse: it decodes
 * fully or throws `HappyWireError`; it never returns a half-filled payload.
 *
 * What the contract does not model is kept, not refused: an event of a kind it
 * does not know becomes a `RawHappyEvent` (its JSON as text), keys it does not
 * know the `jsonExtras` of their object (`fields.ts`); both render back to the
 * JSON they came from.
 *
 * Each kind is described once, as a table of (wire key, proto field, codec),
 * the same tables as the Python client's `_happy_json.py`.
 */

import { create, type DescMessage } from "@bufbuild/protobuf";
import {
  AvatarImageSchema,
  type EphemeralPayload,
  EphemeralPayloadSchema,
  GitHubPlanSchema,
  GitHubProfileSchema,
  KvChangeSchema,
  NullableGitHubProfileSchema,
  NullableStringSchema,
  NullableVersionedValueSchema,
  SessionMessageSchema,
  UpdateEventSchema,
  type UpdatePayload,
  UpdatePayloadSchema,
  VersionedStringSchema,
  VersionedValueSchema,
} from "../gen/eventrouter/v1/events_pb.js";
import { RawHappyEventSchema } from "../gen/eventrouter/v1/happy_json_pb.js";
import {
  ABSENT,
  BOOL,
  BYTES,
  type Codec,
  decodeFields,
  encodeFields,
  expectObject,
  f,
  INT,
  JSON_VALUE,
  type JsonObj,
  type Msg,
  missing,
  NULL_BOOL,
  NULL_BYTES,
  NULL_STR,
  Nullable,
  ObjectField,
  ObjectList,
  OPT_BOOL,
  OPT_INT,
  SERVICE_NAMES,
  type Spec,
  STATUS,
  STR,
  same,
  USAGE_NUMBERS,
} from "./fields.js";
import * as jsontext from "./jsontext.js";
import { expectStr, HappyWireError, join, wireErrors } from "./values.js";

const VERSIONED_VALUE: Spec = [f("value", NULL_STR), f("version", INT)];
const VERSIONED_STRING: Spec = [f("value", STR), f("version", INT)];
const NULLABLE_VERSIONED = new Nullable(
  NullableVersionedValueSchema,
  "value",
  new ObjectField(VersionedValueSchema, VERSIONED_VALUE),
);
const OPT_VERSIONED_STRING = new ObjectField(VersionedStringSchema, VERSIONED_STRING, true);
const TIMES: Spec = [f("createdAt", INT, "createdAtMs"), f("updatedAt", INT, "updatedAtMs")];

const SESSION_MESSAGE: Spec = [
  f("id", STR),
  f("seq", INT),
  f("content", JSON_VALUE),
  f("localId", NULL_STR),
  ...TIMES,
];

const AVATAR: Spec = [...same(INT, "width", "height"), ...same(STR, "thumbhash", "path", "url")];
const GITHUB_PLAN: Spec = [f("collaborators", INT), f("name", STR), ...same(INT, "space", "private_repos")];
// GitHub's REST names are snake_case on the wire; the proto field is their lowerCamelCase.
const GITHUB: Spec = [
  f("id", INT),
  ...same(STR, "login", "type"),
  f("site_admin", BOOL),
  f("avatar_url", STR),
  ...same(NULL_STR, "gravatar_id", "name", "company", "blog", "location", "email"),
  f("hireable", NULL_BOOL),
  ...same(NULL_STR, "bio", "twitter_username"),
  ...same(INT, "public_repos", "public_gists", "followers", "following"),
  ...same(STR, "created_at", "updated_at"),
  ...same(OPT_INT, "private_gists", "total_private_repos", "owned_private_repos"),
  ...same(OPT_INT, "disk_usage", "collaborators"),
  f("two_factor_authentication", OPT_BOOL),
  f("plan", new ObjectField(GitHubPlanSchema, GITHUB_PLAN, true)),
];

/** new-session and new-machine share their shape but for the names of id and state. */
const newRow = (idKey: string, idField: string, state: string): Spec => [
  f(idKey, STR, idField),
  f("seq", INT),
  f("metadata", STR),
  f("metadataVersion", INT),
  f(state, NULL_STR),
  f(`${state}Version`, INT),
  f("dataEncryptionKey", NULL_BYTES),
  f("active", BOOL),
  f("activeAt", INT, "activeAtMs"),
  ...TIMES,
];

// UpdateEvent oneof case -> its fields after `t`, in wire order. Happy's `t` is
// the proto field name with dashes (new_message -> "new-message"), by design of the proto.
const UPDATE_KINDS: Readonly<Record<string, Spec>> = {
  newMessage: [
    f("sid", STR, "sessionId"),
    f("message", new ObjectField(SessionMessageSchema, SESSION_MESSAGE)),
  ],
  newSession: newRow("id", "sessionId", "agentState"),
  updateSession: [
    f("id", STR, "sessionId"),
    f("metadata", NULLABLE_VERSIONED),
    f("agentState", NULLABLE_VERSIONED),
  ],
  updateAccount: [
    f("id", STR, "userId"),
    f("firstName", new Nullable(NullableStringSchema, "value", STR)),
    f("lastName", new Nullable(NullableStringSchema, "value", STR)),
    f("username", new Nullable(NullableStringSchema, "value", STR)),
    f("avatar", new ObjectField(AvatarImageSchema, AVATAR, true)),
    f("settings", NULLABLE_VERSIONED),
    f(
      "github",
      new Nullable(NullableGitHubProfileSchema, "profile", new ObjectField(GitHubProfileSchema, GITHUB)),
    ),
    f("connectedServices", SERVICE_NAMES),
  ],
  newMachine: newRow("machineId", "machineId", "daemonState"),
  updateMachine: [
    f("machineId", STR),
    f("metadata", OPT_VERSIONED_STRING),
    f("daemonState", OPT_VERSIONED_STRING),
    f("activeAt", OPT_INT, "activeAtMs"),
  ],
  newArtifact: [
    f("artifactId", STR),
    f("seq", INT),
    f("header", BYTES),
    f("headerVersion", INT),
    f("body", BYTES),
    f("bodyVersion", INT),
    f("dataEncryptionKey", BYTES),
    ...TIMES,
  ],
  updateArtifact: [f("artifactId", STR), f("header", OPT_VERSIONED_STRING), f("body", OPT_VERSIONED_STRING)],
  deleteArtifact: [f("artifactId", STR)],
  deleteSession: [f("sid", STR, "sessionId")],
  relationshipUpdated: [f("uid", STR), f("status", STATUS), f("timestamp", INT, "timestampMs")],
  newFeedPost: [f("id", STR), f("body", JSON_VALUE), f("cursor", STR), f("createdAt", INT, "createdAtMs")],
  kvBatchUpdate: [
    f("changes", new ObjectList(KvChangeSchema, [f("key", STR), f("value", NULL_STR), f("version", INT)])),
  ],
  deleteMachine: [f("machineId", STR)],
};

// EphemeralPayload oneof case -> its fields after `type` (same naming rule).
const EPHEMERAL_KINDS: Readonly<Record<string, Spec>> = {
  activity: [
    f("id", STR, "sessionId"),
    f("active", BOOL),
    f("activeAt", INT, "activeAtMs"),
    f("thinking", OPT_BOOL),
  ],
  machineActivity: [f("id", STR, "machineId"), f("active", BOOL), f("activeAt", INT, "activeAtMs")],
  usage: [
    f("id", STR, "sessionId"),
    f("key", STR),
    f("tokens", USAGE_NUMBERS),
    f("cost", USAGE_NUMBERS),
    f("timestamp", INT, "timestampMs"),
  ],
  machineStatus: [f("machineId", STR), f("online", BOOL), f("timestamp", INT, "timestampMs")],
  sessionEvent: [
    f("sessionId", STR),
    ...same(STR, "kind", "title", "body"),
    f("timestamp", INT, "timestampMs"),
  ],
};

interface Kind {
  readonly tag: string;
  readonly field: string;
  readonly schema: DescMessage;
  readonly spec: Spec;
}

type OneofValue = { case: string | undefined; value?: unknown };

/**
 * The oneof `event` of `schema`, whose kind is named on the wire by `tagKey`
 * (`t` or `type`). A kind outside `kinds` travels as the oneof's `raw` case:
 * the object's JSON text, rendered back as it is.
 */
class Union implements Codec {
  readonly byField = new Map<string, Kind>();
  readonly byTag = new Map<string, Kind>();

  constructor(
    readonly schema: DescMessage,
    readonly tagKey: string,
    kinds: Readonly<Record<string, Spec>>,
    readonly what: string,
  ) {
    for (const field of schema.oneofs[0]?.fields ?? []) {
      const spec = kinds[field.localName];
      if (spec === undefined || field.message === undefined) continue; // `raw`
      const kind = {
        tag: field.name.replaceAll("_", "-"),
        field: field.localName,
        schema: field.message,
        spec,
      };
      this.byField.set(kind.field, kind);
      this.byTag.set(kind.tag, kind);
    }
  }

  encodeInto(union: Msg, path: string): JsonObj {
    const event = union.event as OneofValue;
    if (event.case === undefined) {
      throw new HappyWireError(join(path, this.tagKey), `no ${this.what} kind is set`);
    }
    if (event.case === "raw") {
      const raw = event.value as { kind: string; json: string };
      const rawPath = join(path, "raw");
      return wireErrors(() =>
        jsontext.rawEvent(raw.kind, raw.json, this.tagKey, join(rawPath, "kind"), join(rawPath, "json")),
      );
    }
    const kind = this.byField.get(event.case);
    if (kind === undefined)
      throw new HappyWireError(join(path, this.tagKey), `unknown ${this.what} kind ${event.case}`);
    return encodeFields(event.value as Msg, kind.spec, path, [[this.tagKey, kind.tag]]);
  }

  decodeInto(data: unknown, union: Msg, path: string): void {
    const obj = expectObject(data, path);
    const tagPath = join(path, this.tagKey);
    if (obj[this.tagKey] === undefined) throw missing(tagPath);
    const tag = expectStr(obj[this.tagKey], tagPath);
    const kind = this.byTag.get(tag);
    if (kind === undefined) {
      // A kind Happy added after this contract: carried whole, as its JSON text.
      const json = wireErrors(() => {
        jsontext.checkKind(tag, tagPath);
        return jsontext.dumps(obj, path);
      });
      union.event = { case: "raw", value: create(RawHappyEventSchema, { kind: tag, json }) };
      return;
    }
    const sub = create(kind.schema) as unknown as Msg;
    decodeFields(obj, sub, kind.spec, path, [this.tagKey]);
    union.event = { case: kind.field, value: sub };
  }

  // As a field codec: the update container's `body`.
  encode(msg: Msg, name: string, path: string): unknown {
    const union = msg[name] as Msg | undefined;
    if (union === undefined) throw new HappyWireError(join(path, this.tagKey), `no ${this.what} kind is set`);
    return this.encodeInto(union, path);
  }

  decode(data: unknown, msg: Msg, name: string, path: string): void {
    if (data === ABSENT) throw missing(path);
    const union = create(this.schema) as unknown as Msg;
    this.decodeInto(data, union, path);
    msg[name] = union;
  }
}

const UPDATE_BODY = new Union(UpdateEventSchema, "t", UPDATE_KINDS, "update");
const EPHEMERAL = new Union(EphemeralPayloadSchema, "type", EPHEMERAL_KINDS, "ephemeral");
const UPDATE_CONTAINER: Spec = [
  f("id", STR),
  f("seq", INT),
  f("body", UPDATE_BODY),
  f("createdAt", INT, "createdAtMs"),
];

/** Happy's JSON: what JSON.parse returns, or what Happy's builders return (undefined = absent). */
export type HappyJson = Record<string, unknown>;

/**
 * `payload` as the JSON object Happy emits (`update` or `ephemeral` event).
 *
 * Throws `HappyWireError` for a payload the wire cannot carry: no kind set, an
 * unspecified relationship status, a required message or JSON value left
 * unset, a non-finite number, a repeated usage key, or JSON text (`raw`,
 * `jsonExtras`) that breaks the rules of `jsontext` or repeats a modelled key.
 */
export function toHappyJson(payload: UpdatePayload | EphemeralPayload): HappyJson {
  const msg = payload as unknown as Msg;
  if (payload.$typeName === UpdatePayloadSchema.typeName) return encodeFields(msg, UPDATE_CONTAINER, "");
  if (payload.$typeName === EphemeralPayloadSchema.typeName) return EPHEMERAL.encodeInto(msg, "");
  throw new TypeError(
    `expected an UpdatePayload or an EphemeralPayload, got ${String((payload as Msg).$typeName)}`,
  );
}

/** Decode Happy's `update` JSON; throws `HappyWireError` naming the field on any deviation. */
export function updateFromHappyJson(data: HappyJson): UpdatePayload {
  const payload = create(UpdatePayloadSchema);
  decodeFields(data, payload as unknown as Msg, UPDATE_CONTAINER, "");
  return payload;
}

/** Decode Happy's `ephemeral` JSON; throws `HappyWireError` naming the field on any deviation. */
export function ephemeralFromHappyJson(data: HappyJson): EphemeralPayload {
  const payload = create(EphemeralPayloadSchema);
  EPHEMERAL.decodeInto(data, payload as unknown as Msg, "");
  return payload;
}

/**
 * Decode either kind, told apart by Happy's discriminators, as Happy's app does.
 *
 * An update is a container whose `body` object has `t`; an ephemeral has
 * `type`. An object with both is ambiguous: decode it with
 * `updateFromHappyJson` or `ephemeralFromHappyJson` (Happy's Socket.IO event
 * name tells which).
 */
export function fromHappyJson(data: HappyJson): UpdatePayload | EphemeralPayload {
  const obj = expectObject(data, "");
  const body = obj.body;
  const isUpdate = typeof body === "object" && body !== null && (body as Msg).t !== undefined;
  const isEphemeral = obj.type !== undefined;
  if (isUpdate && isEphemeral) {
    throw new HappyWireError(
      "",
      "both an update (`body.t`) and an ephemeral event (`type`); decode it with " +
        "updateFromHappyJson or ephemeralFromHappyJson",
    );
  }
  if (isEphemeral) return ephemeralFromHappyJson(obj);
  // A container whose body is broken: the update decoder names what is wrong.
  if (isUpdate || obj.body !== undefined) return updateFromHappyJson(obj);
  throw new HappyWireError("type", "neither an update (`body.t`) nor an ephemeral event (`type`)");
}
