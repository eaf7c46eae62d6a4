"""An in-process near cache in front of `RedisCache`, kept coherent by Redis tracking.

The near cache mirrors the Redis values a hit reads: the entry and the counters it was
stored under (the epoch and each namespace's generation). A near hit runs the same check as
a Redis hit (`_entry.check`) against the mirrored counters, in process, with no round trip.

Coherence comes from Redis client-side caching in broadcast mode: one dedicated connection
runs ``CLIENT TRACKING ON REDIRECT <itself> BCAST PREFIX <entries> PREFIX <counters> PREFIX
<epoch>`` and ``SUBSCRIBE __redis__:invalidate``, so the server announces every change
(write, delete, expiry, eviction, flush) of a key under the cache's prefix, made by any
client. RESP2 with a redirect to itself is used rather than RESP3 pushes: it behaves the
same with every redis-py version and parser (pushes on RESP3 are handled by parser
internals that differ between the pure-Python and hiredis parsers).

Races and losses, as the Redis client-side caching reference describes them:

* A fill records, before it sends its ``MGET``, the invalidation sequence number; an
  announcement that arrives for one of its keys before the reply is stored marks the key,
  and the fill then drops what it read for it (the placeholder rule: the invalidation wins).
* Losing the tracking connection (an error, a ``CLIENT KILL``, a ``PING`` unanswered for
  one more interval) drops every mirrored value at once and turns the near cache off until
  tracking is back; fills that started before are dropped as well.
* Every mirrored entry expires after ``ttl`` seconds whatever happens.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from underlay.cache._entry import Entry, parse

__all__ = ["NearCache"]

logger = logging.getLogger("underlay.cache")

_CHANNEL: Final = b"__redis__:invalidate"


class _Mirrored:
    """A mirrored entry: its payload, the counters it needs unchanged, when it expires."""

    __slots__ = ("expires", "needs", "payload")

    def __init__(
        self, payload: bytes, needs: tuple[tuple[str, bytes], ...], expires: float
    ) -> None:
        self.payload = payload
        self.needs = needs
        self.expires = expires


class NearCache:
    """An opt-in in-process cache in front of a `RedisCache`: hits cost microseconds.

    Pass one to a cache: ``RedisCache(url, near_cache=NearCache(max_entries=10_000))``. A
    lookup that finds an entry here, and finds the counters it was stored under unchanged
    here too, is answered without a round trip; anything else goes to Redis as before, and a
    Redis hit is mirrored here for the next lookup.

    What it guarantees:

    * This process's own invalidations (commits through ``Database(cache=...)``, `delete`,
      `bump_namespace`, `set`, `invalidate_pattern`) take effect here before they return:
      nothing this process invalidated is served afterwards.
    * Another process's invalidation is seen as soon as Redis's announcement of it arrives
      on the tracking connection (normally well under a millisecond on a LAN). Until it
      arrives, the old value can be served: that window is the staleness bound.
    * An announcement that arrives while a fill is reading Redis wins: the fill does not
      store what it read.
    * If the tracking connection is lost, or a ``PING`` on it stays unanswered for one more
      ``ping_interval``, every entry is dropped at once and lookups go to Redis until
      tracking is back. A connection that goes silent is therefore trusted for at most about
      two ``ping_interval`` s.
    * No entry is served more than ``ttl`` seconds after it was read from Redis.

    It works with a single Redis server (``url`` or a ``client`` of ``redis.asyncio.Redis``),
    not with Redis Cluster or Sentinel. Redis announces writes to every key under the cache's
    prefix to every process that uses a near cache (broadcast tracking), so a fill elsewhere
    costs each of them one small message.

    Args:
        max_entries: Entries kept; the oldest filled is dropped first beyond it.
        ttl: Seconds an entry is served at most after it was read from Redis.
        ping_interval: Seconds of silence on the tracking connection before it is pinged.

    Raises:
        ValueError: A bound that is not positive.
    """

    def __init__(
        self, *, max_entries: int = 10_000, ttl: float = 60.0, ping_interval: float = 1.0
    ) -> None:
        if max_entries <= 0 or ttl <= 0 or ping_interval <= 0:
            raise ValueError("max_entries, ttl and ping_interval must be positive")
        self.max_entries = max_entries
        self.ttl = ttl
        self.ping_interval = ping_interval
        #: Lookups answered here.
        self.hits = 0
        #: Times every entry was dropped (a lost tracking connection, a flushed server).
        self.flushes = 0
        self._entries: dict[str, _Mirrored] = {}
        self._counters: dict[str, bytes] = {}
        # The placeholder rule: fills in flight count per key; an invalidation of a key with
        # fills in flight records its sequence number, and those fills drop the key.
        self._sequence = 0
        self._inflight: dict[str, int] = {}
        self._dirty: dict[str, int] = {}
        self._active = False
        self._owner: object | None = None
        self._task: asyncio.Task[None] | None = None
        self._client_id: int | None = None
        self._connect: Callable[[], Any] | None = None
        self._prefixes: tuple[str, ...] = ()
        self._epoch = ""
        self._counter_prefix = ""
        # Test hooks: called with "connected", "lost", "flushed" or "invalidated", and keys.
        self._listeners: list[Callable[[str, tuple[str, ...]], None]] = []

    def __repr__(self) -> str:
        return f"NearCache(max_entries={self.max_entries}, ttl={self.ttl})"

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def connected(self) -> bool:
        """Whether tracking is active, so that lookups may be answered here."""
        return self._active

    # -- wiring (called by RedisCache) ------------------------------------------------------

    def _attach(
        self, owner: object, connect: Callable[[], Any], key_prefix: str, epoch: str
    ) -> None:
        if self._owner is not None:
            raise ValueError("a NearCache belongs to one RedisCache; create one per cache")
        self._owner = owner
        self._connect = connect
        self._epoch = epoch
        self._counter_prefix = f"{key_prefix}g:"
        self._prefixes = (f"{key_prefix}d:", self._counter_prefix, epoch)

    def _start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._track())

    async def _close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._flush()

    # -- lookups and fills ------------------------------------------------------------------

    def _lookup(self, key: str) -> bytes | None:
        """Return the payload of entry key ``key`` if it is here and current, else ``None``."""
        if not self._active:
            if self._task is None or self._task.done():
                self._start()
            return None
        found = self._entries.get(key)
        if found is None:
            return None
        if found.expires <= time.monotonic():
            del self._entries[key]
            return None
        counters = self._counters
        for name, value in found.needs:
            if counters.get(name) != value:
                return None
        self.hits += 1
        return found.payload

    def _begin(self, keys: Sequence[str]) -> int | None:
        """Mark a fill of ``keys`` in flight (before its read is sent); return its ticket."""
        if not self._active:
            return None
        inflight = self._inflight
        for key in keys:
            inflight[key] = inflight.get(key, 0) + 1
        return self._sequence

    def _end(self, ticket: int | None, keys: Sequence[str]) -> set[str]:
        """Close a fill; return the keys invalidated since `_begin` (to be dropped)."""
        if ticket is None:
            return set(keys)
        dropped: set[str] = set()
        for key in keys:
            if self._dirty.get(key, -1) > ticket or not self._active:
                dropped.add(key)
            left = self._inflight.get(key, 0) - 1
            if left > 0:
                self._inflight[key] = left
            else:
                self._inflight.pop(key, None)
                self._dirty.pop(key, None)
        return dropped

    async def _read(
        self, mget: Callable[[list[str]], Awaitable[list[Any]]], keys: list[str], entries: range
    ) -> list[Any]:
        """Run ``mget(keys)`` and mirror what it read: ``keys`` at ``entries`` are entries.

        The fill is marked in flight before the read is sent, so an invalidation of any of
        its keys that arrives before the reply is stored wins (the key is not mirrored).
        """
        ticket = self._begin(keys)
        values: list[Any] = []
        try:
            values = await mget(keys)
        finally:
            dropped = self._end(ticket, keys)
        if ticket is not None and values:
            read = dict(zip(keys, values, strict=True))
            for position in entries:
                self._fill(keys[position], values[position], read, dropped)
        return values

    def _fill(self, key: str, raw: Any, read: dict[str, Any], dropped: set[str]) -> None:
        """Mirror entry ``key`` (read as ``raw``) with the counters read along with it."""
        if key in dropped or not isinstance(raw, bytes):
            return
        entry = parse(raw)
        if entry is None:
            return
        needs = self._needs(entry, read, dropped)
        if needs is None:
            return
        for name, value in needs:
            self._counters[name] = value
        while len(self._counters) > 2 * self.max_entries:
            self._counters.pop(next(iter(self._counters)))
        self._entries.pop(key, None)  # re-inserted last: the oldest fill is dropped first
        self._entries[key] = _Mirrored(entry.payload, needs, time.monotonic() + self.ttl)
        while len(self._entries) > self.max_entries:
            self._entries.pop(next(iter(self._entries)))

    def _needs(
        self, entry: Entry, read: dict[str, Any], dropped: set[str]
    ) -> tuple[tuple[str, bytes], ...] | None:
        """The counters ``entry`` needs unchanged, if all were read current and kept."""
        pairs = [(self._epoch, entry.epoch)]
        pairs += [
            (f"{self._counter_prefix}{name.decode()}", gen) for name, gen in entry.generations
        ]
        for name, value in pairs:
            if name in dropped or read.get(name) != value:
                return None  # a counter not read along, moved, or invalidated meanwhile
        return tuple(pairs)

    # -- invalidation -----------------------------------------------------------------------

    def _invalidate(self, keys: Sequence[str]) -> None:
        """Drop ``keys`` (entry or counter keys) and void the fills in flight for them."""
        self._sequence += 1
        for key in keys:
            self._entries.pop(key, None)
            self._counters.pop(key, None)
            if key in self._inflight:
                self._dirty[key] = self._sequence
        self._notify("invalidated", tuple(keys))

    def _flush(self) -> None:
        """Drop every entry and void every fill in flight."""
        self._entries.clear()
        self._counters.clear()
        self._sequence += 1
        for key in self._inflight:
            self._dirty[key] = self._sequence
        self.flushes += 1
        self._notify("flushed")

    def _notify(self, event: str, keys: tuple[str, ...] = ()) -> None:
        for listener in self._listeners:
            listener(event, keys)

    # -- the tracking connection ------------------------------------------------------------

    async def _track(self) -> None:
        """Keep a tracking connection open; drop everything whenever it is lost."""
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                self._active = False
                raise
            except Exception as exc:  # noqa: BLE001 - any failure means: trust nothing
                if self._active:
                    logger.warning("near cache: tracking connection lost (%s); flushed", exc)
            if self._active:
                self._active = False
                self._flush()
                self._notify("lost")
            await asyncio.sleep(min(self.ping_interval, 1.0))

    async def _session(self) -> None:
        assert self._connect is not None  # noqa: S101 - set by _attach
        connection = self._connect()
        try:
            await connection.connect()
            self._client_id = int(await _call(connection, "CLIENT", "ID"))
            args: list[Any] = ["CLIENT", "TRACKING", "ON", "REDIRECT", self._client_id, "BCAST"]
            for prefix in self._prefixes:
                args += ["PREFIX", prefix]
            await _call(connection, *args)
            await _call(connection, "SUBSCRIBE", _CHANNEL)
            # Nothing mirrored predates tracking: start empty.
            self._flush()
            self._active = True
            self._notify("connected")
            pinged = False
            while True:
                message = await connection.read_response(timeout=self.ping_interval)
                if message is None:
                    if pinged:
                        raise ConnectionError("tracking connection did not answer PING")
                    await connection.send_command("PING")
                    pinged = True
                    continue
                pinged = False
                self._handle(message)
        finally:
            self._client_id = None
            with contextlib.suppress(Exception):
                await connection.disconnect()

    def _handle(self, message: Any) -> None:
        if not isinstance(message, list) or len(message) < 3 or message[0] != b"message":
            return  # a PING reply or a subscription confirmation
        keys = message[2]
        if keys is None:  # FLUSHDB / FLUSHALL: every key changed
            self._flush()
        else:
            self._invalidate([_text(key) for key in keys])


async def _call(connection: Any, *args: Any) -> Any:
    await connection.send_command(*args)
    return await connection.read_response()


def _text(key: bytes | str) -> str:
    return key.decode("utf-8", "surrogateescape") if isinstance(key, bytes) else key


def tracking_connection(client: Any) -> Callable[[], Any]:
    """Return a factory of connections to ``client``'s server for tracking (RESP2)."""
    pool = client.connection_pool
    if hasattr(pool, "service_name"):
        raise ValueError("a near cache needs a single Redis server, not Sentinel")
    # Announcements are parsed as bytes whatever the caller's client decodes.
    kwargs = {**pool.connection_kwargs, "protocol": 2, "decode_responses": False}
    factory: Callable[..., Any] = pool.connection_class
    return lambda: factory(**kwargs)
