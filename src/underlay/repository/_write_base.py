"""What the write and delete methods share: the version column and single-row writes."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, inspect, select
from sqlalchemy.orm import Mapper

from underlay.exceptions import InvalidQueryError, NotFoundError, StaleVersionError
from underlay.models._versioning import VERSION_BUMPED
from underlay.repository._base import RepositoryBase
from underlay.repository._query import column_map
from underlay.typing import ModelT

__all__ = ["WriteBase"]

_BUMPED = {VERSION_BUMPED: True}

_Versioning = tuple[Column[Any] | None, str | None, dict[str, Any] | None]
_VERSIONING: dict[Mapper[Any], _Versioning] = {}


def _versioning(mapper: Mapper[Any]) -> _Versioning:
    """The version column, its attribute key and the ``SET`` that increments it, per mapper."""
    found = _VERSIONING.get(mapper)
    if found is None:
        column = mapper.version_id_col
        if not isinstance(column, Column):
            found = (None, None, None)
        else:
            key = next(k for k, col in column_map(mapper.class_).items() if col is column)
            found = (column, key, {key: column + 1})
        _VERSIONING[mapper] = found
    return found


class WriteBase(RepositoryBase[ModelT]):
    """Helpers of the write and delete methods of ``SQLAlchemyRepository``."""

    @property
    def _version_column(self) -> Column[Any] | None:
        return _versioning(self._mapper)[0]

    @property
    def _version_key(self) -> str | None:
        return _versioning(self._mapper)[1]

    @property
    def _version_bump(self) -> dict[str, Any] | None:
        """``{version key: version + 1}``, built once per class (``None``: not versioned)."""
        return _versioning(self._mapper)[2]

    async def _row_exists(self, id: Any, *, live_only: bool) -> bool:
        criteria = [*self._id_criteria(id), *self.scope]
        if live_only and self._soft:
            criteria.append(column_map(self.model)["deleted_at"].is_(None))
        statement = (
            select(*self._mapper.primary_key)
            .select_from(self.model)  # an ORM entity, so session-level criteria apply
            .where(*criteria)
            .execution_options(include_deleted=True)
        )
        return (await self.session.execute(statement)).first() is not None

    async def _execute_returning(self, statement: Any, id: Any) -> ModelT | None:
        """Run a single-row UPDATE, returning the refreshed entity (``None``: no row)."""
        options = {"synchronize_session": False, "populate_existing": True}
        if self._dialect.update_returning:
            result = await self.session.execute(
                statement.returning(self.model), execution_options=options
            )
            entity: ModelT | None = result.scalars().one_or_none()
            return entity
        outcome = await self.session.execute(
            statement, execution_options={"synchronize_session": False}
        )
        if getattr(outcome, "rowcount", 0) == 0:
            return None
        return await self.session.get(
            self.model, id, populate_existing=True, execution_options={"include_deleted": True}
        )

    def _expected_version(self, id_or_entity: Any, expected_version: int | None) -> int | None:
        """The version a delete / restore checks: the given one, else a passed entity's."""
        version_key = self._version_key
        if expected_version is not None:
            if version_key is None:
                raise InvalidQueryError(f"{self.model.__name__} has no version column to check.")
            if isinstance(expected_version, bool) or not isinstance(expected_version, int):
                raise InvalidQueryError(
                    f"expected_version must be an int, not {type(expected_version).__name__}."
                )
            return expected_version
        if version_key is None or not isinstance(id_or_entity, self.model):
            return None
        # The version the entity was loaded with (or was assigned: an assigned version is the
        # expected one). Never loaded here: loading it now would read the row's current one.
        loaded = inspect(id_or_entity).dict.get(version_key)
        return loaded if isinstance(loaded, int) else None

    def _guarded_criteria(self, id: Any, expected: int | None) -> list[Any]:
        """The row's key within the scope, and its version when one is expected."""
        criteria = [*self._id_criteria(id), *self.scope]
        version_column = self._version_column
        if version_column is not None and expected is not None:
            criteria.append(version_column == expected)
        return criteria

    async def _missing_or_stale(self, id: Any, expected_version: int | None) -> None:
        """Explain why a write guarded by ``expected_version`` matched no row.

        Raises:
            NotFoundError: No row has that id (within the repository's scope).
            StaleVersionError: The row is at another version.
        """
        version_column = self._version_column
        criteria = [*self._id_criteria(id), *self.scope]
        if version_column is None or expected_version is None:
            if not await self._row_exists(id, live_only=False):
                raise NotFoundError(model=self.model, id=id)
            return
        statement = select(version_column).where(*criteria).execution_options(include_deleted=True)
        row = (await self.session.execute(statement)).first()
        if row is None:
            raise NotFoundError(model=self.model, id=id)
        if row[0] != expected_version:
            raise StaleVersionError(model=self.model, id=id, expected_version=expected_version)

    def _bump_version(self, statement: Any) -> Any:
        bump = self._version_bump
        if bump is None:
            return statement
        # marked, so the session's versioning hook does not rebuild what is already right
        return statement.values(bump).execution_options(**_BUMPED)
