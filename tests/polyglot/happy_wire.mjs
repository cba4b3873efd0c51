// Happy's wire JSON from eventrouter.v1 payloads, in Node.js, from the .proto
// files alone: what any non-Python client does to hand an event to Happy's
// apps. It shows the two carriers of what the contract does not model
// (protos/eventrouter/v1/happy_json.proto) and how little they ask of a
// client:
//
// - `raw` (RawHappyEvent): the event's JSON text; JSON.parse it.
// - `json_extras` (JsonExtras) on an object's message: add each member
//   (JSON.parse of its text) after the modelled keys; if `key_order` is set,
//   move the keys it names first, in its order.
//
// The modelled kinds rendered here are the ones the polyglot test emits
// (delete-machine, new-feed-post, session-event); a full client has one row
// per kind, as the Python codec does (client/eventrouter/client/_happy_json.py).
// Payloads are proto-loader objects loaded with LOADER_OPTIONS. int64 fields
// become JS numbers (exact up to 2^53, which is what Happy's JSON carries anyway).

/** How the polyglot clients load the contract (with `includeDirs` added): the object shapes below. */
export const LOADER_OPTIONS = Object.freeze({
  keepCase: true,
  longs: String,
  enums: String,
  defaults: false,
  oneofs: true,
});

/** The names of google.protobuf.Value's members in the loaded schema (protobufjs spells them camelCase). */
export function valueMembers(definition) {
  const names = {};
  for (const f of definition['google.protobuf.Value'].type.field) {
    if (f.type === 'TYPE_ENUM') names.null = f.name;
    else if (f.type === 'TYPE_DOUBLE') names.number = f.name;
    else if (f.type === 'TYPE_STRING') names.string = f.name;
    else if (f.type === 'TYPE_BOOL') names.bool = f.name;
    else if (f.typeName.endsWith('Struct')) names.struct = f.name;
    else if (f.typeName.endsWith('ListValue')) names.list = f.name;
  }
  return names;
}

const num = (int64) => Number(int64 ?? 0);
const str = (s) => s ?? '';

export class HappyWire {
  constructor(definition) {
    this.v = valueMembers(definition);
    const value = (x) => this.valueToJson(x);
    // Modelled kinds: the oneof case's fields after the discriminator, in wire order.
    this.updates = {
      delete_machine: (e) => ({ machineId: str(e.machine_id) }),
      new_feed_post: (e) => ({ id: str(e.id), body: value(e.body), cursor: str(e.cursor), createdAt: num(e.created_at_ms) }),
    };
    this.ephemerals = {
      session_event: (e) => ({
        sessionId: str(e.session_id),
        kind: str(e.kind),
        title: str(e.title),
        body: str(e.body),
        timestamp: num(e.timestamp_ms),
      }),
    };
  }

  /** A google.protobuf.Value as JSON; object keys in the codec's canonical order ("t" first, then sorted). */
  valueToJson(x) {
    const { v } = this;
    if (x === undefined || x === null) throw new Error('a required google.protobuf.Value is not set');
    if (x[v.null] !== undefined) return null;
    if (x[v.number] !== undefined) return x[v.number];
    if (x[v.string] !== undefined) return x[v.string];
    if (x[v.bool] !== undefined) return x[v.bool];
    if (x[v.list] !== undefined) return (x[v.list].values || []).map((e) => this.valueToJson(e));
    const fields = x[v.struct].fields || {};
    // A Struct is a map: its order is lost on the wire, so the order is canonical
    // (sort() compares UTF-16 units; the Python codec, code points: same for BMP keys).
    const keys = Object.keys(fields).sort().sort((a, b) => (b === 't') - (a === 't'));
    return Object.fromEntries(keys.map((k) => [k, this.valueToJson(fields[k])]));
  }

  renderUpdate(payload) {
    const body = payload.body.event === 'raw'
      ? JSON.parse(payload.body.raw.json)
      : this.renderKind('t', payload.body, this.updates);
    const container = { id: str(payload.id), seq: num(payload.seq), body, createdAt: num(payload.created_at_ms) };
    return withExtras(container, payload.json_extras);
  }

  renderEphemeral(payload) {
    return payload.event === 'raw' ? JSON.parse(payload.raw.json) : this.renderKind('type', payload, this.ephemerals);
  }

  renderKind(tagKey, union, table) {
    const kind = union.event;
    const render = table[kind];
    if (!render) throw new Error(`${kind}: not a kind this client renders`);
    // Happy's discriminator is the oneof case's name with dashes.
    const obj = { [tagKey]: kind.replaceAll('_', '-'), ...render(union[kind]) };
    return withExtras(obj, union[kind].json_extras);
  }
}

/** An object's JsonExtras applied: the members after the modelled keys, then key_order. */
export function withExtras(obj, extras) {
  if (!extras) return obj;
  for (const member of extras.members || []) {
    if (Object.hasOwn(obj, member.key)) throw new Error(`json_extras repeats the modelled key ${member.key}`);
    obj[member.key] = JSON.parse(member.json);
  }
  const order = extras.key_order || [];
  if (order.length === 0) return obj;
  // Keys key_order names first, in its order; the others after, as they were.
  // (A JS object always lists integer-like keys first; Happy's JSON, made by JS, does too.)
  const out = {};
  for (const key of order) if (Object.hasOwn(obj, key) && !Object.hasOwn(out, key)) out[key] = obj[key];
  for (const key of Object.keys(obj)) if (!Object.hasOwn(out, key)) out[key] = obj[key];
  return out;
}
