r"""The Lua scripts behind RedisCache's misses, fills and invalidations.

Layout under the key prefix ``P`` (``{prefix}`` on Redis Cluster, so that every key of a
cache shares one hash slot): ``P d:<key>`` entries, ``P l:<key>`` fill leases,
``P g:<namespace>`` generation counters, ``P epoch`` the epoch. An entry is
``u1\n<epoch>\n<n>\n<ns 1>\n<gen 1>\n...<payload>`` (see ``_entry``): it names the
generations it was stored under, so a hit is one plain ``MGET`` of the entry and the
counters, compared in Python; no script runs on a hit.

Every script gets the keys it writes, and the counters its caller names, in ``KEYS``. The
two read scripts (``READ``, ``LOOKUP``) also check the counters an entry names that the
caller did not (a plain ``get`` knows no namespaces); those keys are built from the prefix
and share the entry's hash slot by construction, so the scripts stay single-slot.

A counter that does not exist is created at the server's clock in microseconds rather than
0, so a counter that expired (or was evicted) and is re-created never returns to a value an
old entry or a fill in flight holds. Counters are only ever compared as strings: Lua numbers
would round them.
"""

from __future__ import annotations

__all__ = ["BUMP", "FILL", "LOOKUP", "READ", "RELEASE", "STORE"]

_COMMON = """
local function now_us()
  local t = redis.call('TIME')
  return t[1] .. string.rep('0', 6 - #t[2]) .. t[2]
end

local function current(key)
  return redis.call('GET', key) or ''
end

local function ensure(key, ttl)
  local value = redis.call('GET', key)
  if not value then
    value = now_us()
    if ttl then
      redis.call('SET', key, value, 'PX', ttl)
    else
      redis.call('SET', key, value)
    end
  end
  return value
end

local function extend(key, ttl)
  local left = redis.call('PTTL', key)
  if left >= 0 and left < ttl then
    redis.call('PEXPIRE', key, ttl)
  end
end
"""

# check(entry key, epoch key, prefix, named): status 1 and the payload for a valid entry,
# 0 for a miss, -1 for a foreign value (removed). ``named`` maps namespace -> counter key
# for the counters in KEYS; others are built from the prefix (same hash slot).
_CHECK = """
local function check(key, epoch_key, prefix, named)
  local raw = redis.pcall('GET', key)
  if raw == false then
    return 0, ''
  end
  if type(raw) ~= 'string' or string.sub(raw, 1, 3) ~= 'u1\\n' then
    redis.call('DEL', key)
    return -1, ''
  end
  local pos = 4
  local function field()
    local stop = string.find(raw, '\\n', pos, true)
    if not stop then
      return nil
    end
    local value = string.sub(raw, pos, stop - 1)
    pos = stop + 1
    return value
  end
  local epoch = field()
  local count = tonumber(field() or '')
  if epoch == nil or count == nil then
    redis.call('DEL', key)
    return -1, ''
  end
  if epoch ~= current(epoch_key) then
    return 0, ''
  end
  for _ = 1, count do
    local name = field()
    local gen = field()
    if gen == nil then
      redis.call('DEL', key)
      return -1, ''
    end
    if gen ~= current(named[name] or (prefix .. 'g:' .. name)) then
      return 0, ''
    end
  end
  return 1, string.sub(raw, pos)
end
"""

#: KEYS: epoch, entries... ARGV: prefix. Returns status, payload pairs.
READ = (
    _COMMON
    + _CHECK
    + """
local out = {}
for i = 2, #KEYS do
  local status, payload = check(KEYS[i], KEYS[1], ARGV[1], {})
  out[2 * i - 3] = status
  out[2 * i - 2] = payload
end
return out
"""
)

#: KEYS: entry, lease, epoch, counters... ARGV: prefix, token, lease ms, counter ms,
#: namespaces (one per counter). Returns {1, payload} on a hit, else {status, got lease
#: (0/1), epoch, generations...}.
LOOKUP = (
    _COMMON
    + _CHECK
    + """
local named = {}
for i = 4, #KEYS do
  named[ARGV[i + 1]] = KEYS[i]
end
local status, payload = check(KEYS[1], KEYS[3], ARGV[1], named)
if status == 1 then
  return {1, payload}
end
local out = {status, 0, ensure(KEYS[3], nil)}
for i = 4, #KEYS do
  out[#out + 1] = ensure(KEYS[i], tonumber(ARGV[4]))
end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', tonumber(ARGV[3])) then
  out[2] = 1
end
return out
"""
)

#: KEYS: entry, lease, epoch, counters... ARGV: token, entry ms, counter ms, epoch,
#: (namespace, generation) per counter, payload. Returns 1 if stored, 0 if the lease or a
#: generation moved.
FILL = (
    _COMMON
    + """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[2])
local epoch = ARGV[4]
if current(KEYS[3]) ~= epoch then
  return 0
end
local count = #KEYS - 3
local header = {'u1', epoch, count}
for i = 1, count do
  local name, gen = ARGV[3 + 2 * i], ARGV[4 + 2 * i]
  if current(KEYS[3 + i]) ~= gen then
    return 0
  end
  header[#header + 1] = name
  header[#header + 1] = gen
end
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], table.concat(header, '\\n') .. '\\n' .. ARGV[5 + 2 * count], 'PX', ttl)
for i = 1, count do
  extend(KEYS[3 + i], math.max(ttl, tonumber(ARGV[3])))
end
return 1
"""
)

#: KEYS: epoch, n counters, then (entry, lease) pairs. ARGV: entry ms, counter ms, n,
#: namespaces (one per counter), payloads (one per pair).
STORE = (
    _COMMON
    + """
local ttl = tonumber(ARGV[1])
local count = tonumber(ARGV[3])
local header = {'u1', ensure(KEYS[1], nil), count}
for i = 1, count do
  header[#header + 1] = ARGV[3 + i]
  header[#header + 1] = ensure(KEYS[1 + i], tonumber(ARGV[2]))
  extend(KEYS[1 + i], math.max(ttl, tonumber(ARGV[2])))
end
header = table.concat(header, '\\n') .. '\\n'
local first = count + 2
for i = 0, (#KEYS - first - 1) / 2 do
  redis.call('SET', KEYS[first + 2 * i], header .. ARGV[4 + count + i], 'PX', ttl)
  redis.call('DEL', KEYS[first + 2 * i + 1])
end
return 1
"""
)

#: KEYS: the counters to move forward (the epoch among them when asked). ARGV: counter ms,
#: then 1 per counter that expires (a namespace), 0 per counter that never does (the epoch).
BUMP = (
    _COMMON
    + """
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 then
    redis.call('INCR', key)
  else
    redis.call('SET', key, now_us())
  end
  if ARGV[i + 1] == '1' then
    local left = redis.call('PTTL', key)
    if left < ttl then
      redis.call('PEXPIRE', key, ttl)
    end
  end
end
return 1
"""
)

#: KEYS: lease. ARGV: token. Gives back a lease only if it is still ours.
RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end"
