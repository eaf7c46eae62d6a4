"""Optimistic locking that never loses an update and never moves a version backwards.

SQLAlchemy's ``version_id_col`` checks the version in every UPDATE and DELETE its flush emits.
Three gaps remain, closed here:

* A value assigned to ``entity.version`` becomes the *new* version in SQLAlchemy. Here it is
  the version the caller expects (``before_flush`` moves it into the committed state), so a
  client's stale version is rejected instead of overwriting the row and rolling the version
  back.
* Multi-row ORM ``update(Model).where(...)`` statements are not version-checked and would not
  bump the version; here they set ``version = version + 1``. A ``version`` in their values is
  the expected version: it becomes ``AND version = :value``.
* ``StaleDataError`` names neither the model nor the row. :class:`VersionCheckedSession`
  raises :class:`~underlay.StaleVersionError` with both, whether the conflict surfaces at an
  explicit flush, an autoflush or the flush inside ``commit()``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, event, inspect, select
from sqlalchemy.engine import Connection, Engine, Result
from sqlalchemy.exc import ArgumentError, InvalidRequestError
from sqlalchemy.orm import Mapper, ORMExecuteState, Session, UOWTransaction, attributes
from sqlalchemy.orm.exc import StaleDataError
from sqlalchemy.pool import SingletonThreadPool, StaticPool

from underlay.exceptions import InvalidQueryError, StaleVersionError
from underlay.models._mixins import VersionedMixin
from underlay.models._soft_delete import SessionTarget, _sync_target, mark_installed

__all__ = ["VersionCheckedSession", "enable_versioning"]

logger = logging.getLogger("underlay.models")

# Session.info key: the versioned rows the current flush writes, as
# (mapper, identity, expected version), recorded after the guard has run.
_CANDIDATES_KEY = "underlay.version_candidates"


def _versioned_mapper(mapper: Mapper[Any] | None) -> bool:
    return (
        mapper is not None
        and mapper.version_id_col is not None
        and issubclass(mapper.class_, VersionedMixin)
        # a version_id_generator=False mapper has the application assign versions itself
        and getattr(mapper, "version_id_generator", None) is not False
    )


def _version_column(mapper: Mapper[Any]) -> ColumnElement[Any]:
    column = mapper.version_id_col
    if column is None:
        raise TypeError(f"{mapper.class_.__name__} has no version column")
    return column


def _version_key(mapper: Mapper[Any]) -> str:
    return mapper.get_property_by_column(_version_column(mapper)).key


def _guard_versions(session: Session, _context: UOWTransaction, _instances: Any) -> None:
    candidates: list[tuple[Mapper[Any], tuple[Any, ...], Any]] = []
    for obj in (*session.dirty, *session.deleted):
        state = inspect(obj)
        mapper = state.mapper
        if mapper.version_id_col is None or state.identity is None:
            continue
        if _versioned_mapper(mapper):
            key = _version_key(mapper)
            added = state.attrs[key].history.added
            if added:
                # SQLAlchemy would send an assigned version as the new value; it is the
                # version the caller read, so make it the one the UPDATE's WHERE checks.
                attributes.set_committed_value(obj, key, added[0])
        if obj in session.deleted or session.is_modified(obj, include_collections=False):
            history = state.attrs[_version_key(mapper)].history
            expected = (history.deleted or history.unchanged or (None,))[0]
            candidates.append((mapper, state.identity, expected))
    session.info[_CANDIDATES_KEY] = candidates


#: Execution option of an UPDATE that already sets ``version = version + 1`` itself (the
#: repository's statements): the hook then leaves it as it is instead of rebuilding it.
VERSION_BUMPED = "underlay_version_bumped"


def _bump_versions(state: ORMExecuteState) -> Result[Any] | None:
    if not (state.is_update and state.is_orm_statement):
        return None
    if state.execution_options.get(VERSION_BUMPED):
        return None
    statement = state.statement
    entity = statement.entity_description.get("entity")  # type: ignore[attr-defined]  # an ORM Update here
    mapper = inspect(entity, raiseerr=False) if entity is not None else None
    if not isinstance(mapper, Mapper) or not _versioned_mapper(mapper):
        return None
    key = _version_key(mapper)
    if isinstance(state.parameters, list):
        # "Bulk UPDATE by primary key": SQLAlchemy itself matches each row on its version and
        # sets version + 1, but fails with a bare KeyError when a row lacks it.
        for row in state.parameters:
            if key not in row:
                raise InvalidQueryError(
                    f"every row of a bulk UPDATE of {mapper.class_.__name__} needs {key!r}: "
                    "the version the row is expected to have"
                )
        try:
            return state.invoke_statement()
        except StaleDataError as exc:
            raise StaleVersionError(model=mapper.class_) from exc
    attribute = getattr(mapper.class_, key)
    try:
        bumped = statement.values({attribute: attribute + 1})  # type: ignore[attr-defined]  # an ORM Update here
    except (ArgumentError, InvalidRequestError) as exc:  # values() after ordered_values()
        raise InvalidQueryError(
            f"ordered_values() cannot be combined with the version bump of "
            f"{mapper.class_.__name__}; use values()"
        ) from exc
    expected = _given_version(state, statement, mapper)
    if expected is not None:
        bumped = bumped.where(attribute == expected)
    state.statement = bumped
    return None


def _given_version(state: ORMExecuteState, statement: Any, mapper: Mapper[Any]) -> Any:
    # Update has no public accessor for the values it sets, but its compiled form does: a
    # literal given for a column is sent as the bind parameter named after that column
    # (where-clause literals get numbered names such as "version_1").
    name = _version_column(mapper).key
    bind = state.session.get_bind(mapper=mapper)
    return statement.compile(dialect=bind.dialect).params.get(name)


def enable_versioning(target: SessionTarget) -> None:
    """Make version assignments and multi-row UPDATEs of ``target``'s sessions safe.

    Sessions from :class:`underlay.Database` have this already. It installs two hooks for
    models with :class:`~underlay.VersionedMixin`: a value assigned to ``entity.version`` is
    treated as the expected version at flush, and ORM-enabled ``update(Model)`` statements
    set ``version = version + 1`` (a ``version`` in their values becomes
    ``AND version = :value``). Calling it twice is harmless.

    Args:
        target: A ``Session`` subclass or instance, an ``AsyncSession``, a ``sessionmaker`` or
            an ``async_sessionmaker`` (as for :func:`enable_soft_delete`).

    Example:
        >>> from sqlalchemy.orm import sessionmaker
        >>> enable_versioning(sessionmaker())
    """
    sync = _sync_target(target)
    if mark_installed(sync, "underlay.versioning"):
        event.listen(sync, "before_flush", _guard_versions)
        event.listen(sync, "do_orm_execute", _bump_versions)


class VersionCheckedSession(Session):
    """A ``Session`` whose version conflicts raise ``StaleVersionError`` naming the row.

    SQLAlchemy's ``StaleDataError`` says only that an UPDATE or DELETE matched no row. This
    flush finds which versioned row it was (the only one written, or the one whose version in
    the database no longer matches) and raises :class:`~underlay.StaleVersionError` with its
    model, primary key and expected version, the original chained.
    """

    def flush(self, objects: Sequence[Any] | None = None) -> None:
        """Flush, raising ``StaleVersionError`` with the model and id on a version conflict."""
        try:
            super().flush(objects)
        except StaleDataError as exc:
            raise _stale_version_error(self, self.info.pop(_CANDIDATES_KEY, [])) from exc
        finally:
            self.info.pop(_CANDIDATES_KEY, None)


def _stale_version_error(
    session: Session, candidates: list[tuple[Mapper[Any], tuple[Any, ...], Any]]
) -> StaleVersionError:
    if len(candidates) > 1:
        stale = _find_stale(session, candidates)
        if not stale:
            models = {mapper.class_ for mapper, _, _ in candidates}
            # Not identified: still name the model when every candidate shares it.
            return StaleVersionError(model=models.pop() if len(models) == 1 else None)
        candidates = stale
    if not candidates:
        return StaleVersionError()
    mapper, identity, expected = candidates[0]
    return StaleVersionError(
        model=mapper.class_,
        id=identity[0] if len(identity) == 1 else identity,
        expected_version=expected if isinstance(expected, int) else None,
    )


def _find_stale(
    session: Session, candidates: list[tuple[Mapper[Any], tuple[Any, ...], Any]]
) -> list[tuple[Mapper[Any], tuple[Any, ...], Any]]:
    # Several versioned rows were written and SQLAlchemy does not say which matched nothing.
    # The flush's transaction (or savepoint) is gone; look the rows up again to find the one
    # whose version is no longer the expected one. Best effort: the error is raised anyway.
    try:
        bind = session.get_bind(candidates[0][0])
        if isinstance(bind, Engine) and isinstance(bind.pool, SingletonThreadPool | StaticPool):
            # Its "new" connection would be the session's own, and returning it to the pool
            # would roll back an enclosing transaction that is still alive (a savepoint case).
            return []
        if isinstance(bind, Engine):
            with bind.connect() as conn:
                return _compare_versions(conn, candidates)
        if isinstance(bind, Connection):
            return _compare_versions(bind, candidates)
    except Exception:  # diagnosing must never replace the conflict itself
        logger.debug("could not tell which row had a stale version", exc_info=True)
    return []


def _compare_versions(
    conn: Connection, candidates: list[tuple[Mapper[Any], tuple[Any, ...], Any]]
) -> list[tuple[Mapper[Any], tuple[Any, ...], Any]]:
    stale = []
    for mapper, identity, expected in candidates:
        match = and_(
            *(col == value for col, value in zip(mapper.primary_key, identity, strict=True))
        )
        row = conn.execute(select(_version_column(mapper)).where(match)).first()
        if row is None or row[0] != expected:
            stale.append((mapper, identity, expected))
    return stale
