"""Redis clients and scripts shared by the relay and the consumers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from underlay._redis_client import connect, redis_errors

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["PUBLISH", "make_client", "redis_errors"]


def make_client(url: str, *, timeout: float) -> Redis:
    """Return a ``redis.asyncio.Redis`` for ``url`` with a socket deadline and no retries."""
    client: Redis = connect(url, timeout=timeout)
    return client


#: Append events to a stream, skipping every id at or below the stream's last generated id.
#: KEYS[1] the stream; ARGV[1] MAXLEN (0: untrimmed), then (id, key or "", tenant or "",
#: payload) quadruples.
#: The skip makes a re-publish after a crash a no-op, and the script runs atomically, so a
#: batch is either in the stream entirely or not at all. Returns {added, last id}.
PUBLISH = """
local top = 0
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then
      top = tonumber(string.match(info[i + 1], '^(%d+)'))
      break
    end
  end
end
local maxlen = tonumber(ARGV[1])
local added = 0
for i = 2, #ARGV, 4 do
  local id = tonumber(ARGV[i])
  if id > top then
    local args = {'XADD', KEYS[1]}
    if maxlen > 0 then
      args[#args + 1] = 'MAXLEN'
      args[#args + 1] = '~'
      args[#args + 1] = maxlen
    end
    args[#args + 1] = ARGV[i] .. '-0'
    args[#args + 1] = 'payload'
    args[#args + 1] = ARGV[i + 3]
    if ARGV[i + 1] ~= '' then
      args[#args + 1] = 'key'
      args[#args + 1] = ARGV[i + 1]
    end
    if ARGV[i + 2] ~= '' then
      args[#args + 1] = 'tenant'
      args[#args + 1] = ARGV[i + 2]
    end
    redis.call(unpack(args))
    top = id
    added = added + 1
  end
end
return {added, top}
"""
