"""`instrument`: turn underlay's spans and metrics on for a database and its caches."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from underlay._imports import require

require("opentelemetry.trace", extra="otel")

from opentelemetry import metrics, trace  # noqa: E402 - after the dependency check

from underlay._version import __version__  # noqa: E402
from underlay.cache import CachedRepository  # noqa: E402
from underlay.otel._cache import observe_caches  # noqa: E402
from underlay.otel._database import DatabaseInstruments  # noqa: E402
from underlay.otel._names import ATTRIBUTES, METRIC_NAMES, SPAN_NAMES  # noqa: E402
from underlay.otel._repository import RepositoryPatch  # noqa: E402
from underlay.repository import SQLAlchemyRepository  # noqa: E402

if TYPE_CHECKING:
    from underlay.database import Database

__all__ = ["ATTRIBUTES", "METRIC_NAMES", "SPAN_NAMES", "Instrumentation", "instrument"]

_SCOPE = "underlay"


class Instrumentation:
    """What `instrument` turned on; `close` turns it off again.

    Args:
        closers: What undoes each part, called in reverse order by `close`.
    """

    def __init__(self, closers: list[Callable[[], None]]) -> None:
        self._closers = closers
        self.closed = False

    def close(self) -> None:
        """Remove the listeners and the repository wrappers; stop reporting the caches."""
        if self.closed:
            return
        self.closed = True
        for closer in reversed(self._closers):
            closer()

    def __enter__(self) -> Instrumentation:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


_active_patch: list[RepositoryPatch] = []


def instrument(
    database: Database | None = None,
    *,
    caches: Sequence[Any] = (),
    repositories: bool = True,
    tracer_provider: Any = None,
    meter_provider: Any = None,
) -> Instrumentation:
    """Report underlay's spans and metrics through OpenTelemetry.

    Args:
        database: Whose commits get spans and whose writes and rollbacks are counted.
        caches: Caches whose counters (hits, misses, fills, rejected fills, invalidations,
            errors) and circuit-breaker state are observed at each metrics collection.
        repositories: Wrap the methods of `SQLAlchemyRepository` and `CachedRepository`
            (every subclass) in spans, with a duration histogram. Only one instrumentation
            at a time may do this.
        tracer_provider: Defaults to the global one.
        meter_provider: Defaults to the global one.

    Returns:
        The `Instrumentation`; call ``close()`` (or use it as a context manager) to undo.

    Raises:
        MissingDependencyError: ``opentelemetry-api`` is not installed (extra ``otel``).
        RuntimeError: ``repositories=True`` while another instrumentation wraps them.
    """
    tracer = trace.get_tracer(_SCOPE, __version__, tracer_provider=tracer_provider)
    meter = metrics.get_meter(_SCOPE, __version__, meter_provider=meter_provider)
    closers: list[Callable[[], None]] = []
    if repositories:
        if _active_patch:
            raise RuntimeError("repositories are already instrumented; close() that first")
        patch = RepositoryPatch(tracer, meter, (SQLAlchemyRepository, CachedRepository))
        patch.install()
        _active_patch.append(patch)

        def unpatch() -> None:
            patch.uninstall()
            _active_patch.remove(patch)

        closers.append(unpatch)
    if database is not None:
        instruments = DatabaseInstruments(database, tracer, meter)
        instruments.install()
        closers.append(instruments.uninstall)
    closers.append(observe_caches(meter, caches))
    return Instrumentation(closers)
