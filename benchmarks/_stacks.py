"""Repository classes of the layers under test, built on demand.

A layer that is not installed (advanced-alchemy outside the benchmark environment) or not
written yet (an underlay feature still in progress) makes its contenders "n/a" with the reason,
instead of stopping the run.
"""

from __future__ import annotations

import types
from functools import cache
from typing import Any

from .models import ReadItem, SoftItem


class UnavailableError(Exception):
    """A contender's layer cannot run here; the message says why."""


@cache
def underlay_repository(model: type[Any]) -> type[Any]:
    """Return ``class <Model>Repository(SQLAlchemyRepository[Model])``."""
    try:
        from underlay import SQLAlchemyRepository
    except ImportError as exc:
        raise UnavailableError(f"underlay.SQLAlchemyRepository missing ({exc})") from exc
    fields = ("id", "sku", "name", "category", "price", "qty", "created_at")
    return types.new_class(
        f"{model.__name__}Repository",
        (SQLAlchemyRepository[model],),  # type: ignore[valid-type]
        exec_body=lambda ns: ns.update(sortable_fields=fields, filterable_fields=fields),
    )


@cache
def aa_repository(model: type[Any]) -> type[Any]:
    """Return advanced-alchemy's ``SQLAlchemyAsyncRepository`` for ``model``."""
    try:
        from advanced_alchemy.repository import SQLAlchemyAsyncRepository
    except ImportError as exc:
        raise UnavailableError(
            "advanced-alchemy is not installed (see benchmarks/requirements.txt)"
        ) from exc
    return types.new_class(
        f"AA{model.__name__}Repository",
        (SQLAlchemyAsyncRepository[model],),  # type: ignore[valid-type]
        exec_body=lambda ns: ns.update(model_type=model),
    )


def aa_filters() -> Any:
    """Return advanced-alchemy's ``filters`` module."""
    try:
        from advanced_alchemy import filters
    except ImportError as exc:
        raise UnavailableError("advanced-alchemy is not installed") from exc
    return filters


def cache_layer() -> Any:
    """Return the ``underlay.cache`` module once it provides what the cache scenarios use."""
    try:
        import underlay.cache as module
    except ImportError as exc:
        raise UnavailableError(f"underlay.cache missing ({exc})") from exc
    for name in ("RedisCache", "CachedRepository"):
        if not hasattr(module, name):
            raise UnavailableError(f"underlay.cache.{name} missing")
    return module


def soft_delete_active(item: Any) -> None:
    """Fail when a soft-deleted row came back from a read that should hide it."""
    if item.deleted_at is not None:
        raise UnavailableError("the soft-delete read filter is not active")


__all__ = [
    "ReadItem",
    "SoftItem",
    "UnavailableError",
    "aa_filters",
    "aa_repository",
    "cache_layer",
    "guarded",
    "soft_delete_active",
    "underlay_repository",
]


def guarded(
    name: str,
    kind: str,
    build: Any,
    *,
    setup: Any = None,
    note: str = "",
    max_reps: int | None = None,
) -> Any:
    """Return a :class:`Contender` whose ``run`` is ``build()``, or an "n/a" one."""
    from ._harness import Contender

    if max_reps is not None:
        note = (note + "; " if note else "") + f"{max_reps} rep"
    try:
        run = build()
    except UnavailableError as exc:
        return Contender(name, kind, None, unavailable=str(exc), note=note)
    return Contender(name, kind, run, setup=setup, note=note, max_reps=max_reps)
