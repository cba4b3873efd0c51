/**
 * JSON values as Happy's JavaScript sees them, and their checked conversion.
 *
 * Shared by the codec's field table (`fields.ts`) and the builders: the error
 * type, the scalar checks, base64, and `google.protobuf.Value` <-> JSON.
 *
 * Key order of objects inside a `google.protobuf.Value`: a `Struct` is a
 * protobuf map, whose order the wire does not keep (the Python server and
 * client iterate it in hash order). Every client renders the same canonical
 * order instead: Happy's discriminator `"t"` first (content objects are tagged
 * unions such as `{"t": "encrypted", "c": ...}`), then the other keys sorted by
 * code point, exactly as the Python codec does.
 */

import { create, type JsonObject, type JsonValue } from "@bufbuild/protobuf";
import { base64Decode, base64Encode } from "@bufbuild/protobuf/wire";
import { ListValueSchema, NullValue, StructSchema, type Value, ValueSchema } from "@bufbuild/protobuf/wkt";
import { JsonTextError } from "./jsontext.js";

/**
 * A value cannot be turned into Happy's wire JSON or the protobuf contract.
 *
 * `field` is the dotted path of the offending value, list indexes in brackets:
 * `body.github.login`, `body.changes[1].value`, `tokens.input`; `""` is the
 * payload itself.
 */
export class HappyWireError extends Error {
  override readonly name = "HappyWireError";
  constructor(
    readonly field: string,
    readonly reason: string,
  ) {
    super(`${field || "<payload>"}: ${reason}`);
  }
}

/** Run `fn`, reporting a broken JSON text (jsontext) as a HappyWireError of the same field. */
export function wireErrors<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof JsonTextError) throw new HappyWireError(e.field, e.reason);
    throw e;
  }
}

/** Extend a dotted error path by one key. */
export const join = (path: string, key: string): string => (path ? `${path}.${key}` : key);

/** Set a key on an object under construction, `__proto__` included (a plain assignment would not). */
export function setKey(obj: Record<string, unknown>, key: string, value: unknown): void {
  if (key === "__proto__") {
    Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
  } else {
    obj[key] = value;
  }
}

/** An object built from (key, value) pairs in order. */
export function objectOf(entries: Iterable<readonly [string, unknown]>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of entries) setKey(out, key, value);
  return out;
}

/** JSON's name of a value's type: the reader of an error thinks in JSON. */
export function typeName(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "array";
  if (value instanceof Uint8Array) return "bytes";
  return typeof value;
}

const LONE_SURROGATE = /\p{Cs}/u;

/** `value` if it is a string protobuf can store (no lone surrogate: not valid UTF-8). */
export function expectStr(value: unknown, field: string): string {
  if (typeof value !== "string") {
    throw new HappyWireError(field, `expected a string, got ${typeName(value)}`);
  }
  if (LONE_SURROGATE.test(value)) {
    throw new HappyWireError(field, "string is not valid Unicode (lone surrogate)");
  }
  return value;
}

export function expectBool(value: unknown, field: string): boolean {
  if (typeof value !== "boolean") {
    throw new HappyWireError(field, `expected a boolean, got ${typeName(value)}`);
  }
  return value;
}

const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

/**
 * `value` as an int64 if it is an integral number (or bigint) in range.
 *
 * JSON has one number type, so `5.0` is the integer 5; `true` is not a number.
 */
export function expectInt64(value: unknown, field: string): bigint {
  let n: bigint;
  if (typeof value === "bigint") {
    n = value;
  } else if (typeof value === "number") {
    if (!Number.isInteger(value)) {
      throw new HappyWireError(field, `expected an integer, got ${value}`);
    }
    n = BigInt(value);
  } else {
    throw new HappyWireError(field, `expected an integer, got ${typeName(value)}`);
  }
  if (n < INT64_MIN || n > INT64_MAX) {
    throw new HappyWireError(field, `integer ${n} is outside the int64 range`);
  }
  return n;
}

/** `value` as a finite double; -0 becomes 0 (the wire cannot carry -0: JSON.stringify(-0) is "0"). */
export function expectNumber(value: unknown, field: string): number {
  if (typeof value !== "number") {
    throw new HappyWireError(field, `expected a number, got ${typeName(value)}`);
  }
  if (!Number.isFinite(value)) {
    throw new HappyWireError(field, `number ${value} is not finite (JSON has no NaN/Infinity)`);
  }
  return value + 0;
}

/** An int64 as Happy's JSON number (exact up to 2^53, as every JavaScript number). */
export const int64ToJson = (value: bigint): number => Number(value);

const CANONICAL_BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Raw bytes of a canonical base64 string (as Node's Buffer writes it). */
export function b64Decode(data: unknown, field: string): Uint8Array {
  const text = expectStr(data, field);
  if (!CANONICAL_BASE64.test(text)) throw new HappyWireError(field, "not valid base64");
  const raw = base64Decode(text);
  // Only the canonical spelling decodes, so decoding then encoding gives back the same text.
  if (base64Encode(raw, "std") !== text) {
    throw new HappyWireError(field, "not canonical base64 (padding or trailing bits)");
  }
  return raw;
}

/** Standard, padded base64 (Node's `Buffer.toString("base64")`). */
export const b64Encode = (raw: Uint8Array): string => base64Encode(raw, "std");

/**
 * An object's key order, if a renderer would not reproduce it by itself; else undefined.
 *
 * A renderer writes `head` (a discriminator), then the modelled keys in the
 * contract's order, then the other keys in the order they came: the default
 * order of `JsonExtras`, whose `keyOrder` holds this function's answer.
 */
export function wireOrder(
  keys: readonly string[],
  modelled: Iterable<string>,
  head: readonly string[] = [],
): string[] | undefined {
  const present = new Set(keys);
  const model = [...modelled].filter((key) => !head.includes(key));
  const known = new Set([...model, ...head]);
  const order = [...head, ...model].filter((key) => present.has(key));
  order.push(...keys.filter((key) => !known.has(key)));
  return order.every((key, i) => key === keys[i]) ? undefined : [...keys];
}

/** Compare by code point (Python's string order), not by UTF-16 unit as Array.sort does. */
function codePointCompare(a: string, b: string): number {
  const x = [...a];
  const y = [...b];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = (x[i]?.codePointAt(0) ?? 0) - (y[i]?.codePointAt(0) ?? 0);
    if (d !== 0) return d;
  }
  return x.length - y.length;
}

/** The canonical order of an object's keys inside a Value (see the module comment). */
export function structKeyOrder(keys: Iterable<string>): string[] {
  return [...keys].sort((a, b) => (a === "t" ? -1 : b === "t" ? 1 : codePointCompare(a, b)));
}

/** A JSON value as a `google.protobuf.Value`; keys whose value is `undefined` are left out. */
export function jsonToValue(data: unknown, field: string): Value {
  if (data === null) return create(ValueSchema, { kind: { case: "nullValue", value: NullValue.NULL_VALUE } });
  switch (typeof data) {
    case "boolean":
      return create(ValueSchema, { kind: { case: "boolValue", value: data } });
    case "number":
      return create(ValueSchema, { kind: { case: "numberValue", value: expectNumber(data, field) } });
    case "string":
      return create(ValueSchema, { kind: { case: "stringValue", value: expectStr(data, field) } });
    case "object": {
      if (Array.isArray(data)) {
        const values = data.map((item, i) => jsonToValue(item === undefined ? null : item, `${field}[${i}]`));
        return create(ValueSchema, {
          kind: { case: "listValue", value: create(ListValueSchema, { values }) },
        });
      }
      if (data instanceof Uint8Array) break;
      const struct = create(StructSchema);
      for (const [key, item] of Object.entries(data)) {
        if (item === undefined) continue;
        const itemField = join(field, key);
        setKey(struct.fields, expectStr(key, itemField), jsonToValue(item, itemField));
      }
      return create(ValueSchema, { kind: { case: "structValue", value: struct } });
    }
    default:
      break;
  }
  throw new HappyWireError(field, `${typeName(data)} is not a JSON value`);
}

/** A `google.protobuf.Value` as JSON data, objects' keys in canonical order. */
export function valueToJson(value: Value, field: string): JsonValue {
  const kind = value.kind;
  switch (kind.case) {
    case "nullValue":
      return null;
    case "boolValue":
    case "stringValue":
      return kind.value;
    case "numberValue":
      return expectNumber(kind.value, field);
    case "listValue":
      return kind.value.values.map((item, i) => valueToJson(item, `${field}[${i}]`));
    case "structValue": {
      const fields = kind.value.fields;
      const out: JsonObject = {};
      for (const key of structKeyOrder(Object.keys(fields))) {
        setKey(out, key, valueToJson(fields[key] as Value, join(field, key)));
      }
      return out;
    }
    default:
      throw new HappyWireError(field, "google.protobuf.Value has no kind set");
  }
}
