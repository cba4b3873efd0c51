"""What the Redis broker keeps in Redis, and the Lua scripts that change it.

Every key of one user carries the same hash tag, so in a Redis Cluster they
live on one slot and one script can touch them all atomically::

    <prefix>:{<user>}:epoch   the stream's epoch (random, set once; gone = history lost)
    <prefix>:{<user>}:head    last offset handed out (INCR)
    <prefix>:{<user>}:log     a Stream: entry "<offset>-0" = {p: payload, r: route, t: stored ms}
    <prefix>:{<user>}:conns   presence: "c:<connection>" -> node, scope, opened ms;
                              "n:<node>" -> until when (Redis ms) that node's entries count
    <prefix>:{<user>}:idem:<u|e>:<key>   result of an emit, for the idempotency window
    <prefix>:{<user>}:ch      the sharded pub/sub channel every emit is published on

A user id containing ``{`` or ``}`` (or starting with ``%``) is hex-encoded
behind ``%`` so it cannot escape its tag.  The control stream (cluster-wide
Disconnect) uses the tag ``%ctl``, which no encoded user id can produce.

A *route* is the recipient filter and skipped connection in a compact form,
``<kind>\\n<id>\\n<skip>`` (ids never hold whitespace): the same string is kept in
the log, sent with the live message and matched by the emit script against
presence to count ``reached``.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from typing import Any

from eventrouter.server.broker.base import EmitItem
from eventrouter.server.core.filters import (
    ALL_CONNECTIONS,
    AllInterestedInSession,
    AllUserAuthenticatedConnections,
    MachineOnly,
    MachineScopedOnly,
    RecipientFilter,
    UserScopedOnly,
)
from eventrouter.server.core.history import new_epoch
from eventrouter.v1 import events_pb2

CONTROL_TAG = "%ctl"


def user_tag(user_id: str) -> str:
    if "{" in user_id or "}" in user_id or user_id.startswith("%"):
        return "%" + user_id.encode().hex()
    return user_id


class StreamKeys:
    """The keys and channel of one user's stream (or of the control stream)."""

    __slots__ = ("base", "channel", "conns", "epoch", "head", "log")

    def __init__(self, prefix: str, tag: str) -> None:
        self.base = base = f"{prefix}:{{{tag}}}"
        self.epoch = base + ":epoch"
        self.head = base + ":head"
        self.log = base + ":log"
        self.conns = base + ":conns"
        self.channel = (base + ":ch").encode()

    def idem(self, kind: str, key: str) -> str:
        # Long keys are hashed: a caller cannot make us store megabyte key names.
        name = "#" + hashlib.sha256(key.encode()).hexdigest() if len(key) > 128 else "=" + key
        return f"{self.base}:idem:{kind}:{name}"


# -- routes ------------------------------------------------------------------


def encode_route(target: RecipientFilter, skip: str | None) -> bytes:
    match target:
        case AllUserAuthenticatedConnections():
            kind, ident = "a", ""
        case UserScopedOnly():
            kind, ident = "u", ""
        case AllInterestedInSession(session_id=ident):
            kind = "s"
        case MachineScopedOnly(machine_id=ident):
            kind = "m"
        case MachineOnly(machine_id=ident):
            kind = "o"
    return f"{kind}\n{ident}\n{skip or ''}".encode()


@functools.lru_cache(maxsize=4096)
def decode_route(route: bytes) -> tuple[RecipientFilter, str | None]:
    kind, ident, skip = route.decode().split("\n", 2)
    target: RecipientFilter
    if kind == "a":
        target = ALL_CONNECTIONS
    elif kind == "u":
        target = UserScopedOnly()
    elif kind == "s":
        target = AllInterestedInSession(ident)
    elif kind == "m":
        target = MachineScopedOnly(ident)
    elif kind == "o":
        target = MachineOnly(ident)
    else:
        raise ValueError(f"unknown route kind {kind!r}")
    return target, skip or None


# -- live messages -------------------------------------------------------------


class LiveOpen:
    """A connection of the user opened here, in the user's message order."""

    __slots__ = ("connection_id",)

    def __init__(self, connection_id: str) -> None:
        self.connection_id = connection_id


# A live message is ``o<connection id>`` (an open mark) or one EMIT call's
# events for the user, in order: ``b<epoch>\n`` then per event
# ``u<offset>:<route len>:<payload len>:<route><payload>`` (update) or
# ``e<route len>:<payload len>:<route><payload>`` (ephemeral).  The reader
# walks it in place (redis_watch.WatchDelivery.on_batch): no object per event
# but its frame.
BATCH = 0x62  # b"b"[0]
UPDATE = 0x75  # b"u"[0]


def parse_open(data: bytes) -> LiveOpen:
    if data[:1] != b"o":
        raise ValueError(f"unknown message kind {data[:1]!r}")
    return LiveOpen(data[1:].decode())


# -- scripts -----------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def script_sha(script: str) -> str:
    """What EVALSHA calls a script by."""
    return hashlib.sha1(script.encode()).hexdigest()


_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Ensures the epoch exists; a missing epoch or head means the stream's history
# is gone (expired, evicted or Redis lost its data): start a new epoch, so a
# resume from the old one fails with EPOCH_CHANGED instead of skipping a hole.
_ENSURE_EPOCH = """
local function ensure_epoch(candidate)
  local epoch = redis.call('GET', KEYS[1])
  if epoch and redis.call('EXISTS', KEYS[2]) == 1 then return epoch end
  redis.call('SET', KEYS[1], candidate)
  redis.call('SET', KEYS[2], 0)
  redis.call('DEL', KEYS[3])
  return candidate
end
"""

# KEYS: epoch, head, log, conns, channel, idempotency keys...
# ARGV: candidate epoch, max updates, history ttl ms (0 = none), idempotency window ms,
#       item count, then per item: kind (u|e), idempotency key index (0 = none), route, payload
# Returns per item "<duplicate 0|1>\n<reached>\n<offset>\n<epoch>".
EMIT = (
    _NOW
    + _ENSURE_EPOCH
    + """
local max_updates, ttl = tonumber(ARGV[2]), tonumber(ARGV[3])
local window, n = tonumber(ARGV[4]), tonumber(ARGV[5])
local live = nil
local function load_presence()
  local raw = redis.call('HGETALL', KEYS[4])
  local nodes, conns = {}, {}
  for i = 1, #raw, 2 do
    local kind = string.sub(raw[i], 1, 2)
    if kind == 'n:' then
      if tonumber(raw[i + 1]) >= now then nodes[string.sub(raw[i], 3)] = true end
    elseif kind == 'c:' then
      conns[#conns + 1] = {string.sub(raw[i], 3), raw[i + 1]}
    end
  end
  local out = {}
  for _, c in ipairs(conns) do
    local a = string.find(c[2], '\\n', 1, true)
    local b = string.find(c[2], '\\n', a + 1, true)
    if nodes[string.sub(c[2], 1, a - 1)] then
      out[#out + 1] = {c[1], string.sub(c[2], a + 1, b - 1)}
    end
  end
  return out
end
local function count(route)
  local a = string.find(route, '\\n', 1, true)
  local b = string.find(route, '\\n', a + 1, true)
  local kind, id = string.sub(route, 1, a - 1), string.sub(route, a + 1, b - 1)
  local skip = string.sub(route, b + 1)
  local reached = 0
  for _, c in ipairs(live) do
    local scope, ok = c[2], false
    if kind == 'a' then ok = true
    elseif kind == 'u' then ok = scope == 'user'
    elseif kind == 's' then ok = scope == 'user' or scope == 'session:' .. id
    elseif kind == 'm' then ok = scope == 'user' or scope == 'machine:' .. id
    elseif kind == 'o' then ok = scope == 'machine:' .. id
    end
    if ok and c[1] ~= skip then reached = reached + 1 end
  end
  return reached
end
local epoch = nil
local results, events = {}, {}
for i = 0, n - 1 do
  local kind, idem = ARGV[6 + 4 * i], tonumber(ARGV[7 + 4 * i])
  local route, payload = ARGV[8 + 4 * i], ARGV[9 + 4 * i]
  local idem_key = nil
  if idem > 0 and window > 0 then idem_key = KEYS[5 + idem] end
  local earlier = idem_key and redis.call('GET', idem_key)
  if earlier then
    results[#results + 1] = '1\\n' .. earlier
  else
    if live == nil then live = load_presence() end
    local stored
    if kind == 'u' then
      if epoch == nil then epoch = ensure_epoch(ARGV[1]) end
      local offset = redis.call('INCR', KEYS[2])
      if max_updates > 0 then
        redis.call('XADD', KEYS[3], 'MAXLEN', '~', max_updates, offset .. '-0',
          'p', payload, 'r', route, 't', now)
      end
      events[#events + 1] = 'u' .. offset .. ':' .. #route .. ':' .. #payload .. ':' .. route
      stored = count(route) .. '\\n' .. offset .. '\\n' .. epoch
    else
      events[#events + 1] = 'e' .. #route .. ':' .. #payload .. ':' .. route
      stored = count(route) .. '\\n0\\n'
    end
    events[#events + 1] = payload
    if idem_key then redis.call('SET', idem_key, stored, 'PX', window) end
    results[#results + 1] = '0\\n' .. stored
  end
end
if #events > 0 then
  -- One message for all of them: the user's order, one read per node.
  redis.call('SPUBLISH', KEYS[5], 'b' .. (epoch or '') .. '\\n' .. table.concat(events))
end
if epoch ~= nil and ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('PEXPIRE', KEYS[3], ttl)
end
return results
"""
)


@functools.lru_cache(maxsize=4096)
def stream_keys(prefix: str, user_id: str) -> StreamKeys:
    """A user's keys, made once for the users emitted to most."""
    return StreamKeys(prefix, user_tag(user_id))


def emit_call(
    keys: StreamKeys,
    items: Sequence[EmitItem],
    max_updates: int,
    history_ttl_ms: int,
    window_ms: int,
    epoch: str = "",
) -> tuple[list[str], list[Any]]:
    """EMIT's KEYS and ARGV for one user's items, laid out as the script reads them.

    ``epoch``: the candidate epoch (one per batch will do: it only has to differ
    from the user's earlier ones); a new one if not given.
    """
    key_list = [keys.epoch, keys.head, keys.log, keys.conns, keys.channel.decode()]
    args: list[Any] = [epoch or new_epoch(), max_updates, history_ttl_ms, window_ms, len(items)]
    for item in items:
        idem: str | None
        payload = item.payload
        if isinstance(payload, events_pb2.UpdatePayload):
            kind, idem = "u", payload.id
        else:
            kind, idem = "e", item.idempotency_key
        index = 0
        if idem is not None and window_ms > 0:
            key_list.append(keys.idem(kind, idem))
            index = len(key_list) - 5
        route = encode_route(item.recipient_filter, item.skip_connection_id)
        args += (kind, index, route, item.data or payload.SerializeToString())
    return key_list, args


# Opening a connection: ensure the epoch, record presence, read the position
# and (resuming) the log after it, all at one instant, and mark that instant
# in the user's message order ("o<connection>" on the channel): an ephemeral
# published before the mark was emitted before the connection opened.
# KEYS: epoch, head, log, conns, channel
# ARGV: candidate epoch, history ttl ms (0 = none), connection field ("" = no presence),
#       connection value, node field, presence ttl ms, resume offset (-1 = none)
# Returns {epoch, head, now ms, entries}.
OPEN = (
    _NOW
    + _ENSURE_EPOCH
    + """
local epoch = ensure_epoch(ARGV[1])
local head = tonumber(redis.call('GET', KEYS[2]))
local ttl, presence_ttl = tonumber(ARGV[2]), tonumber(ARGV[6])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
end
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[4], ARGV[3], ARGV[4], ARGV[5], now + presence_ttl)
  redis.call('PEXPIRE', KEYS[4], presence_ttl)
  redis.call('SPUBLISH', KEYS[5], 'o' .. string.sub(ARGV[3], 3))
end
local after = tonumber(ARGV[7])
local entries = {}
if after >= 0 and after < head then
  entries = redis.call('XRANGE', KEYS[3], (after + 1) .. '-0', '+', 'COUNT', head - after)
end
return {epoch, head, now, entries}
"""
)

# Reading the log after an offset, changing nothing (recovery, gap fill).
# KEYS: epoch, head, log   ARGV: after offset
# Returns {epoch or "" (history gone), head, now ms, entries}.
READ = (
    _NOW
    + """
local epoch = redis.call('GET', KEYS[1]) or ''
local head = tonumber(redis.call('GET', KEYS[2]) or '0')
local after = tonumber(ARGV[1])
local entries = {}
if epoch ~= '' and after < head then
  entries = redis.call('XRANGE', KEYS[3], (after + 1) .. '-0', '+', 'COUNT', head - after)
end
return {epoch, head, now, entries}
"""
)

# This node still holds these connections of the user: (re)announce them, say
# the node is alive until now + ttl, and keep the user's stream alive.  Nothing
# is deleted here (a refresh racing an open must not hide it); closed
# connections are removed by HDEL, retried until it succeeds.
# KEYS: conns, epoch, head   ARGV: node, presence ttl ms, history ttl ms, field, value, ...
REFRESH = (
    _NOW
    + """
local node, presence_ttl, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
if #ARGV >= 5 then redis.call('HSET', KEYS[1], unpack(ARGV, 4)) end
redis.call('HSET', KEYS[1], 'n:' .. node, now + presence_ttl)
redis.call('PEXPIRE', KEYS[1], presence_ttl)
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[2], ttl)
  redis.call('PEXPIRE', KEYS[3], ttl)
end
return 1
"""
)

# A user's connections on every live node; entries of expired nodes are removed.
# KEYS: conns   Returns {field, value, ...} of the live ones.
PRESENCE = (
    _NOW
    + """
local raw = redis.call('HGETALL', KEYS[1])
local live, dead = {}, {}
for i = 1, #raw, 2 do
  if string.sub(raw[i], 1, 2) == 'n:' then
    if tonumber(raw[i + 1]) >= now then live[string.sub(raw[i], 3)] = true
    else dead[#dead + 1] = raw[i] end
  end
end
local out = {}
for i = 1, #raw, 2 do
  if string.sub(raw[i], 1, 2) == 'c:' then
    local a = string.find(raw[i + 1], '\\n', 1, true)
    if live[string.sub(raw[i + 1], 1, a - 1)] then
      out[#out + 1] = raw[i]
      out[#out + 1] = raw[i + 1]
    else
      dead[#dead + 1] = raw[i]
    end
  end
end
if #dead > 0 then redis.call('HDEL', KEYS[1], unpack(dead)) end
return out
"""
)
