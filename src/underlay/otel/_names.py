"""The span, metric and attribute names underlay reports: stable, documented, versioned."""

from __future__ import annotations

from typing import Final

__all__ = ["ATTRIBUTES", "METRIC_NAMES", "SPAN_NAMES"]

#: Span names. ``{method}`` is the repository method (``get``, ``list_all``, ...).
SPAN_NAMES: Final = {
    "repository": "underlay.repository.{method}",
    "commit": "underlay.db.commit",
}

#: Metric names, with their instrument kind and unit.
METRIC_NAMES: Final = {
    "repository_duration": "underlay.repository.duration",  # histogram, s
    "commit_duration": "underlay.db.commit.duration",  # histogram, s
    "writes": "underlay.db.writes",  # counter, {write}
    "rollbacks": "underlay.db.rollbacks",  # counter, {transaction}
    "cache_hits": "underlay.cache.hits",  # observable counter, {lookup}
    "cache_misses": "underlay.cache.misses",
    "cache_fills": "underlay.cache.fills",
    "cache_fill_rejected": "underlay.cache.fill_rejected",
    "cache_corrupt": "underlay.cache.corrupt",
    "cache_errors": "underlay.cache.errors",
    "cache_skipped": "underlay.cache.skipped",
    "cache_invalidations": "underlay.cache.invalidations",
    "cache_invalidations_lost": "underlay.cache.invalidations_lost",
    "cache_breaker_open": "underlay.cache.breaker.open",  # observable gauge, 0 or 1
}

#: Attribute keys.
ATTRIBUTES: Final = {
    "method": "underlay.repository.method",
    "repository": "underlay.repository.class",
    "model": "underlay.model",
    "cached": "underlay.repository.cached",
    "db_system": "db.system.name",
    "outcome": "underlay.outcome",
    "kind": "underlay.write.kind",
    "table": "underlay.table",
    "cache": "underlay.cache.name",
    "error": "error.type",
}
