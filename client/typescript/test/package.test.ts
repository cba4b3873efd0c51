/**
 * The package as users get it: ESM and CommonJS entries with the same exports,
 * types for each, and a browser bundle of the web entry with nothing of Node in it.
 */

import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { test } from "node:test";
import { build } from "esbuild";

const require = createRequire(import.meta.url);
const ENTRIES = ["@eventrouter/client", "@eventrouter/client/node", "@eventrouter/client/web"] as const;
const ROOT = new URL("../../", import.meta.url);

for (const entry of ENTRIES) {
  test(`${entry}: the CommonJS build exports what the ESM build does`, async () => {
    const esm = Object.keys(await import(entry)).sort();
    const cjs = Object.keys(require(entry) as object)
      .filter((name) => name !== "__esModule")
      .sort();
    assert.deepEqual(cjs, esm);
    for (const name of ["EventRouterClient", "toHappyJson", "buildNewMessageUpdate", "UpdatePayloadSchema"]) {
      assert.ok(esm.includes(name), `${entry} exports ${name}`);
    }
  });
}

test("every entry ships its type declarations, ESM and CommonJS", () => {
  for (const flavour of ["esm", "cjs"]) {
    for (const entry of ["index", "node", "web"]) {
      assert.ok(existsSync(new URL(`dist/${flavour}/${entry}.d.ts`, ROOT)), `dist/${flavour}/${entry}.d.ts`);
    }
  }
});

test("the web entry bundles for browsers, without Node's modules", async () => {
  const result = await build({
    stdin: {
      contents:
        'export { createEventRouterClient, toHappyJson, sessionScope } from "@eventrouter/client/web";',
      resolveDir: new URL(".", ROOT).pathname,
    },
    bundle: true,
    platform: "browser",
    format: "esm",
    write: false,
    metafile: true,
    logLevel: "silent",
  });
  const inputs = Object.keys(result.metafile.inputs);
  assert.ok(inputs.some((path) => path.includes("@connectrpc/connect-web")));
  assert.ok(!inputs.some((path) => path.includes("connect-node")), "connect-node is not in a browser bundle");
  const code = result.outputFiles[0]?.text ?? "";
  assert.doesNotMatch(code, /from\s*["']node:|require\(["']node:/);
});
