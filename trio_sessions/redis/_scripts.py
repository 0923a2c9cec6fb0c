"""The Lua scripts of the lease set: each admission, renewal or sweep is one call."""

from __future__ import annotations

from typing import Final

__all__ = ["ACQUIRE", "BATCH", "RENEW", "SWEEP"]

# Every script takes the time from the Redis server (TIME), so the clocks of the
# fleet's hosts never decide whether a lease is alive. A lease is a member of
# the sorted set scored by its expiry in server milliseconds; dead ones are
# swept before anything is counted. The key itself expires once the longest
# lease written to it would have, so an abandoned fleet leaves nothing behind.
PRELUDE: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
"""

KEEP_KEY: Final = """
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
"""

# KEYS: the lease set. ARGV: member, limit, ttl_ms. Returns {granted, count}.
ACQUIRE: Final = (
    PRELUDE
    + """
local count = redis.call('ZCARD', KEYS[1])
if count >= tonumber(ARGV[2]) then
  return {0, count}
end
local ttl = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
"""
    + KEEP_KEY
    + """
return {1, redis.call('ZCARD', KEYS[1])}
"""
)

# KEYS: the lease set. ARGV: ttl_ms, members... Extends the members still
# present and returns {count, lost members}; with no members it only counts.
RENEW: Final = (
    PRELUDE
    + """
local ttl = tonumber(ARGV[1])
local lost = {}
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], 'XX', now + ttl, ARGV[i])
  else
    lost[#lost + 1] = ARGV[i]
  end
end
if #ARGV > 1 then
"""
    + KEEP_KEY
    + """
end
return {redis.call('ZCARD', KEYS[1]), lost}
"""
)

# KEYS: the lease set. ARGV: a guard's member prefix. Removes every lease of
# that guard, and returns how many: at shutdown, whatever a cancelled acquire
# may have left behind, its reply lost, goes too.
SWEEP: Final = """
local removed = 0
local prefix = ARGV[1]
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if string.sub(member, 1, #prefix) == prefix then
    removed = removed + redis.call('ZREM', KEYS[1], member)
  end
end
return removed
"""

# Members per script call or ZREM, so one huge process never blocks Redis long.
BATCH: Final = 500
