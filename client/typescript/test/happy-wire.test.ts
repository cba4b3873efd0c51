/**
 * The builders and codec reproduce, byte for byte, what Happy's own builders emit.
 *
 * The same cases as the Python suite (tests/unit/test_happy_wire_fixtures.py):
 * tests/fixtures/happy-wire/builders.json (the seed's 13 updates and 4
 * ephemerals) and builders-2026.json (delete-machine and session-event),
 * recorded from Happy Server's TypeScript builders with the clock pinned to
 * `fixedNow`.
 */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { describe, test } from "node:test";
import { equals, fromBinary, toBinary } from "@bufbuild/protobuf";
import {
  createHappyBuilders,
  EphemeralPayloadSchema,
  fromHappyJson,
  type HappyBuilders,
  toHappyJson,
  UpdatePayloadSchema,
} from "@eventrouter/client";

interface Case {
  builder: string;
  args: unknown[];
  output: Record<string, unknown>;
}

const FIXTURE_DIR = new URL("../../../../tests/fixtures/happy-wire/", import.meta.url);
const FILES = ["builders.json", "builders-2026.json"] as const;
const fixtures = FILES.map(
  (name) =>
    JSON.parse(readFileSync(new URL(name, FIXTURE_DIR), "utf8")) as { fixedNow: number; cases: Case[] },
);
const fixedNows = new Set(fixtures.map((data) => data.fixedNow));
assert.equal(fixedNows.size, 1, "both files were recorded with one pinned clock");
const FIXED_NOW = fixtures[0]?.fixedNow ?? 0;
const CASES: Case[] = fixtures.flatMap((data) => data.cases);

const builders = createHappyBuilders({
  now: () => FIXED_NOW,
  // The public URL function the fixtures were recorded with (see their README).
  publicUrl: (path) => `https://files.example.invalid/${path}`,
});

// Happy's names, spelled out rather than derived, so a renamed builder fails here.
const BUILDERS: Record<string, (...args: never[]) => unknown> = {
  buildNewSessionUpdate: builders.buildNewSessionUpdate,
  buildNewMessageUpdate: builders.buildNewMessageUpdate,
  buildUpdateSessionUpdate: builders.buildUpdateSessionUpdate,
  buildDeleteSessionUpdate: builders.buildDeleteSessionUpdate,
  buildUpdateAccountUpdate: builders.buildUpdateAccountUpdate,
  buildNewMachineUpdate: builders.buildNewMachineUpdate,
  buildUpdateMachineUpdate: builders.buildUpdateMachineUpdate,
  buildSessionActivityEphemeral: builders.buildSessionActivityEphemeral,
  buildMachineActivityEphemeral: builders.buildMachineActivityEphemeral,
  buildUsageEphemeral: builders.buildUsageEphemeral,
  buildMachineStatusEphemeral: builders.buildMachineStatusEphemeral,
  buildNewArtifactUpdate: builders.buildNewArtifactUpdate,
  buildUpdateArtifactUpdate: builders.buildUpdateArtifactUpdate,
  buildDeleteArtifactUpdate: builders.buildDeleteArtifactUpdate,
  buildRelationshipUpdatedEvent: builders.buildRelationshipUpdatedEvent,
  buildNewFeedPostUpdate: builders.buildNewFeedPostUpdate,
  buildKVBatchUpdateUpdate: builders.buildKVBatchUpdateUpdate,
  // Added by Happy in 2026 (builders-2026.json).
  buildDeleteMachineUpdate: builders.buildDeleteMachineUpdate,
  buildSessionEventEphemeral: builders.buildSessionEventEphemeral,
} satisfies Record<keyof HappyBuilders, unknown>;

/** Undo the fixture's tags: `$date` -> Date, `$bytes` -> Uint8Array, `$undefined` -> undefined. */
function decodeArg(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(decodeArg);
  if (typeof value !== "object" || value === null) return value;
  const obj = value as Record<string, unknown>;
  const keys = Object.keys(obj);
  if (keys.length === 1 && keys[0] === "$date") return new Date(obj.$date as number);
  if (keys.length === 1 && keys[0] === "$bytes")
    return new Uint8Array(Buffer.from(obj.$bytes as string, "base64"));
  if (keys.length === 1 && keys[0] === "$undefined") return undefined;
  return Object.fromEntries(keys.map((key) => [key, decodeArg(obj[key])]));
}

function build(c: Case) {
  const builder = BUILDERS[c.builder];
  assert.ok(builder, `no builder ${c.builder}`);
  return builder(...(decodeArg(c.args) as never[])) as ReturnType<typeof fromHappyJson>;
}

const schemaOf = (payload: ReturnType<typeof fromHappyJson>) =>
  payload.$typeName === UpdatePayloadSchema.typeName ? UpdatePayloadSchema : EphemeralPayloadSchema;

test("the fixtures cover every builder, none dropped", () => {
  assert.deepEqual(new Set(CASES.map((c) => c.builder)), new Set(Object.keys(BUILDERS)));
  assert.equal(CASES.length, 36); // 32 seed cases + 4 of 2026
});

test("the fixtures cover every modelled kind", () => {
  const modelled = [UpdatePayloadSchema.field.body?.message, EphemeralPayloadSchema]
    .flatMap((schema) => schema?.oneofs[0]?.fields ?? [])
    .filter((field) => field.name !== "raw")
    .map((field) => field.name.replaceAll("_", "-"))
    .sort();
  assert.equal(modelled.length, 19); // 14 updates + 5 ephemerals
  const kinds = new Set(
    CASES.map((c) => {
      const body = c.output.body;
      return typeof body === "object" && body !== null
        ? (body as { t: string }).t
        : (c.output.type as string);
    }),
  );
  assert.deepEqual([...kinds].sort(), modelled);
});

describe("builder output is Happy's JSON byte for byte", () => {
  CASES.forEach((c, i) => {
    const id = `${String(i).padStart(2, "0")}-${c.builder}`;
    test(id, () => {
      const payload = build(c);
      assert.equal(JSON.stringify(toHappyJson(payload)), JSON.stringify(c.output));
      const decoded = fromHappyJson(c.output);
      const schema = schemaOf(payload);
      assert.ok(
        equals(schema as never, decoded as never, payload as never),
        "fromHappyJson(output) != builder",
      );
    });
    test(`${id} survives protobuf bytes`, () => {
      // What a subscriber sees after the gRPC hop: serialize, parse, render.
      const payload = build(c);
      const schema = schemaOf(payload);
      const clone = fromBinary(schema as never, toBinary(schema as never, payload as never));
      assert.equal(JSON.stringify(toHappyJson(clone as never)), JSON.stringify(c.output));
    });
  });
});
