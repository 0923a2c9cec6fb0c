"""The Lua scripts of the lease set: each admission, renewal or sweep is one call.

An acquire call admits a whole batch of callers and carries the releases
waiting to be sent, so while admissions flow a release costs no call of its own.
"""

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

# KEYS: the lease set. ARGV: limit, ttl_ms, r, then r released members, then
# the members to add, in FIFO order. The released members go first, before
# anything is counted, so a release carried by an acquire frees its slot for
# that very acquire. Members are added in order while fewer than ``limit``
# leases live, so those granted are a prefix of those asked for. Returns
# {granted, count}: how many members were added, and the fleet's count after.
ACQUIRE: Final = (
    """
local released = tonumber(ARGV[3])
if released > 0 then
  redis.call('ZREM', KEYS[1], unpack(ARGV, 4, 3 + released))
end
"""
    + PRELUDE
    + """
local limit = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local count = redis.call('ZCARD', KEYS[1])
local granted = 0
for i = 4 + released, #ARGV do
  if count >= limit then
    break
  end
  count = count + redis.call('ZADD', KEYS[1], now + ttl, ARGV[i])
  granted = granted + 1
end
if granted > 0 then
"""
    + KEEP_KEY
    + """
end
return {granted, count}
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

# Members per script call or ZREM (released and acquired members together, in an
# acquire), so one huge process never blocks Redis long.
BATCH: Final = 500
