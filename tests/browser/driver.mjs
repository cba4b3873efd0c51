// Drives Debian's chromium for the browser tests (tests/browser/harness.py),
// one browser for a whole test module, over a line protocol: one JSON command
// per line on stdin, one JSON answer per line on stdout, matched by `id`.
//
//   {"id": 1, "op": "open", "page": "a", "url": "http://127.0.0.1:8000/"}
//   {"id": 2, "op": "call", "page": "a", "fn": "subscribe", "args": ["s", {...}]}
//   {"id": 1, "ok": true, "value": ...}   or   {"id": 2, "ok": false, "error": "..."}
//
// Commands run concurrently. Ops:
//   open     a new tab on `url`; waits for the page's script (window.harness)
//   reload   reload the tab (every connection it holds drops); waits for its script
//   call     window.harness[fn](...args) in the page; its result
//   console  the page's console messages and page errors so far
//   offline  take the browser off (true) or back on (false) the network
//   protocols  the HTTP version of each response the page received ({url: "h2"})
//   close    close the tab
// chromium's extra flags come as the command line's arguments.
import { createInterface } from "node:readline";
import { launchChromium } from "../support/chromium.mjs";

const browser = await launchChromium({ args: process.argv.slice(2) });
const pages = new Map();

async function open(name, url) {
  const page = await browser.context.newPage();
  const entry = { page, console: [], protocols: {} };
  pages.set(name, entry);
  page.on("console", (m) => entry.console.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => entry.console.push(`pageerror: ${e.message}`));
  // What each response came over: only the DevTools protocol says (h2, http/1.1).
  const cdp = await browser.context.newCDPSession(page);
  cdp.on("Network.responseReceived", ({ response }) => {
    entry.protocols[response.url] = response.protocol;
  });
  await cdp.send("Network.enable");
  await page.goto(url, { waitUntil: "load", timeout: 20_000 });
  await ready(page);
}

const ready = (page) => page.waitForFunction(() => window.harnessReady === true, null, { timeout: 10_000 });

const ops = {
  open: ({ page, url }) => open(page, url),
  call: ({ page, fn, args }) =>
    pages.get(page).page.evaluate(([f, a]) => window.harness[f](...a), [fn, args ?? []]),
  reload: async ({ page }) => {
    const { page: tab } = pages.get(page);
    await tab.reload({ waitUntil: "load", timeout: 20_000 });
    await ready(tab);
  },
  console: ({ page }) => pages.get(page).console,
  offline: ({ value }) => browser.context.setOffline(value),
  protocols: ({ page }) => pages.get(page).protocols,
  close: async ({ page }) => {
    await pages.get(page).page.close();
    pages.delete(page);
  },
};

function answer(message) {
  process.stdout.write(`${JSON.stringify(message)}\n`);
}

const running = new Set();
for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const command = JSON.parse(line);
  const task = (async () => {
    try {
      const op = ops[command.op];
      if (!op) throw new Error(`unknown op ${command.op}`);
      answer({ id: command.id, ok: true, value: (await op(command)) ?? null });
    } catch (error) {
      answer({ id: command.id, ok: false, error: String(error?.stack ?? error) });
    }
  })();
  running.add(task);
  task.finally(() => running.delete(task));
}
// stdin closed: the test is done.
await Promise.allSettled(running);
await browser.close();
