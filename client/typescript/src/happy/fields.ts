/**
 * The field codecs of the Happy JSON codec: one table row moves one proto field.
 *
 * A JSON object on Happy's wire is described once, as a table (`Spec`) of
 * (wire key, proto field, codec); `encodeFields` and `decodeFields` walk a
 * table in both directions, so the two directions cannot drift apart. The
 * twin of the Python client's `_wire_fields.py`, table for table.
 *
 * Keys a table does not model are kept in the message's `jsonExtras`
 * (`JsonExtras` in happy_json.proto): `decodeFields` stores each unknown key
 * with its value as JSON text, and the wire's key order when it is not the
 * table's; `encodeFields` puts them back.
 *
 * Wire input follows JSON.stringify: a key whose value is `undefined` is a key
 * that is not there (so the object a Happy builder returns decodes as the JSON
 * its apps receive).
 */

import { create, type DescMessage } from "@bufbuild/protobuf";
import {
  ConnectedServicesSchema,
  RelationshipStatus,
  UsageEntrySchema,
} from "../gen/eventrouter/v1/events_pb.js";
import { type JsonExtras, JsonExtrasSchema, JsonMemberSchema } from "../gen/eventrouter/v1/happy_json_pb.js";
import * as jsontext from "./jsontext.js";
import {
  b64Decode,
  b64Encode,
  expectBool,
  expectInt64,
  expectNumber,
  expectStr,
  HappyWireError,
  int64ToJson,
  join,
  jsonToValue,
  objectOf,
  setKey,
  typeName,
  valueToJson,
  wireErrors,
  wireOrder,
} from "./values.js";

/** "Leave this key out" (encode) / "the key is not there" (decode); distinct from null. */
export const ABSENT: unique symbol = Symbol("absent");
export type Absent = typeof ABSENT;

/** A protobuf-es message seen as what it is at run time: a plain object of fields. */
export type Msg = Record<string, unknown>;
export type JsonObj = Record<string, unknown>;

/** Moves one proto field of `msg` to its wire value and back. */
export interface Codec {
  /** The JSON value, or ABSENT to leave the key out. */
  encode(msg: Msg, name: string, path: string): unknown;
  /** `data` is the wire value, or ABSENT when the key is missing. */
  decode(data: unknown, msg: Msg, name: string, path: string): void;
}

export interface Field {
  readonly wire: string;
  /** The protobuf-es property (the field's localName: lowerCamelCase). */
  readonly proto: string;
  readonly codec: Codec;
}

export type Spec = readonly Field[];

const camel = (key: string): string => key.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());

/** A field whose protobuf-es name is `proto` (default: the wire key in lowerCamelCase). */
export const f = (wire: string, codec: Codec, proto?: string): Field => ({
  wire,
  proto: proto ?? camel(wire),
  codec,
});

/** Several consecutive fields of one codec whose wire key names the proto field. */
export const same = (codec: Codec, ...keys: string[]): Field[] => keys.map((key) => f(key, codec));

export const missing = (path: string): HappyWireError => new HappyWireError(path, "required key is missing");

export function expectObject(data: unknown, path: string): JsonObj {
  if (typeof data !== "object" || data === null || Array.isArray(data) || data instanceof Uint8Array) {
    throw new HappyWireError(path, `expected an object, got ${typeName(data)}`);
  }
  return data as JsonObj;
}

/** The keys JSON.stringify would write: own enumerable keys whose value is not undefined. */
export const wireKeys = (obj: JsonObj): string[] => Object.keys(obj).filter((key) => obj[key] !== undefined);

const wireValue = (obj: JsonObj, key: string): unknown =>
  Object.hasOwn(obj, key) && obj[key] !== undefined ? obj[key] : ABSENT;

/** `msg` as its JSON object: `head` (a discriminator), the table's keys, the extras. */
export function encodeFields(msg: Msg, spec: Spec, path: string, head: [string, string][] = []): JsonObj {
  const out = objectOf(head);
  for (const field of spec) {
    const value = field.codec.encode(msg, field.proto, join(path, field.wire));
    if (value !== ABSENT) setKey(out, field.wire, value);
  }
  const extras = msg.jsonExtras as JsonExtras | undefined;
  return extras === undefined ? out : withExtras(out, extras, join(path, "json_extras"));
}

function withExtras(out: JsonObj, extras: JsonExtras, path: string): JsonObj {
  const membersPath = join(path, "members");
  const values = wireErrors(() => jsontext.members(extras.members, membersPath));
  values.forEach(([key, value], i) => {
    if (Object.hasOwn(out, key)) {
      throw new HappyWireError(`${membersPath}[${i}].key`, `${JSON.stringify(key)} is a modelled key`);
    }
    setKey(out, key, value);
  });
  if (extras.keyOrder.length === 0) return out;
  // The named keys first, in keyOrder's order; the others after them, as they were.
  const ordered: JsonObj = {};
  for (const key of [...extras.keyOrder, ...Object.keys(out)]) {
    if (Object.hasOwn(out, key) && !Object.hasOwn(ordered, key)) setKey(ordered, key, out[key]);
  }
  return ordered;
}

/** Fill `msg` from its JSON object; the caller decodes the `head` keys (a discriminator). */
export function decodeFields(
  data: unknown,
  msg: Msg,
  spec: Spec,
  path: string,
  head: readonly string[] = [],
): void {
  const obj = expectObject(data, path);
  const keys = wireKeys(obj);
  const known = new Set(spec.map((field) => field.wire));
  const unknown = keys.filter((key) => !known.has(key) && !head.includes(key));
  for (const field of spec) {
    field.codec.decode(wireValue(obj, field.wire), msg, field.proto, join(path, field.wire));
  }
  const order = wireOrder(
    keys,
    spec.map((field) => field.wire),
    head,
  );
  if (unknown.length === 0 && order === undefined) return;
  const extras = create(JsonExtrasSchema, { keyOrder: order ?? [] });
  for (const key of unknown) {
    const keyPath = join(path, key);
    extras.members.push(
      create(JsonMemberSchema, {
        key: expectStr(key, keyPath),
        json: wireErrors(() => jsontext.dumps(obj[key], keyPath)),
      }),
    );
  }
  // Every message a table describes has jsonExtras (a test checks it).
  msg.jsonExtras = extras;
}

type Presence = "required" | "null" | "omit";

/** A scalar field: `check` validates a wire value, `toJson` renders the proto value. */
class Scalar implements Codec {
  constructor(
    readonly check: (value: unknown, path: string) => unknown,
    readonly toJson: (value: never, path: string) => unknown = (value) => value,
    readonly presence: Presence = "required",
  ) {}

  with(presence: Presence): Scalar {
    return new Scalar(this.check, this.toJson, presence);
  }

  encode(msg: Msg, name: string, path: string): unknown {
    const value = msg[name];
    if (this.presence !== "required" && value === undefined) {
      return this.presence === "null" ? null : ABSENT;
    }
    return this.toJson(value as never, path);
  }

  decode(data: unknown, msg: Msg, name: string, path: string): void {
    if (data === ABSENT) {
      if (this.presence === "omit") return;
      throw missing(path);
    }
    if (data === null && this.presence === "null") return; // a fresh message: already unset
    msg[name] = this.check(data, path);
  }
}

const STATUS_BY_WIRE: Readonly<Record<string, RelationshipStatus>> = {
  none: RelationshipStatus.NONE,
  requested: RelationshipStatus.REQUESTED,
  pending: RelationshipStatus.PENDING,
  friend: RelationshipStatus.FRIEND,
  rejected: RelationshipStatus.REJECTED,
};
const WIRE_BY_STATUS = new Map(Object.entries(STATUS_BY_WIRE).map(([wire, code]) => [code, wire]));

function statusFromWire(value: unknown, path: string): RelationshipStatus {
  const name = expectStr(value, path);
  const status = Object.hasOwn(STATUS_BY_WIRE, name) ? STATUS_BY_WIRE[name] : undefined;
  if (status === undefined)
    throw new HappyWireError(path, `unknown relationship status ${JSON.stringify(name)}`);
  return status;
}

function statusToWire(code: RelationshipStatus, path: string): string {
  const wire = WIRE_BY_STATUS.get(code);
  if (wire === undefined) throw new HappyWireError(path, `relationship status ${code} has no wire name`);
  return wire;
}

export const STR = new Scalar(expectStr);
export const INT = new Scalar(expectInt64, int64ToJson);
export const BOOL = new Scalar(expectBool);
export const BYTES = new Scalar(b64Decode, b64Encode);
export const STATUS = new Scalar(statusFromWire, statusToWire);
export const NULL_STR = STR.with("null");
export const NULL_BOOL = BOOL.with("null");
export const NULL_BYTES = BYTES.with("null");
export const OPT_INT = INT.with("omit");
export const OPT_BOOL = BOOL.with("omit");

/** A sub-message rendered as a JSON object; `omit`: unset is the absent key (else required). */
export class ObjectField implements Codec {
  constructor(
    readonly schema: DescMessage,
    readonly spec: Spec,
    readonly omit = false,
  ) {}

  encode(msg: Msg, name: string, path: string): unknown {
    const sub = msg[name] as Msg | undefined;
    if (sub === undefined) {
      if (this.omit) return ABSENT;
      throw new HappyWireError(path, "required message is not set");
    }
    return encodeFields(sub, this.spec, path);
  }

  decode(data: unknown, msg: Msg, name: string, path: string): void {
    if (data === ABSENT) {
      if (this.omit) return;
      throw missing(path);
    }
    const sub = create(this.schema) as unknown as Msg;
    decodeFields(data, sub, this.spec, path);
    msg[name] = sub;
  }
}

/** A `Nullable*` wrapper: unset = absent, empty = null, else `inner` of its field `innerName`. */
export class Nullable implements Codec {
  constructor(
    readonly schema: DescMessage,
    readonly innerName: string,
    readonly inner: Codec,
  ) {}

  encode(msg: Msg, name: string, path: string): unknown {
    const wrapper = msg[name] as Msg | undefined;
    if (wrapper === undefined) return ABSENT;
    if (wrapper[this.innerName] === undefined) return null;
    return this.inner.encode(wrapper, this.innerName, path);
  }

  decode(data: unknown, msg: Msg, name: string, path: string): void {
    if (data === ABSENT) return;
    const wrapper = create(this.schema) as unknown as Msg;
    if (data !== null) this.inner.decode(data, wrapper, this.innerName, path);
    msg[name] = wrapper;
  }
}

/** A required `google.protobuf.Value` (arbitrary JSON, null included). */
export const JSON_VALUE: Codec = {
  encode(msg, name, path) {
    const value = msg[name];
    if (value === undefined) throw new HappyWireError(path, "required JSON value is not set");
    return valueToJson(value as never, path);
  },
  decode(data, msg, name, path) {
    if (data === ABSENT) throw missing(path);
    msg[name] = jsonToValue(data, path);
  },
};

function expectArray(data: unknown, path: string): unknown[] {
  if (data === ABSENT) throw missing(path);
  if (!Array.isArray(data)) throw new HappyWireError(path, "expected an array");
  return data;
}

/** A repeated message field rendered as a JSON array of objects. */
export class ObjectList implements Codec {
  constructor(
    readonly schema: DescMessage,
    readonly spec: Spec,
  ) {}

  encode(msg: Msg, name: string, path: string): unknown {
    return (msg[name] as Msg[]).map((item, i) => encodeFields(item, this.spec, `${path}[${i}]`));
  }

  decode(data: unknown, msg: Msg, name: string, path: string): void {
    msg[name] = expectArray(data, path).map((item, i) => {
      const sub = create(this.schema) as unknown as Msg;
      decodeFields(item, sub, this.spec, `${path}[${i}]`);
      return sub;
    });
  }
}

/** `ConnectedServices`: unset = absent, else a JSON array of strings. */
export const SERVICE_NAMES: Codec = {
  encode(msg, name) {
    const wrapper = msg[name] as { services: string[] } | undefined;
    return wrapper === undefined ? ABSENT : [...wrapper.services];
  },
  decode(data, msg, name, path) {
    if (data === ABSENT) return;
    const services = expectArray(data, path).map((item, i) => expectStr(item, `${path}[${i}]`));
    msg[name] = create(ConnectedServicesSchema, { services });
  },
};

/** `repeated UsageEntry` <-> a JSON object of numbers, in the entries' order. */
export const USAGE_NUMBERS: Codec = {
  encode(msg, name, path) {
    const out: JsonObj = {};
    for (const entry of msg[name] as { key: string; value: number }[]) {
      const entryPath = join(path, entry.key);
      if (Object.hasOwn(out, entry.key)) throw new HappyWireError(entryPath, "duplicate usage key");
      setKey(out, entry.key, expectNumber(entry.value, entryPath));
    }
    return out;
  },
  decode(data, msg, name, path) {
    if (data === ABSENT) throw missing(path);
    const obj = expectObject(data, path);
    msg[name] = wireKeys(obj).map((key) =>
      create(UsageEntrySchema, { key, value: expectNumber(obj[key], join(path, key)) }),
    );
  },
};
