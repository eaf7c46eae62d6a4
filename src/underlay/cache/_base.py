"""Behaviour both caches share: guarded fills, singleflight, batches and statistics.

A cache entry is valid while the cache's *epoch* and the *generation* of each namespace it
was stored under are unchanged. Generations are read from the store on every lookup (never
memoised), so a bump made by any process invalidates the entry for every process. A fill
after a miss is guarded twice: a lease token taken with the lookup (deleting the key voids
it) and the generations read with the lookup (a bump makes them stale). The store accepts
the fill only if both are still current, atomically, so a value loaded before an
invalidation can never land after it.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import itertools
import random
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from functools import partial
from types import TracebackType
from typing import Any, Self, TypeVar

from underlay.cache._breaker import CircuitBreaker
from underlay.cache._codec import Codec, DecodeError, JSONCodec
from underlay.cache._faults import Failed
from underlay.cache._flight import _UNDECODED, CORRUPT, HIT, MISS, Lookup, SingleFlight
from underlay.cache._stats import CacheStats

__all__ = ["CORRUPT", "HIT", "MISS", "BaseCache", "CheckedNames", "Lookup", "check_namespaces"]

_T = TypeVar("_T")


def _chunks(items: Sequence[_T], size: int) -> list[Sequence[_T]]:
    step = max(1, int(size))
    return [items[start : start + step] for start in range(0, len(items), step)]


class CheckedNames(tuple[str, ...]):
    """Namespaces `check_namespaces` accepted (or built to its rules): not checked again."""

    __slots__ = ()


def check_namespaces(namespaces: Iterable[str]) -> CheckedNames:
    """Return ``namespaces`` as a tuple without duplicates, rejecting bad names.

    Sorted, unless they come as `CheckedNames` (returned as they are: the cached
    repository builds an entry's names once per scope and not on every read).
    """
    if type(namespaces) is CheckedNames:
        return namespaces
    names = CheckedNames(sorted(set(namespaces)))
    for name in names:
        if not name or "\n" in name:
            raise ValueError(f"invalid cache namespace {name!r}: non-empty, no newlines")
    return names


class BaseCache(SingleFlight):
    """The shared implementation of `underlay.cache.Cache`.

    Subclasses provide the store primitives (``_lookup``, ``_fill``, ...); this class adds
    TTL jitter, the codec, in-process singleflight, counters, deadlines, the circuit breaker
    and fail-safe invalidation.
    """

    #: Keys per round trip in `get_many` and `set_many` (and per batch when
    #: `invalidate_pattern` deletes); each chunk has its own deadline. Assign to change it.
    bulk_chunk_size: int = 500

    def __init__(
        self,
        *,
        default_ttl: float,
        ttl_jitter: float,
        lease_ttl: float,
        codec: Codec | None,
        timeout: float | None = None,
        invalidation_timeout: float | None = None,
        invalidation_attempts: int = 1,
        failure_threshold: int = 5,
        cooldown: float = 5.0,
    ) -> None:
        if default_ttl <= 0:
            raise ValueError("default_ttl must be positive")
        if not 0 <= ttl_jitter < 1:
            raise ValueError("ttl_jitter must be in [0, 1)")
        self.default_ttl = default_ttl
        self.ttl_jitter = ttl_jitter
        self.lease_ttl = lease_ttl
        self.codec: Codec = codec or JSONCodec()
        self.timeout = timeout
        self.invalidation_timeout = invalidation_timeout
        self.invalidation_attempts = max(1, invalidation_attempts)
        self.stats = CacheStats()
        self._breaker = CircuitBreaker(threshold=failure_threshold, cooldown=cooldown)
        # Flights by key, tagged with the local invalidation sequence when they started: a
        # caller arriving after this process invalidated something starts a new load.
        self._flights: dict[str, tuple[int, asyncio.Future[bytes]]] = {}
        self._sequence = 0
        self._lost = 0  # invalidations lost so far; the epoch bump must cover all of them
        self._recovery: asyncio.Task[None] | None = None
        self._deadlines = {}
        # Lease tokens only need to be unique: a random per-cache part and a counter.
        self._token_base = secrets.token_hex(8)
        self._tokens = itertools.count()

    # -- store primitives (`_lookup`, `_fill` and `_release` are declared by SingleFlight) --

    @abc.abstractmethod
    async def _read(self, keys: Sequence[str]) -> list[Lookup]:
        """Read several keys in one round trip (no leases)."""

    async def _lookup_many(
        self, requests: Sequence[tuple[str, tuple[str, ...], str | None]]
    ) -> list[Lookup]:
        """``_lookup`` for several (key, namespaces, token) requests; one round trip in Redis."""
        return [await self._lookup(key, names, token) for key, names, token in requests]

    async def _fill_many(
        self, fills: Sequence[tuple[str, Lookup, tuple[str, ...], bytes]], ttl_ms: int
    ) -> list[bool]:
        """``_fill`` for several entries; one round trip in Redis."""
        return [
            await self._fill(key, lookup, names, data, ttl_ms) for key, lookup, names, data in fills
        ]

    @abc.abstractmethod
    async def _store(
        self, items: Sequence[tuple[str, bytes]], namespaces: tuple[str, ...], ttl_ms: int
    ) -> None:
        """Store entries unconditionally, voiding their leases."""

    @abc.abstractmethod
    async def _remove(self, keys: Sequence[str]) -> None:
        """Delete entries and their leases."""

    @abc.abstractmethod
    async def _remove_matching(self, pattern: str) -> int:
        """Delete entries (and leases) whose key matches a glob pattern; return the count."""

    async def _close(self) -> None:
        """Release the store's resources."""

    def _near_hit(self, key: str) -> bytes | None:
        """Return the payload of ``key`` from an in-process near cache, if one holds it."""
        return None

    # -- public API -------------------------------------------------------------------------

    async def get(self, key: str, default: Any = None) -> Any:
        """Return the value cached under ``key``, or ``default`` on a miss.

        A value whose epoch or namespace generations moved, an expired one, a corrupt one
        (which is also removed) and an unreachable cache all read as a miss.

        Args:
            key: The key, relative to the cache's prefix.
            default: What to return on a miss.
        """
        found = await self.get_many([key])
        return found.get(key, default)

    async def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        """Return the cached values of ``keys`` that are present.

        Keys are read in chunks of ``bulk_chunk_size``, one round trip each, each with its
        own deadline: a chunk that fails or times out reads as misses for its keys only.

        Args:
            keys: The keys to read.

        Returns:
            A mapping of each key that hit to its value; missing keys are absent.
        """
        keys = list(dict.fromkeys(keys))
        values: dict[str, Any] = {}
        for chunk in _chunks(keys, self.bulk_chunk_size):
            lookups = await self._guarded_read(partial(self._read, chunk))
            if isinstance(lookups, Failed):
                self.stats.misses += len(chunk)
                continue
            for key, lookup in zip(chunk, lookups, strict=True):
                decoded = await self._decoded(key, lookup)
                if not isinstance(decoded, Failed):
                    values[key] = decoded
        return values

    async def set(
        self, key: str, value: Any, *, ttl: float | None = None, namespaces: Iterable[str] = ()
    ) -> None:
        """Store ``value`` under ``key`` unconditionally (fails open: an outage drops it).

        Prefer `get_or_set` for values loaded from a database: a plain ``set`` of a
        value read earlier can overwrite a newer one.

        Args:
            key: The key.
            value: A value the codec can encode (JSON types, datetimes, UUIDs, decimals...).
            ttl: Seconds to keep it (default: the cache's ``default_ttl``), minus jitter.
            namespaces: Namespaces whose `bump_namespace` invalidates this entry.
        """
        await self.set_many({key: value}, ttl=ttl, namespaces=namespaces)

    async def set_many(
        self,
        items: Mapping[str, Any],
        *,
        ttl: float | None = None,
        namespaces: Iterable[str] = (),
    ) -> list[str]:
        """Store several values unconditionally, in chunks; return the keys not stored.

        Items are written in chunks of ``bulk_chunk_size``, one round trip each, each with
        its own deadline, so one slow round trip costs only its own chunk instead of the
        whole batch. A chunk that fails (an error, its deadline, an open circuit breaker)
        is dropped as a whole and its keys are returned; the other chunks are stored. As
        for `set`, nothing is raised: an unstored entry is a later miss, never wrong data.

        Args:
            items: Keys and their values.
            ttl: Seconds to keep them (default: the cache's ``default_ttl``), minus jitter.
            namespaces: Namespaces whose `bump_namespace` invalidates these entries.

        Returns:
            The keys of the chunks that were not stored, in the order given (empty when
            every item was stored).
        """
        names = check_namespaces(namespaces)
        encoded = [(key, self.codec.encode(value)) for key, value in items.items()]
        ttl_ms = self._ttl_ms(ttl)
        unstored: list[str] = []
        for chunk in _chunks(encoded, self.bulk_chunk_size):
            stored = await self._guarded_read(partial(self._store, chunk, names, ttl_ms))
            if isinstance(stored, Failed):
                unstored.extend(key for key, _ in chunk)
        return unstored

    async def delete(self, *keys: str) -> None:
        """Invalidate ``keys``: delete the entries and void fills in flight for them.

        Fails safe: retried within the invalidation budget; if it still cannot be delivered,
        every entry is invalidated (an epoch bump) as soon as the cache answers again.

        Args:
            *keys: The keys to delete.
        """
        if keys:
            await self._invalidate(lambda: self._remove(list(keys)))

    async def bump_namespace(self, *names: str) -> None:
        """Invalidate every entry stored under any of ``names``, in O(1) per namespace.

        Each namespace has a generation counter; entries remember the generation they were
        stored under and lookups compare it with the current one, so a bump invalidates them
        for every process at once without touching the entries. Fails safe like
        `delete`.

        Args:
            *names: The namespaces to invalidate.
        """
        checked = check_namespaces(names)
        if checked:
            await self._invalidate(lambda: self._bump(checked, epoch=False))

    async def invalidate_pattern(self, pattern: str) -> int:
        """Delete the entries whose keys match the glob ``pattern`` (``*``, ``?``, ``[..]``).

        This walks the whole keyspace with a cursor (never ``KEYS``): O(number of keys in
        the store), so keep it for maintenance; use namespaces for routine invalidation.
        The walk goes in chunks of ``bulk_chunk_size`` keys (a ``SCAN`` page, an ``UNLINK``
        batch), each with its own ``invalidation_timeout`` deadline. Fails safe like
        `delete`: a chunk that fails on every attempt makes the cache drop every entry
        (an epoch bump) as soon as it answers again, so nothing stale is ever read.

        Args:
            pattern: A glob relative to the cache's prefix.

        Returns:
            How many entries were deleted (0 when the cache could not be reached).
        """
        removed = 0

        async def run() -> None:
            nonlocal removed
            removed = await self._remove_matching(pattern)

        # No overall deadline: a scan takes as long as the keyspace is large; each chunk
        # has its own (see the store's _remove_matching).
        await self._invalidate(run, deadline=None)
        return removed

    async def get_or_set(
        self,
        key: str,
        loader: Callable[[], Awaitable[Any]],
        *,
        ttl: float | None = None,
        namespaces: Iterable[str] = (),
    ) -> Any:
        """Return the cached value of ``key``, or load, store and return it.

        Concurrent misses on one key in this process run ``loader`` once and share its
        result. Across processes a lease lets one filler win. The fill is refused if ``key``
        was deleted or one of ``namespaces`` bumped after the lookup, so a value loaded from
        old data is never stored over an invalidation. A hit is one round trip. The value
        returned on a miss is passed through the codec, so a miss and a hit return equal
        values of the same types.

        Args:
            key: The key.
            loader: A zero-argument coroutine function producing the value.
            ttl: Seconds to keep the value (default: ``default_ttl``), minus jitter.
            namespaces: Namespaces whose `bump_namespace` invalidates the entry.

        Returns:
            The cached or freshly loaded value.
        """
        return await self.load(key, loader, ttl=ttl, namespaces=namespaces)

    async def load(
        self,
        key: str,
        loader: Callable[[], Awaitable[Any]],
        *,
        ttl: float | None = None,
        namespaces: Iterable[str] = (),
        fill: bool | Callable[[], bool] = True,
        raw: bool = False,
    ) -> Any:
        """Like `get_or_set`, with ``fill=False`` to read the cache but never store.

        ``fill=False`` suits loaders whose view of the data may be older than the cache's
        (a long-running transaction's snapshot): their result is returned, not published.

        Args:
            key: The key.
            loader: A zero-argument coroutine function producing the value.
            ttl: Seconds to keep the value (default: ``default_ttl``), minus jitter.
            namespaces: Namespaces whose `bump_namespace` invalidates the entry.
            fill: Store the loaded value (guarded as in `get_or_set`). A
                zero-argument callable returning that decision is called only on a miss,
                before ``loader``, so a hit never pays for the decision.
            raw: Return the encoded bytes instead of the value; a hit's payload is not
                decoded (for callers that parse it themselves, such as
                `CachedRepository`, and `delete` what they cannot parse).

        Returns:
            The cached or freshly loaded value (its encoded bytes with ``raw``).
        """
        if raw:
            # The hit path: one look-up, nothing else (no flight, no lease, no fill decision).
            found = self._near_payload(key)
            if found is not None:
                return found
            names = check_namespaces(namespaces)
            probe = await self._read_raw(key, names)
            if isinstance(probe, bytes):
                return probe
            return await self._load_raw(key, loader, ttl, names, probe, fill=fill)
        near = self._near_hit(key) if not self._lost else None
        if near is not None:
            with contextlib.suppress(DecodeError):  # not decodable: the long way removes it
                value = self.codec.decode(near)
                self.stats.hits += 1
                return value
        value, payload = await self._single_flight(
            key, loader, ttl, check_namespaces(namespaces), None, fill=fill, decode=True
        )
        return self.codec.decode(payload) if value is _UNDECODED else value

    async def load_many(
        self,
        entries: Mapping[str, Iterable[str]],
        loader: Callable[[list[str]], Awaitable[Mapping[str, Any]]],
        *,
        ttl: float | None = None,
        fill: bool = True,
        raw: bool = False,
    ) -> dict[str, Any]:
        """Return a value for every key, loading all the misses with one ``loader`` call.

        The lookup and the fills are one round trip each, guarded like `get_or_set`
        (leases and namespace generations), so no fill lands after an invalidation. There
        is no in-process singleflight for batches.

        Args:
            entries: Each key and the namespaces its entry belongs to.
            loader: Called with the keys that missed; returns their values (a key it leaves
                out is stored and returned as ``None``).
            ttl: Seconds to keep loaded values (default: ``default_ttl``), minus jitter.
            fill: Store the loaded values.
            raw: Return each value's encoded bytes, as `load` does.

        Returns:
            Every key of ``entries`` with its value (its encoded bytes with ``raw``).
        """
        requests = [
            (key, check_namespaces(names), self._token() if fill else None)
            for key, names in entries.items()
        ]
        if not requests:
            return {}
        lookups = await self._guarded_read(partial(self._lookup_many, requests))
        values: dict[str, Any] = {}
        missed: list[tuple[str, tuple[str, ...], Lookup | None]] = []
        for index, (key, names, _) in enumerate(requests):
            lookup = None if isinstance(lookups, Failed) else lookups[index]
            if lookup is None:
                self.stats.misses += 1
            elif raw and lookup.status == HIT and lookup.payload is not None:
                self.stats.hits += 1
                values[key] = lookup.payload
                continue
            else:
                value = await self._decoded(key, lookup)
                if not isinstance(value, Failed):
                    values[key] = value
                    continue
            missed.append((key, names, lookup))
        if missed:
            payloads = await self._load_missed(missed, loader, ttl, fill=fill)
            values.update(
                payloads if raw else {k: self.codec.decode(p) for k, p in payloads.items()}
            )
        return values

    async def _load_missed(
        self,
        missed: list[tuple[str, tuple[str, ...], Lookup | None]],
        loader: Callable[[list[str]], Awaitable[Mapping[str, Any]]],
        ttl: float | None,
        *,
        fill: bool,
    ) -> dict[str, bytes]:
        try:
            loaded = await loader([key for key, _, _ in missed])
        except BaseException:
            for key, _, lookup in missed:
                if lookup is not None and lookup.token is not None:
                    held = lookup.token
                    await self._guarded_read(partial(self._release, key, held))
            raise
        payloads = {key: self.codec.encode(loaded.get(key)) for key, _, _ in missed}
        if fill:
            fills = [
                (key, lookup, names, payloads[key])
                for key, names, lookup in missed
                if lookup is not None and lookup.token is not None
            ]
            self.stats.fill_rejected += sum(
                1 for _, _, lookup in missed if lookup is not None and lookup.token is None
            )
            if fills:
                ttl_ms = self._ttl_ms(ttl)
                stored = await self._guarded_read(lambda: self._fill_many(fills, ttl_ms))
                if not isinstance(stored, Failed):
                    self.stats.fills += sum(stored)
                    self.stats.fill_rejected += len(stored) - sum(stored)
        return payloads

    @property
    def pending_invalidation(self) -> bool:
        """Whether an invalidation was lost and the epoch bump that covers it is pending."""
        return self._lost > 0

    async def aclose(self) -> None:
        """Stop background recovery and release connections."""
        if self._recovery is not None:
            self._recovery.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recovery
            self._recovery = None
        await self._close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # -- internals --------------------------------------------------------------------------

    def _token(self) -> str:
        return f"{self._token_base}{next(self._tokens):x}"

    def _ttl_ms(self, ttl: float | None) -> int:
        seconds = self.default_ttl if ttl is None else ttl
        if seconds <= 0:
            raise ValueError("ttl must be positive")
        # Jitter spreads the expiry of entries filled together (no synchronized stampede).
        spread = 1 - self.ttl_jitter * random.random()  # noqa: S311 - jitter, not security
        return max(1, int(seconds * 1000 * spread))
