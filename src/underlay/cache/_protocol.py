"""The interface every cache implements."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Protocol, Self, runtime_checkable

from underlay.cache._stats import CacheStats

__all__ = ["Cache"]


@runtime_checkable
class Cache(Protocol):
    """A key-value cache with TTLs, guarded fills and O(1) namespace invalidation.

    Keys, patterns and namespaces are relative to the cache's own prefix. Implementations:
    :class:`~underlay.cache.MemoryCache` and :class:`~underlay.cache.RedisCache`; both pass
    the same behavioural test suite.
    """

    stats: CacheStats

    async def get(self, key: str, default: Any = None) -> Any:
        """Return the value under ``key``, or ``default`` on a miss."""
        ...

    async def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        """Return the values of the keys that hit (keys that could not be read are misses)."""
        ...

    async def set(
        self, key: str, value: Any, *, ttl: float | None = None, namespaces: Iterable[str] = ()
    ) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds, in ``namespaces``."""
        ...

    async def set_many(
        self,
        items: Mapping[str, Any],
        *,
        ttl: float | None = None,
        namespaces: Iterable[str] = (),
    ) -> list[str]:
        """Store several values; return the keys that could not be stored (fail open)."""
        ...

    async def delete(self, *keys: str) -> None:
        """Invalidate ``keys`` (and void fills in flight for them)."""
        ...

    async def get_or_set(
        self,
        key: str,
        loader: Callable[[], Awaitable[Any]],
        *,
        ttl: float | None = None,
        namespaces: Iterable[str] = (),
    ) -> Any:
        """Return the cached value, or run ``loader`` once, store its result and return it."""
        ...

    async def load(
        self,
        key: str,
        loader: Callable[[], Awaitable[Any]],
        *,
        ttl: float | None = None,
        namespaces: Iterable[str] = (),
        fill: bool = True,
    ) -> Any:
        """Like ``get_or_set``; ``fill=False`` reads the cache but never stores."""
        ...

    async def load_many(
        self,
        entries: Mapping[str, Iterable[str]],
        loader: Callable[[list[str]], Awaitable[Mapping[str, Any]]],
        *,
        ttl: float | None = None,
        fill: bool = True,
    ) -> dict[str, Any]:
        """Return a value per key, loading every miss with one ``loader`` call."""
        ...

    async def invalidate_pattern(self, pattern: str) -> int:
        """Delete every entry whose key matches the glob ``pattern`` (O(keyspace))."""
        ...

    async def bump_namespace(self, *names: str) -> None:
        """Invalidate every entry stored under any of ``names`` in O(1) each."""
        ...

    async def aclose(self) -> None:
        """Release the cache's resources."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...
