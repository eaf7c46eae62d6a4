"""OpenTelemetry spans and metrics for underlay (extra ``otel``).

Nothing here runs unless `instrument` is called: an application that does not instrument
pays nothing, and one without ``opentelemetry-api`` installed never imports it.

Example:
    >>> from underlay.otel import instrument  # doctest: +SKIP
    >>> instrumentation = instrument(db, caches=[cache])  # doctest: +SKIP
    >>> instrumentation.close()  # doctest: +SKIP
"""

from underlay.otel._instrument import (
    METRIC_NAMES,
    SPAN_NAMES,
    Instrumentation,
    instrument,
)

__all__ = ["METRIC_NAMES", "SPAN_NAMES", "Instrumentation", "instrument"]
