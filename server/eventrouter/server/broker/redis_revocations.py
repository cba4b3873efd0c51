"""Cluster state kept beside the control stream: revocations and the live nodes.

Both keys carry the control tag (``%ctl``), so they live on one slot::

    <prefix>:{%ctl}:revoked   sorted set: token id (jti) -> until when (Unix ms) it is refused
    <prefix>:{%ctl}:nodes     hash: node id -> "<lease end, Redis ms>\\n<streams it holds>"

A Disconnect that revokes a token id adds it to ``revoked`` (``ZADD GT``: a
later expiry wins, an earlier one never shortens it) before it is broadcast;
a node reads the whole set when it starts, after subscribing to the control
channel, so a revocation is either in what it read or in a broadcast it hears.
Entries past their time are removed by the next store or read.

``nodes`` is node presence: each node re-announces itself with its presence
refresh (every ``presence_refresh``), its lease running ``presence_ttl``
ahead, as the per-user ``n:<node>`` leases do; a node whose lease ran out
(crashed, partitioned) is removed by the next reader.
"""

from __future__ import annotations

from eventrouter.server.broker.redis_scripts import CONTROL_TAG, StreamKeys

_NOW_MS = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS: revoked   ARGV: token id, until (Unix ms)
STORE = (
    _NOW_MS
    + r"""
redis.call('ZADD', KEYS[1], 'GT', ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
return 1
"""
)

# KEYS: revoked   Returns {token id, until ms, ...} of the revocations in force.
LOAD = (
    _NOW_MS
    + r"""
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
return redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
"""
)

# KEYS: nodes   ARGV: this node ("" = only read), presence ttl ms, streams it holds
# Returns {node, streams, ...} of the live nodes; removes the others.
NODES = (
    _NOW_MS
    + r"""
local ttl = tonumber(ARGV[2])
if ARGV[1] ~= '' then
  redis.call('HSET', KEYS[1], ARGV[1], (now + ttl) .. '\n' .. ARGV[3])
  redis.call('PEXPIRE', KEYS[1], ttl)
end
local raw = redis.call('HGETALL', KEYS[1])
local out, dead = {}, {}
for i = 1, #raw, 2 do
  local a = string.find(raw[i + 1], '\n', 1, true)
  if tonumber(string.sub(raw[i + 1], 1, a - 1)) >= now then
    out[#out + 1] = raw[i]
    out[#out + 1] = string.sub(raw[i + 1], a + 1)
  else
    dead[#dead + 1] = raw[i]
  end
end
if #dead > 0 then redis.call('HDEL', KEYS[1], unpack(dead)) end
return out
"""
)


def control_key(prefix: str, name: str) -> str:
    return f"{StreamKeys(prefix, CONTROL_TAG).base}:{name}"
