"""The status page: one self-contained HTML document (inline CSS and JS, no build step).

It fetches ``/status.json`` every second and fills the page in.  No external
asset is loaded; the Content-Security-Policy sent with it allows only this
page's own inline script (by hash) and fetches to the same origin.
"""

from __future__ import annotations

import base64
import hashlib

_STYLE = """
:root { color-scheme: light dark; --ok: #1a7f37; --bad: #cf222e; --muted: #6e7781;
  --card: rgba(127,127,127,.08); --line: rgba(127,127,127,.25); }
* { box-sizing: border-box; }
body { font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif;
  margin: 0; padding: 20px 28px; }
header { display: flex; align-items: baseline; gap: 16px; flex-wrap: wrap; margin-bottom: 16px; }
h1 { font-size: 20px; margin: 0; }
h2 { font-size: 15px; margin: 22px 0 8px; }
.muted { color: var(--muted); }
.pill { padding: 2px 10px; border-radius: 999px; font-weight: 600; color: #fff;
  background: var(--muted); }
.pill.ok { background: var(--ok); } .pill.bad { background: var(--bad); }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 12px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px;
  padding: 10px 14px; }
.card .label { color: var(--muted); font-size: 12px; text-transform: uppercase;
  letter-spacing: .04em; }
.card .value { font-size: 26px; font-weight: 650; font-variant-numeric: tabular-nums; }
.card .sub { font-size: 12px; color: var(--muted); font-variant-numeric: tabular-nums; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 5px 10px; border-bottom: 1px solid var(--line); }
th { font-size: 12px; color: var(--muted); text-transform: uppercase; }
td.num, th.num { text-align: right; }
code { font: 12px ui-monospace, SFMono-Regular, Menlo, monospace; }
#error { color: var(--bad); font-weight: 600; }
"""

_BODY = """
<header>
  <h1>eventrouter</h1>
  <span>node <code id="node-id">…</code></span>
  <span id="health" class="pill">…</span>
  <span class="muted">updated <span id="updated">never</span>
    · refresh #<span id="refreshes">0</span> · up <span id="uptime">0</span> s</span>
  <span id="error"></span>
</header>

<h2>Nodes</h2>
<table id="nodes"><thead><tr><th>node</th><th>health</th><th>streams</th></tr></thead>
<tbody></tbody></table>

<h2>Traffic <span class="muted" id="window"></span></h2>
<div class="grid">
  <div class="card"><div class="label">events / s</div>
    <div class="value" id="events-per-second">0</div>
    <div class="sub"><span id="updates-total">0</span> updates ·
      <span id="ephemerals-total">0</span> ephemerals</div></div>
  <div class="card"><div class="label">deliveries / s</div>
    <div class="value" id="deliveries-per-second">0</div>
    <div class="sub"><span id="deliveries-total">0</span> in total</div></div>
  <div class="card"><div class="label">duplicates</div>
    <div class="value" id="duplicates-total">0</div></div>
  <div class="card"><div class="label">resumes</div>
    <div class="value" id="resumes-ok">0</div>
    <div class="sub"><span id="resumes-failed">0</span> failed</div></div>
</div>

<h2>Open streams</h2>
<div class="grid">
  <div class="card"><div class="label">total</div>
    <div class="value" id="streams-total">0</div></div>
  <div class="card"><div class="label">user-scoped</div>
    <div class="value" id="streams-user">0</div></div>
  <div class="card"><div class="label">session-scoped</div>
    <div class="value" id="streams-session">0</div></div>
  <div class="card"><div class="label">machine-scoped</div>
    <div class="value" id="streams-machine">0</div></div>
</div>

<h2>Drops</h2>
<div class="grid">
  <div class="card"><div class="label">ephemerals dropped</div>
    <div class="value" id="drops-ephemeral">0</div>
    <div class="sub"><span id="drops-per-second">0</span> / s</div></div>
  <div class="card"><div class="label">closed too slow</div>
    <div class="value" id="drops-too-slow">0</div></div>
</div>

<h2>Slowest consumers <span class="muted" id="hashed-note"></span></h2>
<table id="slowest">
  <thead><tr><th>connection</th><th>scope</th><th>user</th><th class="num">queue depth</th>
    <th class="num">pending bytes</th><th class="num">dropped</th><th class="num">delivered</th>
  </tr></thead>
  <tbody></tbody>
</table>
"""

_SCRIPT = """
"use strict";
const $ = (id) => document.getElementById(id);
const fmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });
let refreshes = 0;

function setText(id, value) {
  const text = typeof value === "number" ? fmt.format(value) : String(value);
  const el = $(id);
  if (el.textContent !== text) el.textContent = text;
}

function cell(row, text, cls) {
  const td = document.createElement("td");
  if (cls) td.className = cls;
  td.textContent = text;
  row.appendChild(td);
  return td;
}

function render(s) {
  refreshes += 1;
  setText("refreshes", refreshes);
  setText("node-id", s.node_id);
  const healthy = s.nodes.every((n) => n.healthy);
  const pill = $("health");
  pill.textContent = healthy ? "SERVING" : "NOT SERVING";
  pill.className = "pill " + (healthy ? "ok" : "bad");
  setText("updated", new Date(s.time_ms).toLocaleTimeString());
  setText("uptime", Math.round(s.uptime_s));
  setText("window", "(last " + fmt.format(s.rates.window_s) + " s)");
  setText("events-per-second", s.rates.events_per_second);
  setText("deliveries-per-second", s.rates.deliveries_per_second);
  setText("drops-per-second", s.rates.drops_per_second);
  setText("updates-total", s.totals.updates_emitted);
  setText("ephemerals-total", s.totals.ephemerals_emitted);
  setText("deliveries-total", s.totals.deliveries);
  setText("duplicates-total", s.totals.duplicates);
  setText("resumes-ok", s.totals.resumes_ok);
  setText("resumes-failed", s.totals.resumes_failed);
  setText("streams-total", s.open_streams.total);
  setText("streams-user", s.open_streams.user);
  setText("streams-session", s.open_streams.session);
  setText("streams-machine", s.open_streams.machine);
  setText("drops-ephemeral", s.drops.ephemeral_dropped);
  setText("drops-too-slow", s.drops.too_slow);
  setText("hashed-note", s.user_ids_hashed ? "(user ids hashed)" : "");

  const nodes = $("nodes").tBodies[0];
  nodes.replaceChildren();
  for (const n of s.nodes) {
    const row = nodes.insertRow();
    cell(row, n.id + (n.self ? " (this node)" : ""));
    cell(row, n.healthy ? "serving" : "not serving");
    cell(row, n.streams);
  }
  const body = $("slowest").tBodies[0];
  body.replaceChildren();
  for (const c of s.slowest_consumers) {
    const row = body.insertRow();
    cell(row, c.connection_id).className = "conn";
    cell(row, c.scope);
    cell(row, c.user_id);
    cell(row, fmt.format(c.depth), "num");
    cell(row, fmt.format(c.pending_bytes), "num");
    cell(row, fmt.format(c.dropped_ephemeral), "num");
    cell(row, fmt.format(c.delivered), "num");
  }
  if (s.slowest_consumers.length === 0) {
    cell(body.insertRow(), "no open streams").colSpan = 7;
  }
}

async function refresh() {
  try {
    const response = await fetch("status.json", { cache: "no-store" });
    if (!response.ok) throw new Error("HTTP " + response.status);
    render(await response.json());
    setText("error", "");
  } catch (e) {
    setText("error", "cannot reach the node: " + e.message);
  } finally {
    setTimeout(refresh, 1000);
  }
}
refresh();
"""

PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>eventrouter status</title>
<link rel="icon" href="data:,">
<style>{_STYLE}</style>
</head>
<body>
{_BODY}
<script>{_SCRIPT}</script>
</body>
</html>
""".encode()


def _csp_hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


# Only this page's own script and style run; data comes from the same origin only.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; "
    f"script-src {_csp_hash(_SCRIPT)}; "
    f"style-src {_csp_hash(_STYLE)}; "
    "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)

__all__ = ["CONTENT_SECURITY_POLICY", "PAGE"]
