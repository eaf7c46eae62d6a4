"""The Redis cache: shared by every worker, one round trip per hit, fault tolerant."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from underlay._imports import require
from underlay._redis_client import client_race, close, connect, is_cluster, redis_errors
from underlay.cache import _scripts
from underlay.cache._base import HIT, MISS, BaseCache, Lookup
from underlay.cache._codec import Codec
from underlay.cache._entry import current_payload, judge
from underlay.cache._near import NearCache, tracking_connection
from underlay.cache._wire import HitReader

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisCache"]

_GLOB_SPECIAL = str.maketrans({c: "\\" + c for c in "*?[]\\"})


class NotReplicatedError(Exception):
    """An invalidation the master took but fewer replicas than required acknowledged."""


class RedisCache(BaseCache):
    """A cache in Redis that stays correct around transactions and degrades gracefully.

    * A hit that names its namespaces (as `CachedRepository` does) is one plain ``MGET``
      of the entry, the epoch and the namespace counters, compared in Python: no script
      runs on a hit. A `get` without namespaces is one script call that checks the
      counters the entry names. `load_many` reads every entry in one ``MGET``.
    * On one server the hit's ``MGET`` goes out on up to 8 connections of the cache's own
      (made like the client pool's, without its socket timeout: ``timeout`` bounds each
      read, and one that fails or is cancelled disconnects), skipping redis-py's generic
      command path; when all are busy, and on a cluster or behind Sentinel, the client's
      pool is used.
    * Fills after a miss are guarded by a lease token and the generations read with the
      lookup, checked atomically in Redis, so a slow loader never stores old data over an
      invalidation; only the lease holder fills. A miss costs a second round trip (the
      lease), a fill a third.
    * Reads fail open: each operation has a deadline (``timeout``, 50 ms by default); a
      failure or timeout is a miss, logged and counted. After ``failure_threshold``
      consecutive failures a circuit breaker skips Redis for ``cooldown`` seconds.
    * Invalidations fail safe: retried ``invalidation_attempts`` times within
      ``invalidation_timeout`` each; one that still fails makes the cache bump its epoch (all
      entries invalid) as soon as Redis answers again, before this process reads from it.
    * Invalidations survive a failover: in replicated mode (``wait_replicas``, on by default
      on a cluster and behind Sentinel) each one is followed by ``WAIT`` on the same
      connection, and one that fewer replicas acknowledged than asked (at most as many as
      are attached) counts as not delivered, so the epoch bump covers it: a replica
      promoted before it saw an invalidation never serves what it invalidated.
    * One server, a Sentinel-managed master (``sentinels`` and ``service_name``) or a Redis
      Cluster (``cluster_nodes``). On a cluster every key of the cache carries the prefix as
      its hash tag (``{prefix}d:<key>``), so an entry and the counters it is checked against
      share one slot: the cache lives on one shard and its replicas (high availability,
      not sharding).

    Values are JSON (never pickle); replies are parsed by hiredis when it is installed.

    Args:
        url: A ``redis://`` or ``rediss://`` URL (ignored when ``client``, ``cluster_nodes``
            or ``sentinels`` is given).
        client: An existing ``redis.asyncio.Redis`` or ``RedisCluster``; its timeouts and
            retries are yours to set (use a small ``socket_timeout`` and no retries). The
            hit connections made from its pool are bounded by ``timeout`` and not retried
            instead. It is not closed by `aclose` (the hit connections are).
        cluster_nodes: Startup nodes of a Redis Cluster, ``"host:port"`` or ``(host, port)``.
        sentinels: Sentinel addresses, ``"host:port"`` or ``(host, port)``; the cache
            follows the master named ``service_name`` across failovers.
        service_name: The master's name in the Sentinel configuration.
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
        codec: How values become bytes; defaults to `JSONCodec`.
        wait_replicas: Replicas that must acknowledge each invalidation (``WAIT``, for up
            to half of ``invalidation_timeout``) before it counts as delivered; capped at
            the replicas attached to the master at the time. ``None`` (the default) means 1
            on a cluster or behind Sentinel and 0 (no ``WAIT``) on one server or a
            ``client`` that is not a cluster.
        near_cache: An in-process `NearCache` in front of Redis (single server only), so
            hits cost microseconds; see its guarantees.

    Raises:
        MissingDependencyError: ``redis`` is not installed (``pip install 'underlay[redis]'``).
        ValueError: Both ``cluster_nodes`` and ``sentinels``, or ``sentinels`` without
            ``service_name``, a negative ``wait_replicas``, or a ``near_cache`` with a
            cluster or Sentinel.
    """

    # a connection closed under a command leaks a non-Redis error from redis-py
    _client_fault = staticmethod(client_race)

    def __init__(
        self,
        url: str = "redis://localhost:6379",
        *,
        client: Any = None,
        cluster_nodes: Sequence[str | tuple[str, int]] | None = None,
        sentinels: Sequence[str | tuple[str, int]] | None = None,
        service_name: str | None = None,
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
        wait_replicas: int | None = None,
        near_cache: NearCache | None = None,
    ) -> None:
        if wait_replicas is not None and wait_replicas < 0:
            raise ValueError(f"wait_replicas must be 0 or more, not {wait_replicas}")
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
        self._store_errors = (*redis_errors(), NotReplicatedError)
        self._no_script: type[Exception] = exceptions.NoScriptError
        self._moved: type[Exception] = exceptions.ConnectionError
        self._scan_node = ""
        self.prefix = prefix
        self.namespace_ttl = namespace_ttl
        self._owns_client = client is None
        if client is None:
            client = connect(
                url,
                timeout=max(timeout, invalidation_timeout),
                cluster_nodes=cluster_nodes,
                sentinels=sentinels,
                service_name=service_name,
            )
        self.client: Redis = client
        self.cluster = is_cluster(client)
        if wait_replicas is None:
            wait_replicas = 1 if self.cluster or (self._owns_client and sentinels) else 0
        self.wait_replicas = wait_replicas
        self._attached = wait_replicas  # replicas the master listed last (ROLE)
        # On a cluster the prefix is the hash tag of every key (unless it carries one).
        tagged = self.cluster and not _has_tag(prefix)
        self.key_prefix = f"{{{prefix}}}" if tagged else prefix
        self._epoch = f"{self.key_prefix}epoch"
        self._key_bytes = self.key_prefix.encode()
        self._epoch_bytes = self._epoch.encode()
        self._read_script = client.register_script(_scripts.READ)
        self._lookup_script = client.register_script(_scripts.LOOKUP)
        self._fill_script = client.register_script(_scripts.FILL)
        self._store_script = client.register_script(_scripts.STORE)
        self._bump_script = client.register_script(_scripts.BUMP)
        self._release_script = client.register_script(_scripts.RELEASE)
        self._near = near_cache
        # The hit path's MGET skips redis-py's generic command path (see _wire): only on one
        # plain server, and with the socket timeout off only under a deadline of our own.
        self._hit_reader = (
            None
            if self.cluster or sentinels
            else HitReader.for_client(client, keep_timeout=timeout is None)
        )
        if near_cache is not None:
            if self.cluster or sentinels:
                # A failover moves the master: what the tracking connection was told about
                # the old one proves nothing about the new one.
                raise ValueError(
                    "a near cache needs a single Redis server, not a cluster or Sentinel"
                )
            near_cache._attach(self, tracking_connection(client), self.key_prefix, self._epoch)

    def __repr__(self) -> str:
        return f"RedisCache(prefix={self.prefix!r})"

    def _entry(self, key: str) -> str:
        return f"{self.key_prefix}d:{key}"

    def _lease(self, key: str) -> str:
        return f"{self.key_prefix}l:{key}"

    def _counter(self, namespace: str) -> str:
        return f"{self.key_prefix}g:{namespace}"

    def _near_hit(self, key: str) -> bytes | None:
        near = self._near
        return None if near is None else near._lookup(f"{self.key_prefix}d:{key}")

    def _ms(self, seconds: float) -> int:
        return max(1, int(seconds * 1000))

    async def _mget(self, keys: list[bytes]) -> list[Any]:
        """``MGET`` for the hit path: on the cache's own connections when one is free."""
        reader = self._hit_reader
        if reader is not None:
            reply = await reader.mget(keys)
            if reply is not None:
                return reply
        # Keys as bytes: redis-py sends them as they are instead of encoding each.
        found: list[Any] = await self.client.mget(keys)
        return found

    # -- reads ------------------------------------------------------------------------------

    async def _lookup(self, key: str, namespaces: tuple[str, ...], token: str | None) -> Lookup:
        if token is None:
            near = self._near
            if near is not None and (found := near._lookup(self._entry(key))) is not None:
                return Lookup(HIT, found)
            if not namespaces:
                return (await self._read([key]))[0]
            # The hit path: one plain MGET, compared here; no script.
            names = [name.encode() for name in namespaces]
            if near is None:
                prefix = self._key_bytes
                raw = await self._mget(
                    [
                        prefix + b"d:" + key.encode(),
                        self._epoch_bytes,
                        *[prefix + b"g:" + name for name in names],
                    ]
                )
            else:
                counters = [f"{self.key_prefix}g:{name}" for name in namespaces]
                keys = [f"{self.key_prefix}d:{key}", self._epoch, *counters]
                raw = await near._read(self.client.mget, keys, range(1))
            generations = raw[2:]
            payload = current_payload(raw[0], raw[1], names, generations)
            if payload is not None:
                return Lookup(HIT, payload)
            status, payload = judge(raw[0], raw[1], dict(zip(names, generations, strict=True)))
            if status == HIT:
                return Lookup(HIT, payload)
            if status == MISS:
                return Lookup(MISS)
            return (await self._read([key]))[0]  # a foreign entry, or unknown counters
        # A miss: the script checks again, reads the generations and takes the lease.
        counters = [f"{self.key_prefix}g:{name}" for name in namespaces]
        reply: list[Any] = await self._lookup_script(
            keys=[self._entry(key), self._lease(key), self._epoch, *counters],
            args=[
                self.key_prefix,
                token,
                self._ms(self.lease_ttl),
                self._ms(self.namespace_ttl),
                *namespaces,
            ],
        )
        return _lookup_reply(reply, token)

    async def _read(self, keys: Sequence[str]) -> list[Lookup]:
        # Without namespaces to read along, the script checks the ones each entry names
        # (and removes foreign values) in the same round trip.
        reply: list[Any] = await self._read_script(
            keys=[self._epoch, *(self._entry(key) for key in keys)], args=[self.key_prefix]
        )
        return [
            Lookup(int(reply[i]), bytes(reply[i + 1]) if reply[i] == HIT else None)
            for i in range(0, len(reply), 2)
        ]

    async def _lookup_many(
        self, requests: Sequence[tuple[str, tuple[str, ...], str | None]]
    ) -> list[Lookup]:
        near = self._near
        if near is not None:
            hits = {
                index: Lookup(HIT, payload)
                for index, (key, _, _) in enumerate(requests)
                if (payload := near._lookup(self._entry(key))) is not None
            }
            if hits:
                rest = [request for i, request in enumerate(requests) if i not in hits]
                looked = iter(await self._lookup_many(rest) if rest else ())
                return [hits[i] if i in hits else next(looked) for i in range(len(requests))]
        names = [name.encode() for name in sorted({n for _, group, _ in requests for n in group})]
        if near is None:
            # Keys as bytes: redis-py sends them as they are instead of encoding each.
            prefix = self._key_bytes
            raw = await self.client.mget(
                [
                    self._epoch_bytes,
                    *(prefix + b"g:" + name for name in names),
                    *(prefix + b"d:" + key.encode() for key, _, _ in requests),
                ]
            )
        else:
            keys = [
                self._epoch,
                *(self._counter(name.decode()) for name in names),
                *(self._entry(key) for key, _, _ in requests),
            ]
            raw = await near._read(self.client.mget, keys, range(1 + len(names), len(keys)))
        current = dict(zip(names, raw[1:], strict=False))
        entries = raw[1 + len(names) :]
        found: list[Lookup | None] = []
        again: list[int] = []
        for index, (_, _, token) in enumerate(requests):
            status, payload = judge(entries[index], raw[0], current)
            if status == HIT:
                found.append(Lookup(HIT, payload))
            elif status == MISS and token is None:
                found.append(Lookup(MISS))
            else:
                found.append(None)
                again.append(index)
        if again:
            for index, lookup in zip(again, await self._settle(requests, again), strict=True):
                found[index] = lookup
        return [lookup for lookup in found if lookup is not None]

    async def _settle(
        self, requests: Sequence[tuple[str, tuple[str, ...], str | None]], indexes: list[int]
    ) -> list[Lookup]:
        """Take leases for the misses among ``requests`` (or re-read the unsure ones)."""
        leased = [index for index in indexes if requests[index][2] is not None]
        plain = [index for index in indexes if requests[index][2] is None]
        out: dict[int, Lookup] = {}
        if plain:
            lookups = await self._read([requests[index][0] for index in plain])
            out.update(zip(plain, lookups, strict=True))
        if leased:
            calls = []
            for index in leased:
                key, names, token = requests[index]
                calls.append(
                    (
                        [
                            self._entry(key),
                            self._lease(key),
                            self._epoch,
                            *(self._counter(name) for name in names),
                        ],
                        [
                            self.key_prefix,
                            token,
                            self._ms(self.lease_ttl),
                            self._ms(self.namespace_ttl),
                            *names,
                        ],
                    )
                )
            replies = await self._pipelined(self._lookup_script, calls)
            for index, reply in zip(leased, replies, strict=True):
                out[index] = _lookup_reply(reply, requests[index][2] or "")
        return [out[index] for index in indexes]

    # -- fills and writes -------------------------------------------------------------------

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
        keys = [
            self._entry(key),
            self._lease(key),
            self._epoch,
            *(self._counter(name) for name in namespaces),
        ]
        args = [lookup.token or "", ttl_ms, self._ms(self.namespace_ttl), epoch, *pairs, payload]
        return keys, args

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
        if self.cluster:
            # redis-py refuses scripts in cluster pipelines: concurrent calls instead (all
            # go to the one node that owns the cache's slot).
            return list(await asyncio.gather(*(script(keys=k, args=a) for k, a in calls)))
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
        await self._release_script(keys=[self._lease(key)], args=[token])

    async def _store(
        self, items: Sequence[tuple[str, bytes]], namespaces: tuple[str, ...], ttl_ms: int
    ) -> None:
        keys = [
            self._epoch,
            *(self._counter(name) for name in namespaces),
            *(name for key, _ in items for name in (self._entry(key), self._lease(key))),
        ]
        try:
            await self._store_script(
                keys=keys,
                args=[
                    ttl_ms,
                    self._ms(self.namespace_ttl),
                    len(namespaces),
                    *namespaces,
                    *(payload for _, payload in items),
                ],
            )
        finally:
            self._forget([self._entry(key) for key, _ in items])

    # -- invalidations ----------------------------------------------------------------------

    async def _remove(self, keys: Sequence[str]) -> None:
        names = [name for key in keys for name in (self._entry(key), self._lease(key))]
        try:
            if self.wait_replicas:
                await self._durably("UNLINK", *names)
            else:
                await self.client.unlink(*names)
        finally:
            self._forget([self._entry(key) for key in keys])

    async def _bump(self, names: tuple[str, ...], *, epoch: bool) -> None:
        keys = [self._epoch] if epoch else []
        expiring = ["0"] if epoch else []
        keys += [self._counter(name) for name in names]
        expiring += ["1"] * len(names)
        args = [self._ms(self.namespace_ttl), *expiring]
        try:
            if self.wait_replicas:
                # The script's text, not its SHA: no NOSCRIPT round on a promoted replica.
                await self._durably("EVAL", _scripts.BUMP, len(keys), *keys, *args)
            else:
                await self._bump_script(keys=keys, args=args)
        finally:
            self._forget(keys)

    def _forget(self, keys: list[str] | None) -> None:
        """Drop what this process just invalidated from the near cache (``None``: all)."""
        # After the write reached Redis (or failed): a near fill in flight is voided, a
        # later one reads the new state, so nothing invalidated here is served afterwards.
        if self._near is not None:
            if keys is None:
                self._near._flush()
            else:
                self._near._invalidate(keys)

    async def _durably(self, *command: Any) -> Any:
        """Run a write, then ``WAIT`` for the replicas on the same connection.

        A write the master acknowledged but no replica received is lost when the master
        dies and a replica takes over. Fewer acknowledgements than ``wait_replicas`` (capped
        at the replicas ``ROLE`` lists) raise `NotReplicatedError`, so the invalidation is
        retried and then covered by the epoch bump, which is itself written this way.
        """
        wait_ms = self._ms((self.invalidation_timeout or 0.2) / 2)
        # Ask for no more replicas than were attached last time: with none left (a failover
        # whose old master has not come back), WAIT would sit out its timeout on every call.
        asked = min(self.wait_replicas, self._attached)
        calls: list[tuple[Any, ...]] = [command, ("WAIT", asked, wait_ms), ("ROLE",)]
        if self.cluster:
            replies = await self._on_slot_node(calls)
        else:
            pipe = self.client.pipeline(transaction=False)
            for call in calls:
                pipe.execute_command(*call)
            replies = await pipe.execute(raise_on_error=False)
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        result, acknowledged, role = replies
        if _raw(role[0]) != b"master":
            raise NotReplicatedError("the node that took the invalidation is not a master")
        # A replica that attached since the last call was not asked for: counted as lost
        # once (one epoch bump) rather than trusted unacknowledged.
        self._attached = len(role[2])
        needed = min(self.wait_replicas, self._attached)
        if int(acknowledged) < needed:
            raise NotReplicatedError(
                f"{acknowledged} of {needed} replicas acknowledged the invalidation"
                f" within {wait_ms} ms"
            )
        return result

    async def _on_slot_node(self, calls: list[tuple[Any, ...]]) -> list[Any]:
        """Send ``calls`` down one connection to the node that owns the cache's slot."""
        cluster: Any = self.client
        try:
            await cluster.initialize()  # a no-op unless the slot map is to be (re)loaded
            node = cluster.get_node_from_key(self._epoch)
            pipe: Any = cluster.pipeline()
            for call in calls:
                pipe.execute_command(*call, target_nodes=node)
            # A redirection (the slot moved) is an error here, not followed: the WAIT
            # must run where the write ran.
            replies: list[Any] = await pipe.execute(raise_on_error=False, allow_redirections=False)
            for reply in replies:
                if isinstance(reply, Exception):
                    raise reply
        except self._store_errors:
            # As redis-py does after a failed command: reload the slot map on the next call,
            # so a failover's new master is found.
            await cluster.aclose()
            raise
        return replies

    async def _remove_matching(self, pattern: str) -> int:
        # Entries and leases in one walk: removing the lease too voids fills in flight. Every
        # SCAN page and every UNLINK batch gets its own deadline, so a long walk is bounded
        # per round trip, not as a whole; a chunk past its deadline fails the invalidation,
        # which the caller retries and then covers with an epoch bump.
        match = f"{self.key_prefix.translate(_GLOB_SPECIAL)}[dl]:{pattern}"
        entry_prefix = f"{self.key_prefix}d:".encode()
        chunk = max(1, self.bulk_chunk_size)
        deadline = self.invalidation_timeout
        removed = 0
        cursor: int = 0
        while True:
            async with asyncio.timeout(deadline):
                cursor, names = await self._scan(cursor, match, chunk)
            for start in range(0, len(names), chunk):
                batch = names[start : start + chunk]
                async with asyncio.timeout(deadline):
                    if self.wait_replicas:
                        await self._durably("UNLINK", *batch)
                    else:
                        await self.client.unlink(*batch)
                removed += sum(_raw(name).startswith(entry_prefix) for name in batch)
                self._forget(None)
            if cursor == 0:
                return removed

    async def _scan(self, cursor: int, match: str, count: int) -> tuple[int, list[Any]]:
        if not self.cluster:
            page: tuple[int, list[Any]] = await self.client.scan(
                cursor=cursor, match=match, count=count
            )
            return page
        # Every key of the cache is in one slot: walk the node that owns it. A cursor is
        # only valid on the node that gave it, so a walk that sees the owner change (a
        # failover) fails, and the failed invalidation is covered by an epoch bump.
        node = self.client.get_node_from_key(self._epoch)  # type: ignore[attr-defined]  # RedisCluster
        if cursor == 0:
            self._scan_node = node.name
        elif node.name != self._scan_node:
            raise self._moved(f"the cache's slot moved to {node.name} during a pattern walk")
        reply: Any = await self.client.scan(
            cursor=cursor, match=match, count=count, target_nodes=node
        )
        cursors, names = reply  # a cluster answers with a cursor per node
        return int(next(iter(cursors.values()))), names

    async def _close(self) -> None:
        if self._hit_reader is not None:
            await self._hit_reader.aclose()
        if self._near is not None:
            await self._near._close()
        if self._owns_client:
            await close(self.client)


def _has_tag(prefix: str) -> bool:
    """Whether ``prefix`` already holds a non-empty ``{...}`` hash tag."""
    start = prefix.find("{")
    return start >= 0 and prefix.find("}", start + 1) > start + 1


def _raw(name: bytes | str) -> bytes:
    # a caller's client may decode replies
    return name if isinstance(name, bytes) else name.encode()


def _lookup_reply(reply: list[Any], token: str) -> Lookup:
    if reply[0] == HIT:
        return Lookup(HIT, bytes(reply[1]))
    generations = tuple(bytes(gen).decode() for gen in reply[2:])
    return Lookup(int(reply[0]), None, generations, token if reply[1] == 1 else None)
