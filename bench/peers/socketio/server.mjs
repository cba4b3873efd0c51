// The Socket.IO peer: Happy's routing rule on a plain Socket.IO server.
//
// Usage: node server.mjs --port PORT
//
// What Happy runs today, made as strong as Socket.IO allows: a per-user index
// of connections by scope (as the eventrouter keeps), and each emit broadcast
// with io.to([socket ids]).except(skip), so the packet is encoded once for all
// recipients instead of once per socket.emit(). WebSocket transport only, no
// compression (Socket.IO's defaults for a server of this kind).
//
// A client's handshake auth says who it is:
//   {userId, scope: "user"|"session"|"machine", scopeId}   a subscriber
//   {service: true}                                         a producer
// Producers send "emit" ({userId, kind: "u"|"e", filter: [kind, id?], skip,
// payload}) or "emitBatch" ([emit, ...]) with an acknowledgement carrying
// {reached} per emit; subscribers receive "update" / "ephemeral" events.
// There is no authentication (as the eventrouter's --insecure mode).

import { Server } from "socket.io";

const args = process.argv.slice(2);
const port = Number(args[args.indexOf("--port") + 1]);

const io = new Server(port, {
  serveClient: false,
  transports: ["websocket"],
  perMessageDeflate: false,
  maxHttpBufferSize: 16 * 1024 * 1024,
});

// userId -> {all: Set<id>, user: Set<id>, sessions: Map<sid, Set<id>>, machines: Map<mid, Set<id>>}
const users = new Map();

function indexOf(userId) {
  let u = users.get(userId);
  if (!u) {
    u = { all: new Set(), user: new Set(), sessions: new Map(), machines: new Map() };
    users.set(userId, u);
  }
  return u;
}

function bucket(u, scope, scopeId, create) {
  if (scope === "user") return u.user;
  const map = scope === "session" ? u.sessions : u.machines;
  let set = map.get(scopeId);
  if (!set && create) {
    set = new Set();
    map.set(scopeId, set);
  }
  return set;
}

function select(u, filter) {
  switch (filter[0]) {
    case "all":
      return [...u.all];
    case "user_only":
      return [...u.user];
    case "session":
      return [...u.user, ...(u.sessions.get(filter[1]) ?? [])];
    case "machine_scoped":
      return [...u.user, ...(u.machines.get(filter[1]) ?? [])];
    case "machine_only":
      return [...(u.machines.get(filter[1]) ?? [])];
    default:
      return [];
  }
}

function route(emit) {
  const u = users.get(emit.userId);
  if (!u) return { reached: 0 };
  let ids = select(u, emit.filter);
  if (emit.skip) ids = ids.filter((id) => id !== emit.skip);
  if (ids.length) io.to(ids).emit(emit.kind === "u" ? "update" : "ephemeral", emit.payload);
  return { reached: ids.length };
}

io.on("connection", (socket) => {
  const auth = socket.handshake.auth ?? {};
  if (auth.service) {
    socket.on("emit", (emit, ack) => ack(route(emit)));
    socket.on("emitBatch", (emits, ack) => ack(emits.map(route)));
    return;
  }
  const { userId, scope, scopeId } = auth;
  const u = indexOf(userId);
  u.all.add(socket.id);
  bucket(u, scope, scopeId, true).add(socket.id);
  socket.on("disconnect", () => {
    u.all.delete(socket.id);
    const set = bucket(u, scope, scopeId, false);
    set?.delete(socket.id);
    if (set && set.size === 0 && scope !== "user") {
      (scope === "session" ? u.sessions : u.machines).delete(scopeId);
    }
    if (u.all.size === 0) users.delete(userId);
  });
});

process.on("SIGTERM", () => {
  io.close();
  process.exit(0);
});
process.stdout.write(`READY ${port}\n`);
