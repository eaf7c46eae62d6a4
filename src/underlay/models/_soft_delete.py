"""Hide soft-deleted rows from every ORM read, and unique indexes that ignore them.

The filter is one ``do_orm_execute`` hook that adds
``with_loader_criteria(SoftDeleteMixin, deleted_at IS NULL)`` to ORM statements. SQLAlchemy
then puts the criterion where it belongs: the WHERE clause of a plain SELECT or of an
ORM-enabled UPDATE / DELETE, subqueries that select the entity, the ON clause of joined eager
loads (a parent without live children stays in an outer join), and the queries selectin and
lazy loaders emit. A WHERE rewrite of the final SQL could do none of that correctly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, Index, column, event
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import (
    Mapper,
    ORMExecuteState,
    Session,
    sessionmaker,
    with_loader_criteria,
)
from sqlalchemy.schema import conv

from underlay.models._mixins import SoftDeleteMixin
from underlay.models._statements import with_option

__all__ = [
    "INCLUDE_DELETED",
    "LiveGetSession",
    "enable_soft_delete",
    "include_deleted_requested",
    "live_unique_index",
    "mark_installed",
]

_O = TypeVar("_O")

#: The execution option that lifts the filter for one statement, one call or a whole session.
INCLUDE_DELETED = "include_deleted"


def _live(cls: Any) -> ColumnElement[bool]:
    # A module-level function, not a lambda: instances loaded with the criterion keep it in
    # their load options, and pickling an instance must be able to find it by name.
    return cls.deleted_at.is_(None)  # type: ignore[no-any-return]


# One option object for every statement: SQLAlchemy analyses the criterion once and caches it.
# propagate_to_loaders (the default) carries it into selectin and joined eager loads and
# into lazy loads of the instances it loaded.
_LIVE_ROWS = with_loader_criteria(SoftDeleteMixin, _live, include_aliases=True)

SessionTarget = (
    Session
    | AsyncSession
    | type[Session]
    | type[AsyncSession]
    | sessionmaker[Any]
    | async_sessionmaker[Any]
)


def include_deleted_requested(options: Any) -> bool:
    """Return whether execution options ask for soft-deleted rows (``include_deleted=True``).

    Args:
        options: A mapping of execution options, or ``None``.

    Returns:
        ``True`` when the filter is lifted.
    """
    return bool(options and options.get(INCLUDE_DELETED, False))


def _filter_deleted(state: ORMExecuteState) -> None:
    if not state.is_orm_statement or not (state.is_select or state.is_update or state.is_delete):
        return
    # Refreshing or unexpiring an object the caller already holds must keep working after the
    # object was soft-deleted: session.refresh(obj) shows the current row, deleted_at included.
    if state.is_column_load:
        return
    if include_deleted_requested(state.execution_options):
        return
    if state.is_relationship_load:
        # selectin / subquery loads inherit the parent statement's criterion (and its
        # include_deleted); a lazy load only needs it when its parent was not loaded with it,
        # e.g. an object created in this session.
        parent = state.lazy_loaded_from
        if parent is None or _LIVE_ROWS in parent.load_options:
            return
    state.statement = with_option(state.statement, _LIVE_ROWS, state.execution_options)


def _sync_target(target: SessionTarget) -> Session | type[Session]:
    if isinstance(target, sessionmaker):
        return target.class_
    if isinstance(target, AsyncSession):
        return target.sync_session
    if isinstance(target, async_sessionmaker):
        # Listening on the plain Session class would filter every session in the process, so
        # the maker gets a Session subclass of its own.
        sync_class = target.kw.get("sync_session_class") or Session
        if sync_class is Session:
            sync_class = type("SoftDeleteSession", (Session,), {})
            target.kw["sync_session_class"] = sync_class
        return sync_class
    if isinstance(target, type) and issubclass(target, AsyncSession):
        sync_class = target.sync_session_class
        if sync_class is Session:
            raise ValueError(
                f"{target.__name__} uses the plain Session class; pass a sync_session_class of "
                "its own (or the async_sessionmaker) so other sessions are not affected"
            )
        return sync_class
    if target is Session:
        raise ValueError(
            "refusing to filter every Session in the process; pass your own Session "
            "subclass, sessionmaker or session"
        )
    return target


def enable_soft_delete(target: SessionTarget) -> None:
    """Hide soft-deleted rows from the ORM reads of sessions made by ``target``.

    Sessions from :class:`underlay.Database` have this already. Call it for your own session
    class, ``sessionmaker``, ``async_sessionmaker`` or a single session. Calling it twice is
    harmless. The plain ``Session`` class is refused, as it would affect every session in the
    process.

    Args:
        target: A ``Session`` subclass or instance, an ``AsyncSession`` (instance, or a subclass
            with its own ``sync_session_class``), a ``sessionmaker`` or an
            ``async_sessionmaker``.

    Raises:
        ValueError: ``target`` is (or would mean) the global ``Session`` class.

    Example:
        >>> from sqlalchemy.orm import sessionmaker
        >>> maker = sessionmaker()
        >>> enable_soft_delete(maker)
    """
    sync = _sync_target(target)
    if mark_installed(sync, "underlay.soft_delete"):
        event.listen(sync, "do_orm_execute", _filter_deleted)


def mark_installed(target: Session | type[Session], name: str) -> bool:
    """Record that ``name``'s listeners are on ``target``; return ``False`` if they already were.

    ``event.contains`` cannot tell: SQLAlchemy's event registry is keyed by ``id()``, and a
    new session class can reuse the id of a collected one whose entries are not purged yet.
    """
    if isinstance(target, type):
        # getattr, not __dict__: class-level listeners also fire for subclasses.
        flags: frozenset[str] = getattr(target, "_underlay_installed", frozenset())
        if name in flags:
            return False
        target._underlay_installed = flags | {name}  # type: ignore[attr-defined]  # our own marker
        return True
    if name in target.info.setdefault("underlay.installed", set()):
        return False
    target.info["underlay.installed"].add(name)
    return True


class LiveGetSession(Session):
    """A ``Session`` whose ``get`` never returns a soft-deleted row, not even from the identity map.

    ``Session.get`` answers from the identity map without SQL, so a row soft-deleted earlier in
    the same session (its ``deleted_at`` set in memory) would come back. This class checks
    the object it is about to return. ``include_deleted=True`` in ``execution_options`` (of the
    call or, on SQLAlchemy 2.1, of the session) returns it anyway.
    """

    def get(self, entity: type[_O] | Mapper[_O], ident: Any, **kw: Any) -> _O | None:
        """Return the live instance with this primary key, or ``None``."""
        instance = super().get(entity, ident, **kw)
        if (
            isinstance(instance, SoftDeleteMixin)
            and instance.deleted_at is not None
            and not include_deleted_requested(kw.get("execution_options"))
            and not include_deleted_requested(getattr(self, "execution_options", None))
        ):
            return None
        return instance


def live_unique_index(
    *columns: str | ColumnElement[Any], name: str | None = None, **dialect_kw: Any
) -> Index:
    """Return a unique index over ``columns`` that only applies to live (not deleted) rows.

    A plain unique constraint would stop a soft-deleted user's email from ever being used
    again. This is a partial index (``WHERE deleted_at IS NULL``) on PostgreSQL and SQLite;
    other backends get a plain unique index. Put it in ``__table_args__``::

        class User(SoftDeleteMixin, Base):
            __tablename__ = "users"
            __table_args__ = (live_unique_index("email"),)

    Args:
        *columns: Column names or columns of the table.
        name: The index name. By default ``uq_<table>_<columns>_live``.
        **dialect_kw: Further ``Index`` keyword arguments.

    Returns:
        The ``Index``, to be attached to the table.

    Example:
        >>> live_unique_index("email").unique
        True
    """
    if not columns:
        raise ValueError("live_unique_index needs at least one column")
    live = column("deleted_at").is_(None)
    index = Index(
        name,
        *columns,
        unique=True,
        postgresql_where=live,
        sqlite_where=live,
        **dialect_kw,
    )
    if name is None:
        event.listen(index, "after_parent_attach", _name_live_index)
    return index


def _name_live_index(index: Index, table: Any) -> None:
    # conv() marks the name final, so a MetaData naming convention does not rewrite it.
    names: Sequence[str] = [str(getattr(c, "name", c)) for c in index.expressions]
    index.name = conv(f"uq_{table.name}_{'_'.join(names)}_live")
