"""Reads of one key: the hit first, then one load per key in this process, guarded fills.

A read looks the key up first, taking neither a lease nor a flight, so a hit costs one
look-up and nothing else. Only a miss joins the load in flight for its key in this process
(one started before this process's last invalidation is not joined) or starts one: its
leader asks whether it may fill, takes the lease (with the generations current then), loads
and stores the value only if the lease and the generations are still current. A caller that
misses while a load is in flight looked up once (one more round trip than waiting blindly)
and then waits for the leader's result.
"""

from __future__ import annotations

import abc
import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, Final, NamedTuple

from underlay.cache._codec import Codec, DecodeError
from underlay.cache._faults import FAILED, Failed, FaultPolicy

__all__ = ["CORRUPT", "HIT", "MISS", "Lookup", "SingleFlight"]

#: What `SingleFlight._load` returns for the value when asked not to decode.
_UNDECODED: Final = object()

logger = logging.getLogger("underlay.cache")

HIT: Final = 1
MISS: Final = 0
CORRUPT: Final = -1


class _LeaderGoneError(Exception):
    """The caller loading a key was cancelled; a waiting caller loads instead."""


def _hand_over(future: asyncio.Future[bytes]) -> None:
    """Tell the callers waiting on ``future`` to look up (and load) by themselves."""
    future.set_exception(_LeaderGoneError())
    future.exception()  # marked retrieved: nobody logs it


class Lookup(NamedTuple):
    """What the store answered to a lookup (a named tuple: made on every hit).

    Attributes:
        status: ``HIT``, ``MISS`` or ``CORRUPT`` (the store already removed the entry).
        payload: The stored bytes on a hit.
        generations: On a miss, the epoch then each requested namespace's generation.
        token: On a miss, the lease token if this caller got the lease, else ``None``.
    """

    status: int
    payload: bytes | None = None
    generations: tuple[str, ...] = ()
    token: str | None = None


class SingleFlight(FaultPolicy):
    """`BaseCache`'s single-key reads (``load`` and what it needs); see the module doc."""

    codec: Codec
    _flights: dict[str, tuple[int, asyncio.Future[bytes]]]
    _tokens: itertools.count[int]

    @abc.abstractmethod
    async def _lookup(self, key: str, namespaces: tuple[str, ...], token: str | None) -> Lookup:
        """Read ``key``; on a miss with ``token``, read generations and try to take the lease."""

    @abc.abstractmethod
    async def _fill(
        self, key: str, lookup: Lookup, namespaces: tuple[str, ...], payload: bytes, ttl_ms: int
    ) -> bool:
        """Store ``payload`` if the lease and generations of ``lookup`` are still current."""

    @abc.abstractmethod
    async def _release(self, key: str, token: str) -> None:
        """Give a lease back without filling."""

    @abc.abstractmethod
    async def _remove(self, keys: list[str]) -> None:
        """Delete entries and their leases."""

    @abc.abstractmethod
    def _near_hit(self, key: str) -> bytes | None:
        """Return the payload of ``key`` from an in-process near cache, if one holds it."""

    @abc.abstractmethod
    def _token(self) -> str:
        """Return a new lease token."""

    @abc.abstractmethod
    def _ttl_ms(self, ttl: float | None) -> int:
        """Return the jittered TTL in milliseconds."""

    async def _read_raw(self, key: str, names: tuple[str, ...]) -> bytes | Lookup | Failed:
        """Look ``key`` up in the store once, with no lease and no flight (after the near cache).

        Returns the payload of a hit (counted). Anything else is returned as it is, for
        `_load_raw` to go on from without looking up again.
        """
        probe = await self._guarded_read(self._lookup, key, names, None)
        if type(probe) is Lookup and probe.status == HIT and probe.payload is not None:
            self.stats.hits += 1
            return probe.payload
        return probe

    def _near_payload(self, key: str) -> bytes | None:
        """Return the payload of ``key`` if the near cache holds it (a hit, counted).

        The first step of `load`; a caller may take it before building its loader.
        """
        if self._lost:
            return None  # an owed epoch bump: the store decides, after recovery
        payload = self._near_hit(key)
        if payload is not None:
            self.stats.hits += 1
        return payload

    async def _load_raw(
        self,
        key: str,
        loader: Callable[[], Awaitable[Any]],
        ttl: float | None,
        names: tuple[str, ...],
        probe: Lookup | Failed,
        *,
        fill: bool | Callable[[], bool],
    ) -> bytes:
        """`load` with ``raw=True`` after `_read_raw` found no hit (``probe``)."""
        self._count_corrupt(key, probe)
        _, payload = await self._single_flight(
            key, loader, ttl, names, probe, fill=fill, decode=False
        )
        return payload

    async def _single_flight(
        self,
        key: str,
        loader: Callable[[], Awaitable[Any]],
        ttl: float | None,
        names: tuple[str, ...],
        probe: Lookup | Failed | None,
        *,
        fill: bool | Callable[[], bool],
        decode: bool,
    ) -> tuple[Any, bytes]:
        """Return a hit, else load once per key in this process and share the result.

        The look-up comes first and takes neither a lease nor a flight, so a hit costs
        one look-up and nothing else. Only a miss joins the load in flight for ``key`` (one
        started before this process's last invalidation is not joined) or starts one. A
        ``probe`` is a look-up the caller made already (a miss): it is not repeated.
        """
        if fill is False:
            return await self._load(key, loader, ttl, names, probe, fill=False, decode=decode)
        while True:
            if probe is None:
                probe = await self._guarded_read(self._lookup, key, names, None)
                found = await self._probe_hit(key, probe, decode=decode)
                if found is not None:
                    return found
            flight = self._flights.get(key)
            if flight is None or flight[0] != self._sequence:
                break
            try:
                # Shielded: a waiter that is cancelled must not cancel the shared result.
                payload = await asyncio.shield(flight[1])
            except _LeaderGoneError:
                probe = None  # the loading caller was cancelled (or may not fill): look again
                continue
            return _UNDECODED, payload
        # No await since the flight check: this caller loads; later misses wait for it.
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        flight = (self._sequence, future)
        self._flights[key] = flight
        try:
            value, payload = await self._lead(
                key, loader, ttl, names, probe, fill=fill, decode=decode, flight=flight
            )
        except BaseException as exc:
            if not future.done():
                cancelled = isinstance(exc, asyncio.CancelledError)
                future.set_exception(_LeaderGoneError() if cancelled else exc)
                future.exception()  # marked retrieved: waiters re-raise it, nobody else logs it
            raise
        else:
            if not future.done():
                future.set_result(payload)
            return value, payload
        finally:
            if self._flights.get(key) is flight:
                del self._flights[key]

    async def _lead(
        self,
        key: str,
        loader: Callable[[], Awaitable[Any]],
        ttl: float | None,
        names: tuple[str, ...],
        probe: Lookup | Failed,
        *,
        fill: bool | Callable[[], bool],
        decode: bool,
        flight: tuple[int, asyncio.Future[bytes]],
    ) -> tuple[Any, bytes]:
        """The flight's leader missed (``probe``): decide the fill, load, fill."""
        self.stats.misses += 1
        if fill if isinstance(fill, bool) else fill():
            return await self._fetch(key, loader, ttl, names, probe, fill=True, decode=decode)
        # Asked only now, on a miss: this caller may not publish what it loads, so its value
        # is not shared either. Waiters look again; one of them loads.
        if self._flights.get(key) is flight:
            del self._flights[key]
        _hand_over(flight[1])
        return await self._fetch(key, loader, ttl, names, probe, fill=False, decode=decode)

    async def _probe_hit(
        self, key: str, probe: Lookup | Failed, *, decode: bool
    ) -> tuple[Any, bytes] | None:
        """Return the value (or `_UNDECODED`) and bytes of a hit (counted), else ``None``.

        A miss is not counted here (the caller that loads counts it); a corrupt entry is.
        """
        if type(probe) is Lookup and probe.status == HIT and probe.payload is not None:
            if not decode:
                self.stats.hits += 1
                return _UNDECODED, probe.payload
            try:
                value = self.codec.decode(probe.payload)
            except DecodeError:
                self.stats.corrupt += 1
                logger.warning("cache entry %r does not decode; removed", key)
                await self._guarded_read(lambda: self._remove([key]))
                return None
            self.stats.hits += 1
            return value, probe.payload
        self._count_corrupt(key, probe)
        return None

    def _count_corrupt(self, key: str, probe: Lookup | Failed) -> None:
        """Count (and log) a look-up that found a value this cache did not write."""
        if type(probe) is Lookup and probe.status == CORRUPT:
            self.stats.corrupt += 1
            logger.warning("cache entry %r is not an underlay entry; removed", key)

    async def _load(
        self,
        key: str,
        loader: Callable[[], Awaitable[Any]],
        ttl: float | None,
        names: tuple[str, ...],
        probe: Lookup | Failed | None,
        *,
        fill: bool,
        decode: bool,
    ) -> tuple[Any, bytes]:
        """Look up (unless ``probe`` did), else load (and fill); return value and bytes."""
        if probe is None:
            probe = await self._guarded_read(partial(self._lookup, key, names, None))
            found = await self._probe_hit(key, probe, decode=decode)
            if found is not None:
                return found
        self.stats.misses += 1
        return await self._fetch(key, loader, ttl, names, probe, fill=fill, decode=decode)

    async def _decoded(self, key: str, lookup: Lookup) -> Any:
        """Return the value of a hit (counted), else `FAILED` with the miss counted."""
        found = await self._probe_hit(key, lookup, decode=True)
        if found is None:
            self.stats.misses += 1
            return FAILED
        return found[0]

    async def _hit(self, key: str, lookup: Lookup, *, decode: bool) -> tuple[Any, bytes] | None:
        """Return the value (or `_UNDECODED`) and bytes of a hit, else count the miss."""
        found = await self._probe_hit(key, lookup, decode=decode)
        if found is None:
            self.stats.misses += 1
        return found

    async def _fetch(
        self,
        key: str,
        loader: Callable[[], Awaitable[Any]],
        ttl: float | None,
        names: tuple[str, ...],
        probe: Lookup | Failed,
        *,
        fill: bool,
        decode: bool,
    ) -> tuple[Any, bytes]:
        """After a miss (counted): take the lease, load and fill; return value and bytes."""
        lookup = probe
        if fill and not isinstance(probe, Failed):
            lookup = await self._guarded_read(partial(self._lookup, key, names, self._token()))
            if not isinstance(lookup, Failed) and lookup.status == HIT:
                found = await self._hit(key, lookup, decode=decode)  # filled meanwhile
                if found is not None:
                    return found
        try:
            value = await loader()
        except BaseException:
            if not isinstance(lookup, Failed) and lookup.token is not None:
                held = lookup.token
                await self._guarded_read(lambda: self._release(key, held))
            raise
        payload = self.codec.encode(value)
        if fill and not isinstance(lookup, Failed):
            current = lookup
            if current.token is None:
                self.stats.fill_rejected += 1  # another process holds the lease and fills
            else:
                ttl_ms = self._ttl_ms(ttl)
                stored = await self._guarded_read(
                    lambda: self._fill(key, current, names, payload, ttl_ms)
                )
                if stored is True:
                    self.stats.fills += 1
                elif stored is False:
                    self.stats.fill_rejected += 1
                    logger.debug("fill of %r rejected: invalidated while loading", key)
        return (self.codec.decode(payload) if decode else _UNDECODED), payload
