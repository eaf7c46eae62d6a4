"""The in-process cache: same behaviour as Redis, no server."""

from __future__ import annotations

import fnmatch
import itertools
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from underlay.cache._base import CORRUPT, HIT, MISS, BaseCache, Lookup
from underlay.cache._codec import Codec

__all__ = ["MemoryCache"]


@dataclass(frozen=True)
class _Entry:
    payload: bytes
    epoch: int
    generations: tuple[tuple[str, int], ...]
    expires: float


class MemoryCache(BaseCache):
    """An in-process cache with a TTL and a size bound: the embedded default and test double.

    It behaves like :class:`~underlay.cache.RedisCache` (the same test suite runs against
    both): values are stored encoded, fills are lease- and generation-guarded, namespaces
    are O(1) to invalidate, corrupt entries are misses. It is local to the process, so use
    it for one worker, tests and development; several workers need a shared cache.

    Args:
        max_entries: Entries kept; the least recently used are evicted beyond it.
        default_ttl: Seconds an entry lives when ``set`` is given no ``ttl``.
        ttl_jitter: Fraction by which each TTL is randomly shortened (0.1 = up to 10 %).
        lease_ttl: Seconds a fill lease stays valid (the longest a loader may take).
        codec: How values become bytes; defaults to :class:`~underlay.cache.JSONCodec`.

    Example:
        >>> import asyncio
        >>> async def main() -> list[object]:
        ...     async with MemoryCache() as cache:
        ...         await cache.set("user:1", {"name": "Ada"}, namespaces=["users"])
        ...         hit = await cache.get("user:1")
        ...         await cache.bump_namespace("users")
        ...         return [hit, await cache.get("user:1")]
        >>> asyncio.run(main())
        [{'name': 'Ada'}, None]
    """

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        default_ttl: float = 3600,
        ttl_jitter: float = 0.1,
        lease_ttl: float = 10.0,
        codec: Codec | None = None,
    ) -> None:
        super().__init__(
            default_ttl=default_ttl, ttl_jitter=ttl_jitter, lease_ttl=lease_ttl, codec=codec
        )
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.max_entries = max_entries
        self._entries: OrderedDict[str, _Entry | bytes] = OrderedDict()
        self._leases: dict[str, tuple[str, float]] = {}
        self._generations: dict[str, int] = {}
        # One counter for every generation value ever handed out: a namespace forgotten to
        # bound memory comes back with a value no old entry or fill can hold.
        self._counter = itertools.count(1)
        self._epoch = next(self._counter)

    def __len__(self) -> int:
        return len(self._entries)

    def _generation(self, name: str) -> int:
        value = self._generations.get(name)
        if value is None:
            if len(self._generations) >= 4 * self.max_entries + 1024:
                self._generations.clear()
                self._entries.clear()
                self._leases.clear()
            value = self._generations[name] = next(self._counter)
        return value

    def _valid(self, key: str, now: float) -> Lookup:
        entry = self._entries.get(key)
        if entry is None:
            return Lookup(MISS)
        if not isinstance(entry, _Entry):
            del self._entries[key]  # raw bytes were planted: not an entry this cache wrote
            return Lookup(CORRUPT)
        if entry.expires <= now:
            del self._entries[key]
            return Lookup(MISS)
        if entry.epoch != self._epoch or any(
            self._generations.get(name) != gen for name, gen in entry.generations
        ):
            return Lookup(MISS)
        self._entries.move_to_end(key)
        return Lookup(HIT, entry.payload)

    async def _lookup(self, key: str, namespaces: tuple[str, ...], token: str | None) -> Lookup:
        now = time.monotonic()
        found = self._valid(key, now)
        if found.status == HIT or token is None:
            return found
        generations = (str(self._epoch), *(str(self._generation(n)) for n in namespaces))
        lease = self._leases.get(key)
        if lease is not None and lease[1] > now:
            return Lookup(found.status, None, generations, None)
        self._leases[key] = (token, now + self.lease_ttl)
        return Lookup(found.status, None, generations, token)

    async def _read(self, keys: Sequence[str]) -> list[Lookup]:
        now = time.monotonic()
        return [self._valid(key, now) for key in keys]

    async def _fill(
        self, key: str, lookup: Lookup, namespaces: tuple[str, ...], payload: bytes, ttl_ms: int
    ) -> bool:
        now = time.monotonic()
        lease = self._leases.get(key)
        if lease is None or lease[0] != lookup.token or lease[1] <= now:
            return False
        del self._leases[key]
        current = (str(self._epoch), *(str(self._generations.get(n)) for n in namespaces))
        if current != lookup.generations:
            return False
        self._put(key, payload, namespaces, now + ttl_ms / 1000)
        return True

    async def _release(self, key: str, token: str) -> None:
        lease = self._leases.get(key)
        if lease is not None and lease[0] == token:
            del self._leases[key]

    def _put(self, key: str, payload: bytes, namespaces: tuple[str, ...], expires: float) -> None:
        generations = tuple((name, self._generation(name)) for name in namespaces)
        self._entries[key] = _Entry(payload, self._epoch, generations, expires)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def _store(
        self, items: Sequence[tuple[str, bytes]], namespaces: tuple[str, ...], ttl_ms: int
    ) -> None:
        expires = time.monotonic() + ttl_ms / 1000
        for key, payload in items:
            self._leases.pop(key, None)
            self._put(key, payload, namespaces, expires)

    async def _remove(self, keys: Sequence[str]) -> None:
        for key in keys:
            self._entries.pop(key, None)
            self._leases.pop(key, None)

    async def _bump(self, names: tuple[str, ...], *, epoch: bool) -> None:
        for name in names:
            self._generations[name] = next(self._counter)
        if epoch:
            self._epoch = next(self._counter)

    async def _remove_matching(self, pattern: str) -> int:
        matched = [key for key in self._entries if fnmatch.fnmatchcase(key, pattern)]
        for key in [key for key in self._leases if fnmatch.fnmatchcase(key, pattern)]:
            del self._leases[key]
        await self._remove(matched)
        return len(matched)

    async def _close(self) -> None:
        self._entries.clear()
        self._leases.clear()
