"""The Redis cache: shared by every worker, one round trip per hit, fault tolerant."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from underlay._imports import require
from underlay.cache import _scripts
from underlay.cache._base import HIT, BaseCache, Lookup
from underlay.cache._codec import Codec

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisCache"]

_GLOB_SPECIAL = str.maketrans({c: "\\" + c for c in "*?[]\\"})


class RedisCache(BaseCache):
    """A cache in Redis that stays correct around transactions and degrades gracefully.

    * A hit is one round trip: a Lua script reads the entry and checks the epoch and
      namespace generations it was stored under.
    * Fills after a miss are guarded by a lease token and the generations read with the
      lookup, checked atomically in Redis, so a slow loader never stores old data over an
      invalidation; only the lease holder fills.
    * Reads fail open: each operation has a deadline (``timeout``, 50 ms by default); a
      failure or timeout is a miss, logged and counted. After ``failure_threshold``
      consecutive failures a circuit breaker skips Redis for ``cooldown`` seconds.
    * Invalidations fail safe: retried ``invalidation_attempts`` times within
      ``invalidation_timeout`` each; one that still fails makes the cache bump its epoch (all
      entries invalid) as soon as Redis answers again, before this process reads from it.

    Values are JSON (never pickle); replies are parsed by hiredis when it is installed. The
    namespace counters are read by the scripts, which needs a single Redis server (or
    Sentinel), not Redis Cluster.

    Args:
        url: A ``redis://`` or ``rediss://`` URL (ignored when ``client`` is given).
        client: An existing ``redis.asyncio.Redis``; its timeouts and retries are yours to
            set (use a small ``socket_timeout`` and no retries). It is not closed by
            :meth:`aclose`.
        prefix: Prepended to every key, so applications can share a server.
        default_ttl: Seconds an entry lives when no ``ttl`` is given.
        ttl_jitter: Fraction by which each TTL is randomly shortened (0.1 = up to 10 %).
        timeout: Deadline in seconds for each read, write and fill.
        invalidation_timeout: Deadline in seconds for each invalidation attempt.
        invalidation_attempts: Attempts per invalidation before it counts as lost.
        failure_threshold: Consecutive failures that open the circuit breaker.
        cooldown: Seconds the breaker stays open before one probe is let through.
        lease_ttl: Seconds a fill lease is held (the longest a loader may take to fill).
        namespace_ttl: Seconds an idle namespace counter is kept (at least the entries' TTL).
        codec: How values become bytes; defaults to :class:`~underlay.cache.JSONCodec`.

    Raises:
        MissingDependencyError: ``redis`` is not installed (``pip install 'underlay[redis]'``).
    """

    def __init__(
        self,
        url: str = "redis://localhost:6379",
        *,
        client: Redis | None = None,
        prefix: str = "underlay:",
        default_ttl: float = 3600,
        ttl_jitter: float = 0.1,
        timeout: float = 0.05,
        invalidation_timeout: float = 0.25,
        invalidation_attempts: int = 3,
        failure_threshold: int = 5,
        cooldown: float = 5.0,
        lease_ttl: float = 10.0,
        namespace_ttl: float = 86400,
        codec: Codec | None = None,
    ) -> None:
        redis_asyncio = require("redis.asyncio", extra="redis")
        exceptions = require("redis.exceptions", extra="redis")
        super().__init__(
            default_ttl=default_ttl,
            ttl_jitter=ttl_jitter,
            lease_ttl=lease_ttl,
            codec=codec,
            timeout=timeout,
            invalidation_timeout=invalidation_timeout,
            invalidation_attempts=invalidation_attempts,
            failure_threshold=failure_threshold,
            cooldown=cooldown,
        )
        self._store_errors = (exceptions.RedisError, OSError, TimeoutError)
        self._no_script: type[Exception] = exceptions.NoScriptError
        self.prefix = prefix
        self.namespace_ttl = namespace_ttl
        self._owns_client = client is None
        if client is None:
            retry = require("redis.retry", extra="redis")
            backoff = require("redis.backoff", extra="redis")
            socket_timeout = max(timeout, invalidation_timeout)
            client = redis_asyncio.Redis.from_url(
                url,
                # Retries multiply the wait on a hung server; the breaker handles outages.
                retry=retry.Retry(backoff.NoBackoff(), 0),
                retry_on_timeout=False,
                socket_timeout=socket_timeout,
                socket_connect_timeout=socket_timeout,
                decode_responses=False,
            )
        self.client: Redis = client
        self._read_script = client.register_script(_scripts.READ)
        self._lookup_script = client.register_script(_scripts.LOOKUP)
        self._fill_script = client.register_script(_scripts.FILL)
        self._store_script = client.register_script(_scripts.STORE)
        self._bump_script = client.register_script(_scripts.BUMP)

    def __repr__(self) -> str:
        return f"RedisCache(prefix={self.prefix!r})"

    def _entry(self, key: str) -> str:
        return f"{self.prefix}d:{key}"

    def _lease(self, key: str) -> str:
        return f"{self.prefix}l:{key}"

    def _ms(self, seconds: float) -> int:
        return max(1, int(seconds * 1000))

    async def _lookup(self, key: str, namespaces: tuple[str, ...], token: str | None) -> Lookup:
        if token is None:
            return (await self._read([key]))[0]
        reply: list[Any] = await self._lookup_script(
            keys=[self._entry(key), self._lease(key)],
            args=[
                self.prefix,
                token,
                self._ms(self.lease_ttl),
                self._ms(self.namespace_ttl),
                *namespaces,
            ],
        )
        return _lookup_reply(reply, token)

    async def _read(self, keys: Sequence[str]) -> list[Lookup]:
        reply: list[Any] = await self._read_script(
            keys=[self._entry(key) for key in keys], args=[self.prefix]
        )
        return [
            Lookup(int(reply[i]), bytes(reply[i + 1]) if reply[i] == HIT else None)
            for i in range(0, len(reply), 2)
        ]

    async def _fill(
        self, key: str, lookup: Lookup, namespaces: tuple[str, ...], payload: bytes, ttl_ms: int
    ) -> bool:
        keys, args = self._fill_call(key, lookup, namespaces, payload, ttl_ms)
        stored = await self._fill_script(keys=keys, args=args)
        return bool(stored == 1)

    def _fill_call(
        self, key: str, lookup: Lookup, namespaces: tuple[str, ...], payload: bytes, ttl_ms: int
    ) -> tuple[list[Any], list[Any]]:
        epoch, *generations = lookup.generations
        pairs = [item for pair in zip(namespaces, generations, strict=True) for item in pair]
        args = [
            self.prefix,
            lookup.token or "",
            ttl_ms,
            self._ms(self.namespace_ttl),
            epoch,
            len(namespaces),
            *pairs,
            payload,
        ]
        return [self._entry(key), self._lease(key)], args

    async def _lookup_many(
        self, requests: Sequence[tuple[str, tuple[str, ...], str]]
    ) -> list[Lookup]:
        replies = await self._pipelined(
            self._lookup_script,
            [
                (
                    [self._entry(key), self._lease(key)],
                    [
                        self.prefix,
                        token,
                        self._ms(self.lease_ttl),
                        self._ms(self.namespace_ttl),
                        *names,
                    ],
                )
                for key, names, token in requests
            ],
        )
        return [
            _lookup_reply(reply, token)
            for reply, (_, _, token) in zip(replies, requests, strict=True)
        ]

    async def _fill_many(
        self, fills: Sequence[tuple[str, Lookup, tuple[str, ...], bytes]], ttl_ms: int
    ) -> list[bool]:
        replies = await self._pipelined(
            self._fill_script,
            [
                self._fill_call(key, lookup, names, data, ttl_ms)
                for key, lookup, names, data in fills
            ],
        )
        return [reply == 1 for reply in replies]

    async def _pipelined(self, script: Any, calls: list[tuple[list[Any], list[Any]]]) -> list[Any]:
        """Run one script for several calls in one round trip (loading it if Redis lost it)."""
        for _ in range(2):
            pipe = self.client.pipeline(transaction=False)
            for keys, args in calls:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
            if not any(isinstance(reply, self._no_script) for reply in replies):
                break
            # A restarted server has no scripts; NOSCRIPT means none of the calls ran.
            script.sha = await self.client.script_load(script.script)
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        return replies

    async def _release(self, key: str, token: str) -> None:
        # Only our own lease: the compare and the delete are one atomic script.
        await self.client.eval(
            "if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end",
            1,
            self._lease(key),
            token,
        )

    async def _store(
        self, items: Sequence[tuple[str, bytes]], namespaces: tuple[str, ...], ttl_ms: int
    ) -> None:
        keys = [name for key, _ in items for name in (self._entry(key), self._lease(key))]
        await self._store_script(
            keys=keys,
            args=[
                self.prefix,
                ttl_ms,
                self._ms(self.namespace_ttl),
                len(namespaces),
                *namespaces,
                *(payload for _, payload in items),
            ],
        )

    async def _remove(self, keys: Sequence[str]) -> None:
        await self.client.unlink(
            *(name for key in keys for name in (self._entry(key), self._lease(key)))
        )

    async def _bump(self, names: tuple[str, ...], *, epoch: bool) -> None:
        await self._bump_script(
            args=[self.prefix, self._ms(self.namespace_ttl), "1" if epoch else "0", *names]
        )

    async def _remove_matching(self, pattern: str) -> int:
        # Entries and leases in one walk: removing the lease too voids fills in flight. Every
        # SCAN page and every UNLINK batch gets its own deadline, so a long walk is bounded
        # per round trip, not as a whole; a chunk past its deadline fails the invalidation,
        # which the caller retries and then covers with an epoch bump.
        match = f"{self.prefix.translate(_GLOB_SPECIAL)}[dl]:{pattern}"
        entry_prefix = f"{self.prefix}d:".encode()
        chunk = max(1, self.bulk_chunk_size)
        deadline = self.invalidation_timeout
        removed = 0
        cursor: int = 0
        while True:
            async with asyncio.timeout(deadline):
                cursor, names = await self.client.scan(cursor=cursor, match=match, count=chunk)
            for start in range(0, len(names), chunk):
                batch = names[start : start + chunk]
                async with asyncio.timeout(deadline):
                    await self.client.unlink(*batch)
                removed += sum(_raw(name).startswith(entry_prefix) for name in batch)
            if cursor == 0:
                return removed

    async def _close(self) -> None:
        if self._owns_client:
            await self.client.aclose()


def _raw(name: bytes | str) -> bytes:
    # a caller's client may decode replies
    return name if isinstance(name, bytes) else name.encode()


def _lookup_reply(reply: list[Any], token: str) -> Lookup:
    if reply[0] == HIT:
        return Lookup(HIT, bytes(reply[1]))
    generations = tuple(bytes(gen).decode() for gen in reply[2:])
    return Lookup(int(reply[0]), None, generations, token if reply[1] == 1 else None)
