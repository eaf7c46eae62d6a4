"""No hidden IO: lazy loads in async code raise at once, naming the fix."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.util.concurrency import in_greenlet

from underlay.exceptions import LazyLoadError
from underlay.models._soft_delete import mark_installed

__all__ = ["RAISE_ON_LAZY_LOAD", "enable_raise_on_lazy_load", "lazy_load_name"]

#: ``Session.info`` key: refuse lazy loads in async code for every model of this session.
RAISE_ON_LAZY_LOAD = "underlay.raise_on_lazy_load"

#: Model class attribute: refuse lazy loads of this model (and its subclasses) everywhere.
MODEL_FLAG = "__raise_on_lazy_load__"


def lazy_load_name(state: ORMExecuteState) -> str | None:
    """Return ``"Model.attribute"`` when ``state`` is a relationship's lazy load, else ``None``."""
    if not state.is_relationship_load or state.lazy_loaded_from is None:
        return None
    path = state.loader_strategy_path
    prop = getattr(path, "prop", None)
    owner = state.lazy_loaded_from.class_.__name__
    return f"{owner}.{getattr(prop, 'key', '?')}"


def _refused(state: ORMExecuteState) -> LazyLoadError | None:
    if state.is_relationship_load and state.lazy_loaded_from is not None:
        model: Any = state.lazy_loaded_from.class_
        name = lazy_load_name(state) or model.__name__
        prop = getattr(state.loader_strategy_path, "prop", None)
        many = bool(getattr(prop, "uselist", False))
        loader = "selectinload" if many else "joinedload"
        key = name.partition(".")[2]
        return LazyLoadError(
            f"{name} is not loaded and async code cannot load it lazily (hidden IO). Load it "
            f"with the query: options=[{loader}({name})], or await "
            f"entity.awaitable_attrs.{key}.",
            attribute=name,
        )
    if state.is_column_load:
        mapper = state.bind_mapper
        model = mapper.class_ if mapper is not None else None
        shown = getattr(model, "__name__", "an entity")
        return LazyLoadError(
            f"An expired or deferred attribute of {shown} was read in async code, which "
            "cannot load it lazily (hidden IO). Refresh it with await session.refresh(entity), "
            "or load it with the query (options=[undefer(...)]).",
            attribute=shown,
        )
    return None


def _wanted(state: ORMExecuteState) -> bool:
    if state.session.info.get(RAISE_ON_LAZY_LOAD):
        return True
    owner = state.lazy_loaded_from
    model = owner.class_ if owner is not None else getattr(state.bind_mapper, "class_", None)
    return bool(getattr(model, MODEL_FLAG, False))


def _check(state: ORMExecuteState) -> None:
    if not (state.is_relationship_load or state.is_column_load):
        return
    # Inside greenlet_spawn (run_sync, awaited session calls) the load is awaited IO; outside
    # it the load would fail with MissingGreenlet deep in the driver.
    if in_greenlet() or not _wanted(state):
        return
    error = _refused(state)
    if error is not None:
        raise error


def enable_raise_on_lazy_load(session_class: type[Session]) -> None:
    """Install the lazy-load check on a ``Session`` subclass (``Database`` does it).

    Lazy loads then raise `LazyLoadError` in async code when the session's
    ``info["underlay.raise_on_lazy_load"]`` is true or the model class sets
    ``__raise_on_lazy_load__ = True``.
    """
    if mark_installed(session_class, "underlay.raise_on_lazy_load"):
        event.listen(session_class, "do_orm_execute", _check)
