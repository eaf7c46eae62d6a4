"""Spans and a duration histogram around repository calls, patched in while instrumented."""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any

from underlay.otel._names import ATTRIBUTES, METRIC_NAMES, SPAN_NAMES

__all__ = ["RepositoryPatch"]

# The public calls that reach the database (or the cache). Calls a class does not have are
# skipped; so are async generators, which a span cannot wrap as a whole.
METHODS = (
    "get",
    "get_one",
    "get_many",
    "list_all",
    "count",
    "exists",
    "page",
    "paginate",
    "save",
    "update",
    "upsert",
    "upsert_many",
    "insert_many",
    "delete",
    "hard_delete",
    "restore",
    "delete_where",
)

_MISSING = object()


class RepositoryPatch:
    """Wraps the methods of the repository classes while it is installed."""

    def __init__(self, tracer: Any, meter: Any, classes: tuple[type[Any], ...]) -> None:
        self._tracer = tracer
        self._duration = meter.create_histogram(
            METRIC_NAMES["repository_duration"],
            unit="s",
            description="Duration of underlay repository calls",
        )
        self._classes = classes
        self._saved: list[tuple[type[Any], str, object]] = []

    def install(self) -> None:
        """Wrap every known method of every class."""
        for cls in self._classes:
            cached = cls.__name__ == "CachedRepository"
            for name in METHODS:
                original = getattr(cls, name, None)
                if original is None or not inspect.iscoroutinefunction(original):
                    continue
                self._saved.append((cls, name, cls.__dict__.get(name, _MISSING)))
                setattr(cls, name, self._wrap(original, name, cached=cached))

    def uninstall(self) -> None:
        """Put the original methods back."""
        for cls, name, saved in reversed(self._saved):
            if saved is _MISSING:
                delattr(cls, name)
            else:
                setattr(cls, name, saved)
        self._saved.clear()

    def _wrap(
        self, original: Callable[..., Awaitable[Any]], method: str, *, cached: bool
    ) -> Callable[..., Awaitable[Any]]:
        span_name = SPAN_NAMES["repository"].format(method=method)
        tracer, duration = self._tracer, self._duration

        @functools.wraps(original)
        async def traced(repository: Any, *args: Any, **kwargs: Any) -> Any:
            attributes = _attributes(repository, method, cached=cached)
            start = time.perf_counter()
            with tracer.start_as_current_span(span_name, attributes=attributes) as span:
                try:
                    return await original(repository, *args, **kwargs)
                except BaseException as exc:
                    attributes = {**attributes, ATTRIBUTES["error"]: type(exc).__qualname__}
                    span.set_attribute(ATTRIBUTES["error"], type(exc).__qualname__)
                    raise
                finally:
                    duration.record(time.perf_counter() - start, attributes)

        traced.__underlay_traced__ = True  # type: ignore[attr-defined]
        return traced


def _attributes(repository: Any, method: str, *, cached: bool) -> dict[str, Any]:
    inner = getattr(repository, "repository", None)  # a CachedRepository's own repository
    model = getattr(repository, "model", None) or getattr(inner, "model", None)
    attributes: dict[str, Any] = {
        ATTRIBUTES["method"]: method,
        ATTRIBUTES["repository"]: type(repository).__qualname__,
        ATTRIBUTES["cached"]: cached,
    }
    if model is not None:
        attributes[ATTRIBUTES["model"]] = getattr(model, "__name__", str(model))
    session = getattr(repository, "session", None) or getattr(repository, "_session", None)
    bind = getattr(session, "bind", None)
    dialect = getattr(bind, "dialect", None)
    if dialect is not None:
        attributes[ATTRIBUTES["db_system"]] = dialect.name
    return attributes
