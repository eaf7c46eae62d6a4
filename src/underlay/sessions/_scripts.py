"""Lua scripts of the Redis session store: each operation is one atomic round trip.

A session is a hash ``d`` (data), ``u`` (user id or ""), ``c`` (created, ms) and ``x``
(absolute expiry, ms), whose key TTL is the idle expiry capped by the absolute one. Times
come from the Redis server's clock, so every application server agrees on them.
"""

from __future__ import annotations

__all__ = ["CREATE", "READ", "REVOKE", "REVOKE_ALL", "ROTATE", "SAVE"]

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

#: KEYS: session, user index or none. ARGV: data, user, idle ms, absolute ms, session key
#: prefix, digest.
CREATE = (
    _NOW
    + """
local idle, absolute = tonumber(ARGV[3]), tonumber(ARGV[4])
redis.call('HSET', KEYS[1], 'd', ARGV[1], 'u', ARGV[2], 'c', now, 'x', now + absolute)
redis.call('PEXPIRE', KEYS[1], math.min(idle, absolute))
if #KEYS > 1 then
  for _, member in ipairs(redis.call('SMEMBERS', KEYS[2])) do
    if redis.call('EXISTS', ARGV[5] .. member) == 0 then
      redis.call('SREM', KEYS[2], member)
    end
  end
  redis.call('SADD', KEYS[2], ARGV[6])
  if redis.call('PTTL', KEYS[2]) < absolute then
    redis.call('PEXPIRE', KEYS[2], absolute)
  end
end
return now
"""
)

#: KEYS: session. ARGV: idle ms. Returns {d, u, c, x} or nil; slides the idle expiry.
READ = (
    _NOW
    + """
local v = redis.call('HMGET', KEYS[1], 'd', 'u', 'c', 'x')
if not v[1] then return false end
local left = tonumber(v[4]) - now
if left <= 0 then
  redis.call('DEL', KEYS[1])
  return false
end
redis.call('PEXPIRE', KEYS[1], math.min(tonumber(ARGV[1]), left))
return v
"""
)

#: KEYS: session. ARGV: data. Returns 1, or 0 when the session is gone.
SAVE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'd', ARGV[1])
return 1
"""

#: KEYS: old session, new session. ARGV: idle ms, user index prefix, old digest, new digest.
ROTATE = (
    _NOW
    + """
local v = redis.call('HMGET', KEYS[1], 'd', 'u', 'c', 'x')
if not v[1] then return 0 end
redis.call('DEL', KEYS[1])
local left = tonumber(v[4]) - now
if left <= 0 then return 0 end
redis.call('HSET', KEYS[2], 'd', v[1], 'u', v[2], 'c', v[3], 'x', v[4])
redis.call('PEXPIRE', KEYS[2], math.min(tonumber(ARGV[1]), left))
if v[2] ~= '' then
  redis.call('SREM', ARGV[2] .. v[2], ARGV[3])
  redis.call('SADD', ARGV[2] .. v[2], ARGV[4])
end
return 1
"""
)

#: KEYS: session. ARGV: user index prefix, digest. Returns 1 if it existed.
REVOKE = """
local user = redis.call('HGET', KEYS[1], 'u')
if not user then return 0 end
redis.call('DEL', KEYS[1])
if user ~= '' then redis.call('SREM', ARGV[1] .. user, ARGV[2]) end
return 1
"""

#: KEYS: user index. ARGV: session key prefix. Returns how many live sessions it ended.
REVOKE_ALL = """
local ended = 0
for _, member in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  ended = ended + redis.call('DEL', ARGV[1] .. member)
end
redis.call('DEL', KEYS[1])
return ended
"""
