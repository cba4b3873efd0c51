/**
 * JSON text carried inside the contract (`RawHappyEvent`, `JsonExtras`): parsing and limits.
 *
 * The same rules as the Python package `eventrouter.jsontext`, which the server
 * checks before it accepts an event, so a text this codec writes is one the
 * server accepts, and one the server accepts is one this codec renders:
 *
 * - one well-formed JSON value: no `NaN` / `Infinity`, no key repeated within
 *   an object (JavaScript would keep only the last one, so the text would not
 *   render back as it is);
 * - at most `MAX_DEPTH` nested arrays and objects;
 * - a raw event's kind: 1 to 64 characters from `A-Z a-z 0-9 - _ . :`, equal
 *   to the discriminator inside its text.
 */

/** Levels of arrays and objects in one text: `{}` is 1, `{"a": [1]}` is 2. */
export const MAX_DEPTH = 32;
const KIND = /^[A-Za-z0-9_.:-]{1,64}$/;
export const KIND_RULE = "must be 1 to 64 characters from A-Z a-z 0-9 - _ . :";

/** A JSON text (or a raw event's kind) breaks a rule; `field` names where it sits. */
export class JsonTextError extends Error {
  override readonly name = "JsonTextError";
  constructor(
    readonly field: string,
    readonly reason: string,
  ) {
    super(`${field}: ${reason}`);
  }
}

const tooDeep = (field: string) =>
  new JsonTextError(field, `nested deeper than ${MAX_DEPTH} levels of arrays and objects`);

interface Frame {
  readonly keys: Set<string> | null; // null: an array
  expectKey: boolean;
}

/**
 * Check the structure of a text JSON.parse accepted: depth and repeated keys.
 *
 * JSON.parse keeps the last of repeated keys silently and cannot report depth,
 * so the text is scanned once more; it is known to be valid JSON, which keeps
 * the scanner small (it only needs to find strings, brackets, `:` and `,`).
 */
function checkStructure(text: string, field: string): void {
  const stack: Frame[] = [];
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '"') {
      let end = i + 1;
      while (text[end] !== '"') end += text[end] === "\\" ? 2 : 1;
      const top = stack[stack.length - 1];
      if (top?.keys && top.expectKey) {
        const key = JSON.parse(text.slice(i, end + 1)) as string;
        if (top.keys.has(key)) {
          throw new JsonTextError(field, `not valid JSON text: the key ${JSON.stringify(key)} is repeated`);
        }
        top.keys.add(key);
        top.expectKey = false;
      }
      i = end;
    } else if (c === "{" || c === "[") {
      stack.push({ keys: c === "{" ? new Set() : null, expectKey: c === "{" });
      if (stack.length > MAX_DEPTH) throw tooDeep(field);
    } else if (c === "}" || c === "]") {
      stack.pop();
    } else if (c === ",") {
      const top = stack[stack.length - 1];
      if (top?.keys) top.expectKey = true;
    }
  }
}

/** Parse `text` as one JSON value under the rules above. */
export function loads(text: string, field: string): unknown {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new JsonTextError(field, `not valid JSON text: ${(e as Error).message}`);
  }
  checkStructure(text, field);
  return value;
}

/** Refuse what JSON.stringify would change silently: NaN and Infinity become null, bigints throw. */
function checkJsonValue(value: unknown, field: string): void {
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const item = stack.pop();
    switch (typeof item) {
      case "number":
        if (!Number.isFinite(item)) {
          throw new JsonTextError(field, `not a JSON value: ${item} (JSON has no NaN/Infinity)`);
        }
        break;
      case "bigint":
      case "function":
      case "symbol":
        throw new JsonTextError(field, `not a JSON value: a ${typeof item}`);
      case "object":
        if (item !== null) stack.push(...Object.values(item));
        break;
      default:
        break;
    }
  }
}

/**
 * Compact JSON text of `value` (JSON.stringify's), checked like `loads`.
 *
 * Keys whose value is `undefined` are left out, as JSON.stringify (and so
 * Happy's wire) does.
 */
export function dumps(value: unknown, field: string): string {
  if (value === undefined) throw new JsonTextError(field, "not a JSON value: undefined");
  checkJsonValue(value, field);
  let text: string;
  try {
    text = JSON.stringify(value);
  } catch (e) {
    // A cycle, or a toJSON that throws.
    throw new JsonTextError(field, `not a JSON value: ${(e as Error).message}`);
  }
  loads(text, field); // depth
  return text;
}

/** A raw event's kind follows `KIND_RULE`. */
export function checkKind(kind: string, field: string): void {
  if (!KIND.test(kind)) throw new JsonTextError(field, KIND_RULE);
}

/** Check a `RawHappyEvent` and return its parsed JSON object; `tagKey` is `t` or `type`. */
export function rawEvent(
  kind: string,
  text: string,
  tagKey: string,
  kindField: string,
  jsonField: string,
): Record<string, unknown> {
  checkKind(kind, kindField);
  const obj = loads(text, jsonField);
  if (typeof obj !== "object" || obj === null || Array.isArray(obj)) {
    throw new JsonTextError(jsonField, "must be a JSON object");
  }
  if ((obj as Record<string, unknown>)[tagKey] !== kind) {
    throw new JsonTextError(
      jsonField,
      `its ${JSON.stringify(tagKey)} must be the kind, ${JSON.stringify(kind)}`,
    );
  }
  return obj as Record<string, unknown>;
}

/** Check `JsonExtras.members`; return (key, parsed value) pairs in order. */
export function members(pairs: Iterable<{ key: string; json: string }>, field: string): [string, unknown][] {
  const out: [string, unknown][] = [];
  const seen = new Set<string>();
  let i = 0;
  for (const { key, json } of pairs) {
    const where = `${field}[${i++}]`;
    if (seen.has(key)) {
      throw new JsonTextError(`${where}.key`, `the key ${JSON.stringify(key)} is repeated`);
    }
    seen.add(key);
    out.push([key, loads(json, `${where}.json`)]);
  }
  return out;
}
