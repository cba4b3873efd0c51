// Debian's chromium driven by playwright-core, the way every browser test of
// the suite launches it: headless, in a throwaway profile, never a downloaded
// browser build (CHROMIUM overrides /usr/bin/chromium).
//
//   const browser = await launchChromium({ args: [...more flags] });
//   const page = await browser.context.newPage();
//   ...
//   await browser.close();   // closes chromium and removes the profile
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

export const CHROMIUM_FLAGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

export async function launchChromium({ args = [], ...options } = {}) {
  const userDataDir = await mkdtemp(join(tmpdir(), "eventrouter-chromium-"));
  let context;
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
      headless: true,
      args: [...CHROMIUM_FLAGS, ...args],
      ...options,
    });
  } catch (error) {
    await rm(userDataDir, { recursive: true, force: true });
    throw error;
  }
  return {
    context,
    async close() {
      await context.close();
      await rm(userDataDir, { recursive: true, force: true });
    },
  };
}
