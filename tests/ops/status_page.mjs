// Loads the eventrouter status page in a real headless chromium and reads its
// live numbers from the DOM twice, waiting (with a deadline) for them to move.
//
//   node tests/ops/status_page.mjs URL SCREENSHOT.png
//
// Prints one JSON line: {"first": {...}, "second": {...}, "errors": [...]}.
// Uses Debian's chromium (CHROMIUM overrides /usr/bin/chromium) through
// playwright-core: no browser is ever downloaded.
import { launchChromium } from "../support/chromium.mjs";

const [url, screenshot] = process.argv.slice(2);
if (!url || !screenshot) {
  console.error("usage: node status_page.mjs URL SCREENSHOT");
  process.exit(2);
}
const DEADLINE_MS = 20000;

const browser = await launchChromium({ viewport: { width: 1280, height: 960 } });
const { context } = browser;
const errors = [];
try {
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(`console: ${m.text()}`);
  });
  page.on("requestfailed", (r) => errors.push(`requestfailed: ${r.url()}`));
  await page.goto(url, { waitUntil: "load", timeout: DEADLINE_MS });

  const read = () =>
    page.evaluate(() => {
      const text = (id) => document.getElementById(id).textContent;
      const num = (id) => Number(text(id).replace(/,/g, ""));
      return {
        nodeId: text("node-id"),
        health: text("health"),
        refreshes: num("refreshes"),
        eventsPerSecond: num("events-per-second"),
        deliveriesPerSecond: num("deliveries-per-second"),
        updates: num("updates-total"),
        deliveries: num("deliveries-total"),
        streams: num("streams-total"),
        streamsUser: num("streams-user"),
        streamsSession: num("streams-session"),
        streamsMachine: num("streams-machine"),
        slowest: [...document.querySelectorAll("#slowest tbody tr")].map((row) =>
          [...row.cells].map((c) => c.textContent),
        ),
      };
    });

  // First reading: once the page has rendered live data with traffic in it.
  await page.waitForFunction(
    () =>
      Number(document.getElementById("refreshes").textContent) >= 1 &&
      Number(document.getElementById("updates-total").textContent.replace(/,/g, "")) > 0,
    null,
    { timeout: DEADLINE_MS },
  );
  const first = await read();
  // Second reading: after at least one more refresh has shown more traffic,
  // and the rate has a value (it needs two samples a second apart).
  await page.waitForFunction(
    (prev) => {
      const num = (id) => Number(document.getElementById(id).textContent.replace(/,/g, ""));
      return (
        num("refreshes") > prev.refreshes &&
        num("updates-total") > prev.updates &&
        num("events-per-second") > 0
      );
    },
    first,
    { timeout: DEADLINE_MS },
  );
  const second = await read();
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log(JSON.stringify({ first, second, errors }));
} finally {
  await browser.close();
}
