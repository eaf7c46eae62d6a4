"""The hit path's ``MGET``, sent on a few connections the cache keeps for it.

A cache hit is one ``MGET``. Sent through redis-py's generic command path it pays for the
pool's bookkeeping on every call (a lock, connection checks, metrics hooks) and, because
the client's connections carry a socket timeout, for an ``asyncio.wait_for`` task around
the write and a timeout context around the read: together more than the round trip itself
on a local server. `HitReader` sends the same command, packed here, with the connection's
own public ``send_packed_command`` / ``read_response``, on connections made like the
client pool's (same class and options: address, credentials, TLS, database, protocol) but
kept by the cache, with the socket timeout off.

What keeps this as safe as the generic path:

* The socket timeout is off only because every read runs under the cache's own deadline
  (``timeout``), which cancels it. A read or write that is cancelled or fails disconnects
  its connection (redis-py does so for any exception, and this module does again), so a
  late reply is never read by the next call; the next use reconnects.
* A connection is checked before reuse as the pool checks its own: one with unread data or
  closed by the server (a restart) is reconnected first.
* Errors are redis-py's own (``ConnectionError``, ``TimeoutError``, ``ResponseError``), so
  the cache's fault policy treats them as before: a miss, counted, and the circuit breaker.
* At most `HitReader.limit` connections: a hit finding none idle takes the generic path.

Only for a plain ``redis.asyncio.Redis`` on a plain connection pool (not a cluster, not
Sentinel, whose connections depend on the pool that made them).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any, Final

from underlay._imports import require

__all__ = ["HitReader", "pack_mget"]

_MGET: Final = b"$4\r\nMGET\r\n"


def pack_mget(keys: Sequence[bytes]) -> bytes:
    """Return ``MGET keys...`` in the Redis protocol (RESP, the same for RESP2 and RESP3)."""
    parts = [b"*%d\r\n" % (len(keys) + 1), _MGET]
    for key in keys:
        parts += (b"$%d\r\n" % len(key), key, b"\r\n")
    return b"".join(parts)


class HitReader:
    """Run the hit path's ``MGET`` on up to ``limit`` connections of its own.

    Args:
        client: The cache's ``redis.asyncio.Redis``; its pool's connection class and
            options make the connections.
        keep_timeout: Keep the pool's socket timeout (when the cache has no deadline of
            its own to bound each read).
        limit: Connections kept at most.
    """

    __slots__ = (
        "_check",
        "_idle",
        "_keep_timeout",
        "_loop",
        "_made",
        "_maintenance",
        "_pool",
        "limit",
    )

    def __init__(self, client: Any, *, keep_timeout: bool, limit: int = 8) -> None:
        self._pool = client.connection_pool
        self._keep_timeout = keep_timeout
        self.limit = limit
        self._idle: list[Any] = []
        self._made = 0  # connections alive: idle or in use
        self._loop: asyncio.AbstractEventLoop | None = None
        # redis-py 5 names the dirty-connection check can_read_destructive (deprecated in
        # 8) and has no maintenance notifications.
        kind = self._pool.connection_class
        self._check = "can_read" if hasattr(kind, "can_read") else "can_read_destructive"
        self._maintenance = hasattr(kind, "should_reconnect")

    @classmethod
    def for_client(cls, client: Any, *, keep_timeout: bool) -> HitReader | None:
        """Return a reader for ``client``, or ``None`` where only the generic path is right."""
        redis: Any = require("redis.asyncio", extra="redis")
        pool = getattr(client, "connection_pool", None)
        plain_pools = (redis.ConnectionPool, redis.BlockingConnectionPool)
        if type(client) is not redis.Redis or type(pool) not in plain_pools:
            return None
        return cls(client, keep_timeout=keep_timeout)

    async def mget(self, keys: Sequence[bytes]) -> list[Any] | None:
        """Return the values of ``keys`` (bytes or ``None``), or ``None`` if no connection is free.

        Raises:
            redis.exceptions.RedisError: As the generic path would: the caller's fault
                policy decides.
        """
        connection = self._take()
        if connection is None:
            return None
        try:
            if self._maintenance and connection.should_reconnect():
                connection.reset_should_reconnect()  # the server announced maintenance
                await connection.disconnect()
            elif connection.is_connected and await getattr(connection, self._check)():
                # Unread data, or closed by the server: start afresh, as the pool would.
                await connection.disconnect()
            await connection.send_packed_command(pack_mget(keys))
            reply: list[Any] = await connection.read_response(disable_decoding=True)
        except BaseException:
            # Cancelled (the deadline) or failed: whatever is in flight must never be read
            # as the answer to the next command on this connection.
            with contextlib.suppress(Exception):
                await connection.disconnect(nowait=True)
            raise
        finally:
            self._idle.append(connection)
        return reply

    def _take(self) -> Any:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # Connections belong to the loop that opened them; another loop starts afresh.
            self._idle.clear()
            self._made = 0
            self._loop = loop
        if self._idle:
            return self._idle.pop()
        if self._made >= self.limit:
            return None
        options = dict(self._pool.connection_kwargs)
        if not self._keep_timeout:
            options["socket_timeout"] = None  # the cache's deadline bounds every read
        connection = self._pool.connection_class(**options)
        self._made += 1
        return connection

    async def aclose(self) -> None:
        """Disconnect the idle connections."""
        idle, self._idle = self._idle, []
        self._made -= len(idle)
        for connection in idle:
            with contextlib.suppress(Exception):
                await connection.disconnect()

    def __repr__(self) -> str:
        return f"HitReader(idle={len(self._idle)}, open={self._made}, limit={self.limit})"
