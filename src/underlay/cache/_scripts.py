r"""The Lua scripts that make RedisCache's reads one round trip and its fills atomic.

Layout under the prefix ``P``: ``P d:<key>`` entries, ``P l:<key>`` fill leases,
``P g:<namespace>`` generation counters, ``P epoch`` the epoch. An entry is
``u1\n<epoch>\n<n>\n<ns 1>\n<gen 1>\n...<payload>``: it names the generations it was
stored under, so a plain GET needs no second round trip to validate it.

A counter that does not exist is created at the server's clock in microseconds rather than
0, so a counter that expired (or was evicted) and is re-created never returns to a value an
old entry or a fill in flight holds. Counters are only ever compared as strings: Lua numbers
would round them.
"""

from __future__ import annotations

__all__ = ["BUMP", "FILL", "LOOKUP", "READ", "STORE"]

_COMMON = """
local prefix = ARGV[1]

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

-- status 1 and the payload for a valid entry, 0 for a miss, -1 for a foreign value
local function check(key)
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
  if epoch ~= current(prefix .. 'epoch') then
    return 0, ''
  end
  for _ = 1, count do
    local name = field()
    local gen = field()
    if gen == nil then
      redis.call('DEL', key)
      return -1, ''
    end
    if gen ~= current(prefix .. 'g:' .. name) then
      return 0, ''
    end
  end
  return 1, string.sub(raw, pos)
end
"""

#: KEYS: entry keys. ARGV: prefix. Returns status, payload pairs.
READ = (
    _COMMON
    + """
local out = {}
for i, key in ipairs(KEYS) do
  local status, payload = check(key)
  out[2 * i - 1] = status
  out[2 * i] = payload
end
return out
"""
)

#: KEYS: entry, lease. ARGV: prefix, token, lease ms, counter ms, namespaces...
#: Returns {1, payload} on a hit, else {status, got lease (0/1), epoch, generations...}.
LOOKUP = (
    _COMMON
    + """
local status, payload = check(KEYS[1])
if status == 1 then
  return {1, payload}
end
local out = {status, 0, ensure(prefix .. 'epoch', nil)}
for i = 5, #ARGV do
  out[#out + 1] = ensure(prefix .. 'g:' .. ARGV[i], tonumber(ARGV[4]))
end
if redis.call('SET', KEYS[2], ARGV[2], 'NX', 'PX', tonumber(ARGV[3])) then
  out[2] = 1
end
return out
"""
)

#: KEYS: entry, lease. ARGV: prefix, token, entry ms, counter ms, epoch, n, (namespace,
#: generation) * n, payload. Returns 1 if stored, 0 if the lease or a generation moved.
FILL = (
    _COMMON
    + """
if redis.call('GET', KEYS[2]) ~= ARGV[2] then
  return 0
end
redis.call('DEL', KEYS[2])
local epoch = ARGV[5]
if current(prefix .. 'epoch') ~= epoch then
  return 0
end
local count = tonumber(ARGV[6])
local header = {'u1', epoch, count}
for i = 1, count do
  local name, gen = ARGV[5 + 2 * i], ARGV[6 + 2 * i]
  if current(prefix .. 'g:' .. name) ~= gen then
    return 0
  end
  header[#header + 1] = name
  header[#header + 1] = gen
end
local ttl = tonumber(ARGV[3])
redis.call('SET', KEYS[1], table.concat(header, '\\n') .. '\\n' .. ARGV[7 + 2 * count], 'PX', ttl)
for i = 1, count do
  extend(prefix .. 'g:' .. ARGV[5 + 2 * i], math.max(ttl, tonumber(ARGV[4])))
end
return 1
"""
)

#: KEYS: entry, lease pairs. ARGV: prefix, entry ms, counter ms, n, namespaces, payloads.
STORE = (
    _COMMON
    + """
local ttl = tonumber(ARGV[2])
local count = tonumber(ARGV[4])
local header = {'u1', ensure(prefix .. 'epoch', nil), count}
for i = 1, count do
  local key = prefix .. 'g:' .. ARGV[4 + i]
  header[#header + 1] = ARGV[4 + i]
  header[#header + 1] = ensure(key, tonumber(ARGV[3]))
  extend(key, math.max(ttl, tonumber(ARGV[3])))
end
header = table.concat(header, '\\n') .. '\\n'
for i = 1, #KEYS / 2 do
  redis.call('SET', KEYS[2 * i - 1], header .. ARGV[4 + count + i], 'PX', ttl)
  redis.call('DEL', KEYS[2 * i])
end
return 1
"""
)

#: ARGV: prefix, counter ms, bump epoch (0/1), namespaces... Moves each counter forward.
BUMP = (
    _COMMON
    + """
local ttl = tonumber(ARGV[2])
local function bump(key)
  if redis.call('EXISTS', key) == 1 then
    redis.call('INCR', key)
  else
    redis.call('SET', key, now_us())
  end
end
if ARGV[3] == '1' then
  bump(prefix .. 'epoch')
end
for i = 4, #ARGV do
  local key = prefix .. 'g:' .. ARGV[i]
  bump(key)
  local left = redis.call('PTTL', key)
  if left < ttl then
    redis.call('PEXPIRE', key, ttl)
  end
end
return 1
"""
)
