#!/usr/bin/env node
// Polyglot conformance client: a Node.js caller of eventrouter.v1 that shares
// nothing with the Python implementation but the .proto files, loaded at run
// time with @grpc/proto-loader and spoken over @grpc/grpc-js.
//
// It opens one stream per connection scope (user, session, machine), emits
// every update kind (14) and every ephemeral kind (5) through Emit, plus the
// carriers of Happy JSON the contract does not model (a `raw` update and
// ephemeral, a known kind with `json_extras`), with
// recipient filters chosen so that each stream's expected sequence is known,
// then an EmitBatch ending with a sentinel, and compares what each stream
// received field by field with what was sent: presence (optional unset vs "",
// Nullable* wrappers absent / empty / set), bytes, google.protobuf.Value
// trees, repeated order, enum names, 64-bit integers as exact strings. It also
// checks ConnectionOpened, StreamPosition offsets, GetConnections, EmitBatch
// result order and an idempotent repeat.
//
// A server that routes payloads byte for byte (as eventrouter does, unknown
// fields included) makes a send-and-compare loop blind to a field whose
// NUMBER differs between two copies of the contract. So when ER_VECTORS names
// a file of reference encodings ({case name: hex of the EmitRequest}) made by
// another implementation from the real contract, each one is decoded with the
// contract loaded here and must equal the case as written below.
//
// Environment:
//   ER_TARGET            host:port of the server (required)
//   ER_USER_ID           the user of the subscriber tokens (required)
//   ER_SESSION_ID        session of ER_TOKEN_SESSION (default S1)
//   ER_MACHINE_ID        machine of ER_TOKEN_MACHINE (default M1)
//   ER_TOKEN_USER        subscriber JWT, unrestricted (required)
//   ER_TOKEN_SESSION     subscriber JWT restricted to ER_SESSION_ID (required)
//   ER_TOKEN_MACHINE     subscriber JWT restricted to ER_MACHINE_ID (required)
//   ER_TOKEN_SERVICE     service JWT (required)
//   PROTO_ROOT           directory holding eventrouter/v1/*.proto (default: the repo's protos/)
//   ER_VECTORS           optional JSON file of reference encodings, see above
//   ER_TIMEOUT_MS        overall budget (default 15000)
//
// `node conformance.mjs --dump-cases` prints the emitted requests as proto3
// JSON (original field names) plus this client's encoding of each, without
// contacting a server: the input from which another implementation makes
// ER_VECTORS.
//
// Exit status: 0 = conformant; 1 = mismatches (one "MISMATCH path: expected
// ..., got ..." line each) or an error; 2 = bad usage.

import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import grpc from '@grpc/grpc-js';
import protoLoader from '@grpc/proto-loader';

import { LOADER_OPTIONS, valueMembers } from './happy_wire.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const PROTO_ROOT = path.resolve(process.env.PROTO_ROOT || path.join(HERE, '..', '..', 'protos'));
const PKG = 'eventrouter.v1';
const DUMP = process.argv.includes('--dump-cases');
const BUDGET_MS = Number(process.env.ER_TIMEOUT_MS || 15000);
const RPC_DEADLINE_MS = 5000;

// ---------------------------------------------------------------------------
// Loading the contract
// ---------------------------------------------------------------------------

// google/protobuf/struct.proto is not a file in node_modules: protobufjs (the
// parser under proto-loader) bundles the well-known types and resolves any
// "google/protobuf/*.proto" import to them, so includeDirs needs only protos/.
// Note that those bundled definitions use lowerCamelCase field names even with
// keepCase (Value.structValue, not struct_value): the code below reads the
// names from the loaded schema instead of assuming either spelling.
const definition = protoLoader.loadSync(
  ['eventrouter/v1/router_service.proto', 'eventrouter/v1/events.proto', 'eventrouter/v1/routing.proto'],
  { ...LOADER_OPTIONS, includeDirs: [PROTO_ROOT] },
);
const serviceDef = definition[`${PKG}.EventRouterService`];
const EventRouterService = grpc.loadPackageDefinition(definition).eventrouter.v1.EventRouterService;

// ---------------------------------------------------------------------------
// Reporting
// ---------------------------------------------------------------------------

const problems = [];
let checks = 0;

function show(value) {
  if (value === undefined) return '<absent>';
  if (Buffer.isBuffer(value)) return `<bytes ${value.toString('hex') || '(empty)'}>`;
  if (value instanceof JsonValue) return `Value(${JSON.stringify(value.json)})`;
  return JSON.stringify(value, (_k, v) =>
    v && v.type === 'Buffer' && Array.isArray(v.data) ? `<bytes ${Buffer.from(v.data).toString('hex')}>` : v,
  );
}

function mismatch(where, expected, got) {
  problems.push(`MISMATCH ${where}: expected ${show(expected)}, got ${show(got)}`);
}

function check(condition, where, expected, got) {
  checks += 1;
  if (!condition) mismatch(where, expected, got);
  return condition;
}

// ---------------------------------------------------------------------------
// google.protobuf.Value <-> plain JSON
// ---------------------------------------------------------------------------

/** A JSON tree meant to travel as a google.protobuf.Value. */
class JsonValue {
  constructor(json) {
    this.json = json;
  }
}
const json = (value) => new JsonValue(value);

function typeOf(fullName) {
  const entry = definition[fullName];
  if (!entry) throw new Error(`type ${fullName} is not in the contract loaded from ${PROTO_ROOT}`);
  return entry.type;
}

// Value's oneof member names as the loaded schema spells them.
const V = valueMembers(definition);

function toValue(x, where) {
  if (x === null) return { [V.null]: 'NULL_VALUE' };
  if (typeof x === 'number') return { [V.number]: x };
  if (typeof x === 'string') return { [V.string]: x };
  if (typeof x === 'boolean') return { [V.bool]: x };
  if (Array.isArray(x)) return { [V.list]: { values: x.map((v, i) => toValue(v, `${where}[${i}]`)) } };
  if (typeof x === 'object') {
    const fields = {};
    for (const [k, v] of Object.entries(x)) fields[k] = toValue(v, `${where}.${k}`);
    return { [V.struct]: { fields } };
  }
  throw new Error(`${where}: ${typeof x} cannot be a google.protobuf.Value`);
}

function fromValue(v, where) {
  const kinds = Object.values(V).filter((name) => v && v[name] !== undefined);
  if (kinds.length !== 1) {
    mismatch(`${where} (google.protobuf.Value kind)`, 'exactly one kind', Object.keys(v || {}));
    return undefined;
  }
  const kind = kinds[0];
  if (kind === V.null) return null;
  if (kind === V.number || kind === V.string || kind === V.bool) return v[kind];
  if (kind === V.list) return (v[kind].values || []).map((e, i) => fromValue(e, `${where}[${i}]`));
  const out = {};
  for (const [k, e] of Object.entries(v[kind].fields || {})) out[k] = fromValue(e, `${where}.${k}`);
  return out;
}

/** A request as grpc-js sends it: JsonValue leaves become Value messages. */
function toWire(x, where = '') {
  if (x instanceof JsonValue) return toValue(x.json, where);
  if (Buffer.isBuffer(x) || x === null || typeof x !== 'object') return x;
  if (Array.isArray(x)) return x.map((e, i) => toWire(e, `${where}[${i}]`));
  return Object.fromEntries(Object.entries(x).map(([k, v]) => [k, toWire(v, `${where}.${k}`)]));
}

/** proto3 JSON with the .proto field names, made from the case text alone (no schema). */
function toProto3Json(x) {
  if (x instanceof JsonValue) return x.json;
  if (Buffer.isBuffer(x)) return x.toString('base64');
  if (x === null || typeof x !== 'object') return x;
  if (Array.isArray(x)) return x.map(toProto3Json);
  return Object.fromEntries(Object.entries(x).map(([k, v]) => [k, toProto3Json(v)]));
}

// ---------------------------------------------------------------------------
// Canonical form: what proto3 can carry, judged by the loaded schema
// ---------------------------------------------------------------------------

const INT64_TYPES = new Set(['TYPE_INT64', 'TYPE_UINT64', 'TYPE_SINT64', 'TYPE_FIXED64', 'TYPE_SFIXED64']);

function resolveType(scope, typeName) {
  const name = typeName.startsWith('.') ? typeName.slice(1) : typeName;
  const parts = scope.split('.');
  for (let n = parts.length; n >= 0; n -= 1) {
    const candidate = [...parts.slice(0, n), name].join('.');
    if (definition[candidate]) return candidate;
  }
  throw new Error(`cannot resolve ${typeName} from ${scope}`);
}

function isDefaultScalar(field, value) {
  if (INT64_TYPES.has(field.type)) return value === '0' || value === 0;
  switch (field.type) {
    case 'TYPE_BOOL':
      return value === false;
    case 'TYPE_STRING':
      return value === '';
    case 'TYPE_BYTES':
      return Buffer.isBuffer(value) && value.length === 0;
    case 'TYPE_ENUM': {
      const zero = typeOf(resolveType(field.scope, field.typeName)).value.find((e) => e.number === 0);
      return value === 0 || (zero !== undefined && value === zero.name);
    }
    default:
      return value === 0;
  }
}

/**
 * The canonical form of a message object, for either side of a comparison:
 * - oneof discriminators that `oneofs: true` adds (`event: 'new_message'`,
 *   `_agent_state: 'agent_state'` for proto3 optional) are checked against the
 *   member that is present, then dropped;
 * - google.protobuf.Value subtrees become JsonValue(plain JSON);
 * - scalars WITHOUT presence holding their default are dropped (proto3 cannot
 *   tell them from absent); fields with presence (optional, messages) are kept;
 * - keys the loaded schema does not know are kept, so they show up as a
 *   mismatch against the other side.
 */
function canon(fullName, obj, where) {
  if (fullName === 'google.protobuf.Value') return obj instanceof JsonValue ? obj : json(fromValue(obj, where));
  if (obj === null || typeof obj !== 'object' || Array.isArray(obj) || Buffer.isBuffer(obj)) {
    mismatch(`${where} (${fullName})`, 'a message', obj);
    return obj;
  }
  const type = typeOf(fullName);
  const fields = new Map(type.field.map((f) => [f.name, { ...f, scope: fullName }]));
  const oneofs = new Set(type.oneofDecl.map((o) => o.name));
  const out = {};
  for (const [key, value] of Object.entries(obj)) {
    if (oneofs.has(key) && !fields.has(key)) {
      check(typeof value === 'string' && obj[value] !== undefined, `${where}.${key} (oneof case)`, 'a present member', value);
      continue;
    }
    const field = fields.get(key);
    if (!field) {
      out[key] = value; // not in the loaded contract: left for the comparison to report
      continue;
    }
    const hasPresence = oneofs.has(`_${key}`);
    const at = `${where}.${key}`;
    if (field.type === 'TYPE_MESSAGE') {
      const typeName = field.typeName;
      const mapEntry = type.nestedType.find((n) => n.name === typeName && n.options && n.options.mapEntry);
      if (mapEntry) {
        const valueField = mapEntry.field.find((f) => f.number === 2);
        const entries = Object.entries(value);
        if (entries.length === 0) continue;
        out[key] = Object.fromEntries(
          entries.map(([k, v]) => [
            k,
            valueField.type === 'TYPE_MESSAGE' ? canon(resolveType(fullName, valueField.typeName), v, `${at}[${k}]`) : v,
          ]),
        );
        continue;
      }
      const child = resolveType(fullName, typeName);
      if (field.label === 'LABEL_REPEATED') {
        if (Array.isArray(value) && value.length === 0) continue;
        out[key] = Array.isArray(value) ? value.map((v, i) => canon(child, v, `${at}[${i}]`)) : value;
      } else {
        out[key] = canon(child, value, at);
      }
      continue;
    }
    if (field.label === 'LABEL_REPEATED') {
      if (Array.isArray(value) && value.length === 0) continue;
      out[key] = value;
      continue;
    }
    if (!hasPresence && isDefaultScalar(field, value)) continue;
    out[key] = value;
  }
  return out;
}

/** Deep, type-strict comparison; every difference becomes one MISMATCH line. */
function compare(expected, got, where) {
  checks += 1;
  if (expected instanceof JsonValue || got instanceof JsonValue) {
    if (!(expected instanceof JsonValue && got instanceof JsonValue)) return mismatch(where, expected, got);
    return compareJson(expected.json, got.json, where);
  }
  if (Buffer.isBuffer(expected) || Buffer.isBuffer(got)) {
    if (!(Buffer.isBuffer(expected) && Buffer.isBuffer(got) && expected.equals(got))) mismatch(where, expected, got);
    return;
  }
  if (Array.isArray(expected) || Array.isArray(got)) {
    if (!(Array.isArray(expected) && Array.isArray(got))) return mismatch(where, expected, got);
    if (expected.length !== got.length) mismatch(`${where}.length`, expected.length, got.length);
    const n = Math.min(expected.length, got.length);
    for (let i = 0; i < n; i += 1) compare(expected[i], got[i], `${where}[${i}]`);
    return;
  }
  if (expected !== null && typeof expected === 'object' && got !== null && typeof got === 'object') {
    const keys = new Set([...Object.keys(expected), ...Object.keys(got)]);
    for (const k of keys) {
      if (!(k in expected) || !(k in got)) mismatch(`${where}.${k}`, expected[k], got[k]);
      else compare(expected[k], got[k], `${where}.${k}`);
    }
    return;
  }
  if (expected !== got) mismatch(where, expected, got);
}

function compareJson(expected, got, where) {
  const kind = (x) => (x === null ? 'null' : Array.isArray(x) ? 'array' : typeof x);
  if (kind(expected) !== kind(got)) return mismatch(where, expected, got);
  if (kind(expected) === 'array') {
    if (expected.length !== got.length) mismatch(`${where}.length`, expected.length, got.length);
    for (let i = 0; i < Math.min(expected.length, got.length); i += 1) compareJson(expected[i], got[i], `${where}[${i}]`);
  } else if (kind(expected) === 'object') {
    for (const k of new Set([...Object.keys(expected), ...Object.keys(got)])) {
      if (!(k in expected) || !(k in got)) mismatch(`${where}.${k}`, expected[k], got[k]);
      else compareJson(expected[k], got[k], `${where}.${k}`);
    }
  } else if (!Object.is(expected, got)) {
    mismatch(where, expected, got);
  }
}

// ---------------------------------------------------------------------------
// The cases: every update kind and every ephemeral kind, with their recipients
// ---------------------------------------------------------------------------

const T0 = '1735689600000'; // 2025-01-01T00:00:00Z in ms
const INT64_MAX = '9223372036854775807';
const INT64_MIN = '-9223372036854775808';
const BEYOND_2_53 = '9007199254740993'; // 2^53 + 1: not representable as a JS number

const ALL = { all_user_authenticated_connections: {} };
const USER_ONLY = { user_scoped_only: {} };
const inSession = (s) => ({ all_interested_in_session: { session_id: s } });
const machineScoped = (m) => ({ machine_scoped_only: { machine_id: m } });
const machineOnly = (m) => ({ machine_only: { machine_id: m } });

const bytes = (...xs) => Buffer.from(xs);
const allBytes = Buffer.from(Array.from({ length: 256 }, (_, i) => i));

/**
 * The emits, in order. `reach` lists the streams that must receive the event;
 * `batch: true` cases go through one EmitBatch after the single Emits.
 * Scalars without presence may be written with their default value (active:
 * false): proto3 does not put those on the wire and the comparison knows it.
 */
function buildCases({ user, session, machine, conn }) {
  const update = (name, body, extra = {}) => ({
    name,
    request: {
      user_id: user,
      update: { id: `upd-${name}`, seq: extra.seq || '1', body, created_at_ms: extra.created_at_ms || T0 },
      ...(extra.filter ? { recipient_filter: extra.filter } : {}),
      ...(extra.skip ? { skip_connection_id: extra.skip } : {}),
    },
    reach: extra.reach,
    batch: Boolean(extra.batch),
  });
  const ephemeral = (name, body, extra = {}) => ({
    name,
    request: {
      user_id: user,
      ephemeral: body,
      ...(extra.filter ? { recipient_filter: extra.filter } : {}),
      ...(extra.skip ? { skip_connection_id: extra.skip } : {}),
      ...(extra.key ? { idempotency_key: extra.key } : {}),
    },
    reach: extra.reach,
    batch: Boolean(extra.batch),
  });
  return [
    update(
      'new_message',
      {
        new_message: {
          session_id: session,
          message: {
            id: 'msg-1',
            seq: '42',
            content: json({
              t: 'encrypted',
              c: 'AAEC/w==',
              nested: { list: [1, -2.5, 0, true, false, null, 'x', {}, []], deep: { a: { b: { c: null } } } },
              empty: '',
              unicode: 'héllo ✓ 😀',
              two_pow_53: 9007199254740992,
              tiny: 1e-300,
              tenth: 0.1,
            }),
            local_id: '', // optional, set to "": present on the wire, distinct from unset
            created_at_ms: T0,
            updated_at_ms: '1735689600001',
          },
        },
      },
      { seq: BEYOND_2_53, created_at_ms: INT64_MAX, filter: inSession(session), reach: ['user', 'session'] },
    ),
    update(
      'new_session',
      {
        new_session: {
          session_id: session,
          seq: '1',
          metadata: 'bWV0YQ==',
          metadata_version: '3',
          agent_state: 'c3RhdGU=',
          agent_state_version: '2',
          data_encryption_key: bytes(0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff),
          active: true,
          active_at_ms: T0,
          created_at_ms: T0,
          updated_at_ms: T0,
        },
      },
      { reach: ['user', 'session', 'machine'] }, // no recipient_filter: all connections
    ),
    update(
      'update_session',
      {
        update_session: {
          session_id: session,
          metadata: { value: { value: 'bmV3', version: '4' } }, // set
          agent_state: {}, // present but empty = null
        },
      },
      { filter: inSession('S-other'), reach: ['user'] },
    ),
    update(
      'update_account',
      {
        update_account: {
          user_id: user,
          first_name: { value: 'Ada' },
          last_name: {}, // null
          username: { value: '' }, // "" (set)
          avatar: { width: '256', height: '128', thumbhash: 'dGh1bWI=', path: 'avatars/a.png', url: 'https://cdn.example/a.png' },
          settings: { value: { version: '5' } }, // versioned value whose value is null
          github: {
            profile: {
              id: BEYOND_2_53,
              login: 'ada',
              type: 'User',
              site_admin: false,
              avatar_url: 'https://avatars.example/ada',
              gravatar_id: '',
              name: 'Ada Lovelace',
              blog: '',
              email: 'ada@example.com',
              hireable: false, // optional bool set to false
              public_repos: '12',
              public_gists: '0',
              followers: '1000000',
              following: '3',
              created_at: '2011-01-25T18:44:36Z',
              updated_at: '2025-01-01T00:00:00Z',
              private_gists: '0', // optional int64 set to 0
              total_private_repos: '3',
              disk_usage: '10000',
              collaborators: '0',
              two_factor_authentication: true,
              plan: { collaborators: '0', name: 'free', space: '976562499', private_repos: '10000' },
              // company, location, bio, twitter_username, owned_private_repos: unset
            },
          },
          connected_services: { services: ['github', 'anthropic'] },
        },
      },
      { filter: USER_ONLY, reach: ['user'] },
    ),
    update(
      'new_machine',
      {
        new_machine: {
          machine_id: machine,
          seq: '7',
          metadata: 'bWFjaGluZQ==',
          metadata_version: '1',
          // daemon_state: unset (null)
          daemon_state_version: '0',
          data_encryption_key: Buffer.alloc(0), // optional bytes, present but empty
          active: false,
          active_at_ms: T0,
          created_at_ms: T0,
          updated_at_ms: T0,
        },
      },
      { filter: machineScoped(machine), reach: ['user', 'machine'] },
    ),
    update(
      'update_machine',
      {
        update_machine: {
          machine_id: machine,
          daemon_state: { value: 'ZGFlbW9u', version: '9' },
          active_at_ms: '0', // optional int64 set to 0
          // metadata: unset (unchanged)
        },
      },
      { filter: machineOnly(machine), reach: ['machine'] },
    ),
    update(
      'new_artifact',
      {
        new_artifact: {
          artifact_id: 'art-1',
          seq: '1',
          header: bytes(0x68, 0x00, 0xff),
          header_version: '1',
          body: allBytes,
          body_version: '2',
          data_encryption_key: Buffer.from('000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f', 'hex'),
          created_at_ms: T0,
          updated_at_ms: T0,
        },
      },
      { filter: ALL, reach: ['user', 'session', 'machine'] },
    ),
    update(
      'update_artifact',
      { update_artifact: { artifact_id: 'art-1', header: { value: 'aGVhZGVy', version: '2' } } },
      { filter: ALL, skip: conn.session, reach: ['user', 'machine'] },
    ),
    update('delete_artifact', { delete_artifact: { artifact_id: 'art-1' } }, { filter: machineScoped('M-other'), reach: ['user'] }),
    update('delete_session', { delete_session: { session_id: session } }, { filter: inSession(session), skip: conn.user, reach: ['session'] }),
    update(
      'relationship_updated',
      { relationship_updated: { uid: 'friend-1', status: 'RELATIONSHIP_STATUS_FRIEND', timestamp_ms: T0 } },
      { filter: USER_ONLY, reach: ['user'] },
    ),
    update(
      'new_feed_post',
      {
        new_feed_post: {
          id: 'feed-1',
          body: json({ kind: 'friend_request', uid: 'friend-1', nested: [null, { x: [1, 2, 3] }], flag: false }),
          cursor: '0-abc',
          created_at_ms: T0,
        },
      },
      { reach: ['user', 'session', 'machine'] },
    ),
    update(
      'kv_batch_update',
      {
        kv_batch_update: {
          changes: [
            { key: 'theme', value: 'ZGFyaw==', version: '7' },
            { key: 'deleted', version: '-1' }, // value unset = null
            { key: 'empty', value: '', version: '1' },
          ],
        },
      },
      { filter: ALL, reach: ['user', 'session', 'machine'] },
    ),
    // Happy sends delete-machine to user-scoped connections only.
    update('delete_machine', { delete_machine: { machine_id: machine } }, { filter: USER_ONLY, reach: ['user'] }),
    update(
      'raw_update',
      { raw: { kind: 'archive-session', json: '{"t":"archive-session","sid":"S1","by":{"tags":["é",2.5,null]}}' } },
      { reach: ['user', 'session', 'machine'] },
    ),
    update(
      'new_feed_post_extras',
      {
        new_feed_post: {
          id: 'feed-2',
          body: json({ kind: 'text', text: 'hi' }),
          cursor: '0-def',
          created_at_ms: T0,
          json_extras: {
            members: [{ key: 'repeatKey', json: 'null' }],
            key_order: ['t', 'repeatKey', 'id', 'body', 'cursor', 'createdAt'],
          },
        },
      },
      { filter: USER_ONLY, reach: ['user'] },
    ),
    ephemeral(
      'activity',
      { activity: { session_id: session, active: true, active_at_ms: T0, thinking: false } },
      { filter: inSession(session), reach: ['user', 'session'] },
    ),
    ephemeral(
      'machine_activity',
      { machine_activity: { machine_id: machine, active: false, active_at_ms: T0 } },
      { filter: machineScoped(machine), reach: ['user', 'machine'] },
    ),
    ephemeral(
      'usage',
      {
        usage: {
          session_id: session,
          key: 'claude-session',
          tokens: [
            { key: 'output', value: 1234 },
            { key: 'input', value: 9007199254740991 },
            { key: 'cache_read', value: 0 },
            { key: 'cache_creation', value: 17 },
          ],
          cost: [
            { key: 'total', value: 0.123456789 },
            { key: 'input', value: 1e-7 },
            { key: 'output', value: 1.5 },
          ],
          timestamp_ms: T0,
        },
      },
      { filter: inSession(session), reach: ['user', 'session'] },
    ),
    ephemeral(
      'machine_status',
      { machine_status: { machine_id: machine, online: true, timestamp_ms: INT64_MIN } },
      { filter: machineOnly(machine), key: 'status-1', reach: ['machine'] },
    ),
    // Happy sends session-event to everything interested in that session.
    ephemeral(
      'session_event',
      { session_event: { session_id: session, kind: 'done', title: "It's ready!", body: 'happy-server', timestamp_ms: T0 } },
      { filter: inSession(session), reach: ['user', 'session'] },
    ),
    ephemeral(
      'raw_ephemeral',
      { raw: { kind: 'typing', json: '{"type":"typing","sessionId":"S1"}' } },
      { filter: machineScoped(machine), reach: ['user', 'machine'] },
    ),
    // EmitBatch: results must come back in this order.
    update(
      'batch_update_account',
      {
        update_account: {
          user_id: user,
          first_name: {}, // null
          github: {}, // disconnected (null)
          connected_services: {}, // present, empty list
        },
      },
      { filter: USER_ONLY, reach: ['user'], batch: true },
    ),
    update('batch_kv_empty', { kv_batch_update: {} }, { filter: ALL, reach: ['user', 'session', 'machine'], batch: true }),
    ephemeral(
      'batch_sentinel',
      { activity: { session_id: 'sentinel', active: true, active_at_ms: T0 } },
      { reach: ['user', 'session', 'machine'], batch: true },
    ),
  ];
}

const VECTOR_IDS = {
  user: 'vector-user',
  session: 'S1',
  machine: 'M1',
  conn: { user: 'vector-conn-user', session: 'vector-conn-session', machine: 'vector-conn-machine' },
};

// ---------------------------------------------------------------------------
// --dump-cases
// ---------------------------------------------------------------------------

if (DUMP) {
  const cases = buildCases(VECTOR_IDS).map((c) => ({
    name: c.name,
    request: toProto3Json(c.request),
    node_hex: serviceDef.Emit.requestSerialize(toWire(c.request)).toString('hex'),
  }));
  process.stdout.write(`${JSON.stringify({ cases }, null, 1)}\n`);
  process.exit(0);
}

// ---------------------------------------------------------------------------
// Live run
// ---------------------------------------------------------------------------

function env(name, fallback) {
  const value = process.env[name] || fallback;
  if (!value) {
    console.error(`conformance: ${name} is required`);
    process.exit(2);
  }
  return value;
}

const target = env('ER_TARGET');
const userId = env('ER_USER_ID');
const sessionId = env('ER_SESSION_ID', 'S1');
const machineId = env('ER_MACHINE_ID', 'M1');
const tokens = {
  user: env('ER_TOKEN_USER'),
  session: env('ER_TOKEN_SESSION'),
  machine: env('ER_TOKEN_MACHINE'),
  service: env('ER_TOKEN_SERVICE'),
};
const SCOPES = {
  user: { user: {} },
  session: { session: { session_id: sessionId } },
  machine: { machine: { machine_id: machineId } },
};
const STREAMS = ['user', 'session', 'machine'];

const client = new EventRouterService(target, grpc.credentials.createInsecure());
const streams = {};

function finish(code) {
  for (const s of Object.values(streams)) s.call.cancel();
  client.close();
  for (const p of problems) console.log(p);
  if (code === 0) console.log(`conformance: OK (${checks} checks against ${PROTO_ROOT})`);
  else console.log(`conformance: FAILED (${problems.length} problems, ${checks} checks, contract from ${PROTO_ROOT})`);
  process.exit(code);
}

const watchdog = setTimeout(() => {
  problems.push(`TIMEOUT: gave up after ${BUDGET_MS} ms`);
  finish(1);
}, BUDGET_MS);

function bearer(token) {
  const md = new grpc.Metadata();
  md.set('authorization', `Bearer ${token}`);
  return md;
}

function unary(method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, bearer(tokens.service), { deadline: Date.now() + RPC_DEADLINE_MS }, (err, res) =>
      err ? reject(new Error(`${method}: ${err.code} ${err.details}`)) : resolve(res),
    );
  });
}

function subscribe(name) {
  const state = { name, events: [], waiters: [], ended: null };
  state.call = client.Subscribe({ scope: SCOPES[name] }, bearer(tokens[name]));
  const wake = () => {
    state.waiters = state.waiters.filter((w) => !w());
  };
  state.call.on('data', (response) => {
    if (!Array.isArray(response.events) || response.events.length === 0) {
      problems.push(`MISMATCH ${name}: a SubscribeResponse without events`);
    }
    for (const event of response.events || []) state.events.push(event);
    wake();
  });
  state.call.on('error', (err) => {
    if (err.code !== grpc.status.CANCELLED) state.ended = `${err.code} ${err.details}`;
    wake();
  });
  state.call.on('end', () => {
    state.ended = state.ended || 'stream ended';
    wake();
  });
  streams[name] = state;
  return state;
}

/** Resolves once `predicate(state)` holds; rejects if the stream ends first. */
function until(state, predicate, what) {
  return new Promise((resolve, reject) => {
    const test = () => {
      if (predicate(state)) {
        resolve();
        return true;
      }
      if (state.ended) {
        reject(new Error(`${state.name} stream ended while waiting for ${what}: ${state.ended}`));
        return true;
      }
      return false;
    };
    if (!test()) state.waiters.push(test);
  });
}

async function main() {
  // The vectors first: they need no server.
  if (process.env.ER_VECTORS) {
    const vectors = JSON.parse(fs.readFileSync(process.env.ER_VECTORS, 'utf8'));
    const cases = buildCases(VECTOR_IDS);
    check(Object.keys(vectors).length === cases.length, 'vectors (count)', cases.length, Object.keys(vectors).length);
    for (const c of cases) {
      if (!(c.name in vectors)) {
        mismatch(`vector[${c.name}]`, 'a reference encoding', undefined);
        continue;
      }
      const decoded = serviceDef.Emit.requestDeserialize(Buffer.from(vectors[c.name], 'hex'));
      const where = `vector[${c.name}]`;
      compare(canon(`${PKG}.EmitRequest`, c.request, where), canon(`${PKG}.EmitRequest`, decoded, where), where);
    }
  }

  // 1. One stream per scope, opened one after the other (GetConnections lists them oldest first).
  const opened = {};
  for (const name of STREAMS) {
    const state = subscribe(name);
    await until(state, (s) => s.events.length > 0, 'the opened event');
    const first = state.events.shift();
    const where = `${name}.opened`;
    if (!check(first.event === 'opened' && first.opened, `${where} (first event)`, 'opened', first.event)) continue;
    const o = canon(`${PKG}.ConnectionOpened`, first.opened, where);
    opened[name] = o;
    check(typeof o.connection_id === 'string' && o.connection_id.length > 0, `${where}.connection_id`, 'a non-empty id', o.connection_id);
    compare(userId, o.user_id, `${where}.user_id`);
    compare(canon(`${PKG}.ConnectionScope`, SCOPES[name], where), o.scope, `${where}.scope`);
    compare({ status: 'RESUME_STATUS_NOT_REQUESTED' }, o.resume, `${where}.resume`);
    check(typeof o.opened_at_ms === 'string' && /^\d+$/.test(o.opened_at_ms), `${where}.opened_at_ms`, 'an int64 as a string', o.opened_at_ms);
    check(Math.abs(Number(o.opened_at_ms) - Date.now()) < 60_000, `${where}.opened_at_ms`, 'within a minute of now', o.opened_at_ms);
    check(o.heartbeat_interval_ms === undefined, `${where}.heartbeat_interval_ms`, '<absent> (0: none asked)', o.heartbeat_interval_ms);
    check(typeof o.node_id === 'string' && o.node_id.length > 0, `${where}.node_id`, 'a non-empty node id', o.node_id);
    // No update yet: offset 0 (absent on the wire), an epoch.
    check(o.position && o.position.offset === undefined, `${where}.position.offset`, '<absent> (0)', o.position && o.position.offset);
    check(o.position && typeof o.position.epoch === 'string' && o.position.epoch.length > 0, `${where}.position.epoch`, 'a non-empty epoch', o.position && o.position.epoch);
  }
  if (Object.keys(opened).length !== STREAMS.length) return finish(1);
  const epoch = opened.user.position.epoch;
  for (const name of STREAMS) compare(epoch, opened[name].position.epoch, `${name}.opened.position.epoch (same user, same stream)`);
  const conn = Object.fromEntries(STREAMS.map((n) => [n, opened[n].connection_id]));
  check(new Set(Object.values(conn)).size === 3, 'opened.connection_id (distinct)', 'three ids', Object.values(conn));

  // 2. GetConnections lists the three, oldest first.
  const listed = canon(`${PKG}.GetConnectionsResponse`, await unary('GetConnections', { user_id: userId }), 'GetConnections');
  compare(
    STREAMS.map((n) => ({
      connection_id: conn[n],
      scope: canon(`${PKG}.ConnectionScope`, SCOPES[n], 'scope'),
      opened_at_ms: opened[n].opened_at_ms,
      node_id: opened[n].node_id,
    })),
    listed.connections,
    'GetConnections.connections',
  );

  // 3. Every kind through Emit, then a repeat, then the batch.
  const cases = buildCases({ user: userId, session: sessionId, machine: machineId, conn });
  const expected = { user: [], session: [], machine: [] };
  let offset = 0n;
  let repeat = null;
  // What Emit must answer for a case; records what each stream must then receive.
  const responseFor = (c) => {
    if (c.request.ephemeral) {
      for (const n of c.reach) expected[n].push({ name: c.name, event: { ephemeral: c.request.ephemeral } });
      return { reached: c.reach.length };
    }
    offset += 1n;
    const position = { offset: String(offset), epoch };
    for (const n of c.reach) expected[n].push({ name: c.name, event: { update: { payload: c.request.update, position } } });
    return { reached: c.reach.length, position };
  };
  for (const c of cases.filter((x) => !x.batch)) {
    const want = responseFor(c);
    const got = await unary('Emit', toWire(c.request));
    compare(canon(`${PKG}.EmitResponse`, want, 'want'), canon(`${PKG}.EmitResponse`, got, `Emit[${c.name}]`), `Emit[${c.name}]`);
    if (c.name === 'new_session') repeat = { c, position: want.position };
  }
  // An update's id is its idempotency key: the repeat is acknowledged, not delivered.
  const again = await unary('Emit', toWire(repeat.c.request));
  compare({ reached: repeat.c.reach.length, duplicate: true, position: repeat.position }, canon(`${PKG}.EmitResponse`, again, 'repeat'), 'Emit[new_session repeated]');

  const batch = cases.filter((x) => x.batch);
  const wantBatch = batch.map((c) => {
    const want = responseFor(c);
    return canon(`${PKG}.EmitResponse`, want, 'want');
  });
  const gotBatch = canon(`${PKG}.EmitBatchResponse`, await unary('EmitBatch', { emits: batch.map((c) => toWire(c.request)) }), 'EmitBatch');
  compare(wantBatch, gotBatch.results || [], 'EmitBatch.results');

  // 4. Each stream: exactly its expected events, in order, up to the sentinel (emitted last, to all).
  const isSentinel = (e) => e.event === 'ephemeral' && e.ephemeral.activity && e.ephemeral.activity.session_id === 'sentinel';
  await Promise.all(STREAMS.map((n) => until(streams[n], (s) => s.events.some(isSentinel), 'the sentinel')));
  for (const n of STREAMS) {
    const got = streams[n].events.filter((e) => e.event !== 'heartbeat');
    const want = expected[n];
    check(got.length === want.length, `${n}.events.length`, want.map((w) => w.name), got.length);
    let last = 0n;
    for (let i = 0; i < Math.min(got.length, want.length); i += 1) {
      const where = `${n}.events[${i}](${want[i].name})`;
      compare(canon(`${PKG}.StreamEvent`, want[i].event, where), canon(`${PKG}.StreamEvent`, got[i], where), where);
      if (got[i].event === 'update') {
        const off = BigInt(got[i].update.position.offset);
        check(off > last, `${where}.update.position.offset (increasing)`, `> ${last}`, String(off));
        last = off;
      }
    }
  }
  return finish(problems.length ? 1 : 0);
}

main().catch((err) => {
  problems.push(`ERROR: ${err && err.stack ? err.stack : err}`);
  finish(1);
});
