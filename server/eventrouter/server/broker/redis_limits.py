"""Limits counted across nodes in Redis: a user's streams, a service's emit rate.

Streams per user reuse presence (redis_presence): a user's streams are the
``c:<connection>`` fields of ``<prefix>:{<user>}:conns`` whose node's
``n:<node>`` lease has not run out.  ``ADMIT`` counts them and adds the new
stream's entry (the one the open script writes anyway) in one script, so
nodes opening at once cannot both take the last slot.  The entry goes when
the stream ends (presence's HDEL, retried until it succeeds), and a crashed
node's entries stop counting when its lease runs out (``presence_ttl``).

The emit rate is a GCRA (a token bucket kept as one number): per service,
``<prefix>:{%rate:<hex of the service>}`` holds the theoretical arrival time
in microseconds of Redis's clock; a call costing ``n`` events moves it ``n``
emission intervals ahead, and is refused (taking nothing) when that would
put it more than ``burst`` intervals past now.  No user tag can be
``%rate:...`` (user_tag encodes ``%`` as ``%<hex>``).
"""

from __future__ import annotations

# KEYS: conns   ARGV: connection field, its value, this node, presence ttl ms, max streams
# Returns 1 (added) or 0 (the user holds the maximum on live nodes).
ADMIT = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local node = ARGV[3]
local raw = redis.call('HGETALL', KEYS[1])
local live = {[node] = true}
for i = 1, #raw, 2 do
  if string.sub(raw[i], 1, 2) == 'n:' and tonumber(raw[i + 1]) >= now then
    live[string.sub(raw[i], 3)] = true
  end
end
local held = 0
for i = 1, #raw, 2 do
  if string.sub(raw[i], 1, 2) == 'c:' and raw[i] ~= ARGV[1] then
    local a = string.find(raw[i + 1], '\n', 1, true)
    if live[string.sub(raw[i + 1], 1, a - 1)] then held = held + 1 end
  end
end
if held >= tonumber(ARGV[5]) then return 0 end
local ttl = tonumber(ARGV[4])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], 'n:' .. node, now + ttl)
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
"""

# KEYS: bucket   ARGV: emission interval in µs, burst (events), cost (events)
# Returns 1 (taken) or 0 (refused, nothing taken).
RATE = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local next_tat = tat + cost * interval
if next_tat - now > burst * interval then return 0 end
redis.call('SET', KEYS[1], string.format('%.0f', next_tat),
  'PX', math.floor((next_tat - now) / 1000) + 1)
return 1
"""


def rate_key(prefix: str, service: str) -> str:
    return f"{prefix}:{{%rate:{service.encode().hex()}}}"


def rate_args(rate: float, burst: int, cost: int) -> list[float | int]:
    """RATE's ARGV: as ``RateLimiter`` (security/limits.py) counts, burst at least 1."""
    return [1_000_000 / rate, max(burst, 1), cost]
