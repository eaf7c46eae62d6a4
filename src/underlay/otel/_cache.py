"""Cache counters and breaker state, read from the caches' own stats at collection time."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation

from underlay.otel._names import ATTRIBUTES, METRIC_NAMES

__all__ = ["observe_caches"]

# CacheStats field -> METRIC_NAMES key
_COUNTERS = {
    "hits": "cache_hits",
    "misses": "cache_misses",
    "fills": "cache_fills",
    "fill_rejected": "cache_fill_rejected",
    "corrupt": "cache_corrupt",
    "errors": "cache_errors",
    "skipped": "cache_skipped",
    "invalidations": "cache_invalidations",
    "invalidations_lost": "cache_invalidations_lost",
}


def _label(cache: Any, index: int) -> dict[str, str]:
    prefix = getattr(cache, "prefix", "")
    name = f"{type(cache).__name__}:{prefix}" if prefix else f"{type(cache).__name__}#{index}"
    return {ATTRIBUTES["cache"]: name}


def observe_caches(meter: Any, caches: Sequence[Any]) -> Callable[[], None]:
    """Create observable instruments that report ``caches``' counters; no cost between reads.

    Returns:
        A function that stops the reports (OpenTelemetry cannot unregister an instrument:
        its callbacks then observe nothing).
    """
    labelled = [(cache, _label(cache, index)) for index, cache in enumerate(caches)]

    def counter(field: str) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def read(_options: CallbackOptions) -> Iterable[Observation]:
            for cache, labels in labelled:
                stats = getattr(cache, "stats", None)
                if stats is not None:
                    yield Observation(getattr(stats, field), labels)

        return read

    def breaker(_options: CallbackOptions) -> Iterable[Observation]:
        for cache, labels in labelled:
            state = getattr(cache, "_breaker", None)
            if state is not None:
                yield Observation(1 if state.is_open else 0, labels)

    if not labelled:
        return lambda: None
    for field, metric in _COUNTERS.items():
        meter.create_observable_counter(
            METRIC_NAMES[metric], callbacks=[counter(field)], unit="{operation}"
        )
    meter.create_observable_gauge(
        METRIC_NAMES["cache_breaker_open"],
        callbacks=[breaker],
        unit="1",
        description="1 while the cache's circuit breaker skips Redis, else 0",
    )
    return labelled.clear
