// Node.js subscribers for the eventrouter's web listener (target
// `eventrouter-web`): Subscribe over the Connect protocol's streaming framing
// (`application/connect+proto`) on HTTP/1.1, each stream its own TCP
// connection, as a browser's or React Native app's `fetch` would hold it.
// Same spec files, line protocol and results as grpc/client.mjs's `sub`
// (../streams.mjs), and the same reader of the responses' bytes
// (../proto.mjs): only the transport differs, so the client's cost per event
// is alike and the server is what differs.
//
//   node bench/peers/web/client.mjs sub SPEC.json
//
// It speaks the protocol with node:http itself rather than through
// @connectrpc/connect-node: that client decodes every message whole (about
// as much CPU per event as the router spends) and would need protobuf-es code
// generated for the bench; the wire is the same (an enveloped request, then
// enveloped messages and an end-of-stream envelope of JSON, see
// server/eventrouter/server/transports/web_protocol.py).

import http from "node:http";
import { readFileSync } from "node:fs";
import { USER_ID_METADATA_KEY, scopeOf, type } from "../proto.mjs";
import { eventReader, holdStreams, streamOf } from "../streams.mjs";

const PATH = "/eventrouter.v1.EventRouterService/Subscribe";
const END_STREAM = 0x02;
const SubscribeRequest = type("SubscribeRequest");
const SubscribeResponse = type("SubscribeResponse");

function envelope(bytes) {
  const out = Buffer.alloc(5 + bytes.length);
  out.writeUInt32BE(bytes.length, 1);
  out.set(bytes, 5);
  return out;
}

/** Calls onMessage(flags, bytes) for each whole envelope of the chunks it is fed. */
function envelopes(onMessage) {
  let pending = null;
  return (chunk) => {
    let buf = pending === null ? chunk : Buffer.concat([pending, chunk]);
    let at = 0;
    while (buf.length - at >= 5) {
      const size = buf.readUInt32BE(at + 1);
      if (buf.length - at - 5 < size) break;
      onMessage(buf[at], buf.subarray(at + 5, at + 5 + size));
      at += 5 + size;
    }
    pending = at === buf.length ? null : buf.subarray(at);
    buf = null;
  };
}

// Resolves with the stream once its first message (ConnectionOpened) arrived.
const start = (conn, target, stats) =>
  new Promise((resolve, reject) => {
    const s = streamOf(conn);
    const colon = target.lastIndexOf(":");
    const body = envelope(SubscribeRequest.encode({ scope: scopeOf(conn) }).finish());
    const read = eventReader(s, stats);
    let opened = false;
    const fail = (message) => {
      if (!s.error) s.error = message;
      if (!opened) reject(new Error(`${conn.index}: ${message}`));
    };
    const request = http.request({
      host: target.slice(0, colon),
      port: Number(target.slice(colon + 1)),
      method: "POST",
      path: PATH,
      agent: false, // a connection of its own, closed with the stream
      headers: {
        "content-type": "application/connect+proto",
        "connect-protocol-version": "1",
        "content-length": body.length,
        [USER_ID_METADATA_KEY]: conn.user,
      },
    });
    request.on("response", (response) => {
      if (response.statusCode !== 200) {
        fail(`HTTP ${response.statusCode}`);
        response.resume();
        return;
      }
      const feed = envelopes((flags, bytes) => {
        if (flags & END_STREAM) {
          const end = JSON.parse(bytes.toString() || "{}");
          fail(end.error ? `${end.error.code}: ${end.error.message}` : "EOF");
        } else if (opened) read(bytes);
        else {
          opened = true;
          s.connId = SubscribeResponse.decode(bytes).events[0].opened.connection_id;
          resolve(s);
        }
      });
      response.on("data", feed);
      response.on("end", () => fail("EOF"));
      response.on("error", (e) => fail(e.message));
    });
    request.on("error", (e) => fail(e.message));
    request.end(body);
  });

const [role, specPath] = process.argv.slice(2);
if (role === "sub") await holdStreams(JSON.parse(readFileSync(specPath, "utf8")), start);
else {
  process.stderr.write("usage: node bench/peers/web/client.mjs sub SPEC.json\n");
  process.exit(2);
}
