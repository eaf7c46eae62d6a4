"""Counters a cache keeps about itself."""

from __future__ import annotations

from dataclasses import asdict, dataclass

__all__ = ["CacheStats"]


@dataclass
class CacheStats:
    """What a cache has done since it was created (read them from ``cache.stats``).

    Attributes:
        hits: Lookups answered from the cache.
        misses: Lookups the cache could not answer (absent, expired, invalidated, corrupt, or
            the cache was unreachable).
        fills: Values stored after a miss (``get_or_set`` and cached repositories).
        fill_rejected: Fills refused because the key or one of its namespaces was
            invalidated while the value was being loaded, or another process held the lease.
        corrupt: Entries that could not be decoded; each was counted as a miss and removed.
        errors: Operations that failed or ran out of time (reads then count as misses).
        skipped: Operations not attempted because the circuit breaker was open.
        invalidations: Invalidations delivered (keys deleted, namespaces bumped, patterns).
        invalidations_lost: Invalidations that could not be delivered in their budget; each
            forces an epoch bump (every entry invalid) as soon as the cache answers again.
    """

    hits: int = 0
    misses: int = 0
    fills: int = 0
    fill_rejected: int = 0
    corrupt: int = 0
    errors: int = 0
    skipped: int = 0
    invalidations: int = 0
    invalidations_lost: int = 0

    def as_dict(self) -> dict[str, int]:
        """Return the counters as a plain dictionary (for metrics exporters)."""
        return asdict(self)
