"""The delete methods of ``SQLAlchemyRepository``: delete, hard delete, restore, delete_where."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.util import identity_key

from underlay.exceptions import InvalidQueryError, NotFoundError
from underlay.models import utcnow
from underlay.query import FilterInput
from underlay.repository._query import column_map
from underlay.repository._write_base import WriteBase
from underlay.tenancy._context import current_actor
from underlay.tenancy._mixins import deleted_by
from underlay.typing import ModelT

__all__ = ["DeleteMethods"]


class DeleteMethods(WriteBase[ModelT]):
    """Deletes of ``SQLAlchemyRepository`` (documented there)."""

    async def delete(self, id_or_entity: Any, *, expected_version: int | None = None) -> None:
        """Delete one row: softly for ``SoftDeleteMixin`` models, for real otherwise.

        A soft delete is one ``UPDATE ... SET deleted_at = now WHERE ... AND deleted_at IS
        NULL`` (it bumps ``version`` on versioned models); deleting again keeps the first
        timestamp. An entity of the row already in the session is updated too.

        On a versioned model the statement also checks the version: ``expected_version``,
        or, when an entity is passed, the version it was loaded with. A row at another
        version (changed or deleted by someone else meanwhile) raises ``StaleVersionError``
        and nothing changes.

        Args:
            id_or_entity: The primary key or the entity.
            expected_version: The version the caller last saw; ``None`` checks the passed
                entity's version (and nothing for an id).

        Raises:
            InvalidQueryError: ``expected_version`` on a model without a version column.
            NotFoundError: No row has that id (within the repository's scope).
            StaleVersionError: The row is not at the expected version.
        """
        if not self._soft:
            await self.hard_delete(id_or_entity, expected_version=expected_version)
            return
        expected = self._expected_version(id_or_entity, expected_version)
        id = self._identity(id_or_entity)
        live = column_map(self.model)["deleted_at"].is_(None)
        criteria = [*self._guarded_criteria(id, expected), live]
        statement = self._bump_version(
            update(self.model)
            .where(*criteria)
            .values(deleted_at=utcnow(), **deleted_by(self.model, current_actor()))
        )
        with self._translated(id):
            entity = await self._execute_returning(statement, id)
            if entity is None:
                await self._missing_or_stale(id, expected)

    async def hard_delete(self, id_or_entity: Any, *, expected_version: int | None = None) -> None:
        """Delete one row for real, also a soft-deleted one, and detach its entity.

        Passing a loaded entity deletes it through the unit of work (cascades and a
        versioned model's version check apply); an id sends one ``DELETE``, which checks
        ``expected_version`` when given.

        Args:
            id_or_entity: The primary key or the entity.
            expected_version: The version the caller last saw; ``None`` checks the passed
                entity's version (and nothing for an id).

        Raises:
            InvalidQueryError: ``expected_version`` on a model without a version column.
            NotFoundError: No row has that id (within the repository's scope).
            StaleVersionError: The row is not at the expected version.
        """
        expected = self._expected_version(id_or_entity, expected_version)
        id = self._identity(id_or_entity)
        with self._translated(id):
            if isinstance(id_or_entity, self.model) and not self.scope and expected_version is None:
                await self.session.delete(id_or_entity)
                await self.session.flush()
                return
            criteria = self._guarded_criteria(id, expected)
            statement = (
                delete(self.model)
                .where(*criteria)
                .execution_options(include_deleted=True, synchronize_session="fetch")
            )
            result = await self.session.execute(statement)
            if getattr(result, "rowcount", 0) == 0:
                await self._missing_or_stale(id, expected)
                raise NotFoundError(model=self.model, id=id)

    async def restore(self, id_or_entity: Any, *, expected_version: int | None = None) -> ModelT:
        """Undo a soft delete (``deleted_at = NULL``) and return the live entity.

        Restoring a live row changes nothing but the version of a versioned model. The
        version is checked as in `delete`.

        Args:
            id_or_entity: The primary key or the entity.
            expected_version: The version the caller last saw; ``None`` checks the passed
                entity's version (and nothing for an id).

        Raises:
            InvalidQueryError: The model has no ``SoftDeleteMixin``, or ``expected_version``
                on a model without a version column.
            NotFoundError: No row has that id (within the repository's scope).
            StaleVersionError: The row is not at the expected version.
        """
        if not self._soft:
            raise InvalidQueryError(f"{self.model.__name__} is not soft-deletable.")
        expected = self._expected_version(id_or_entity, expected_version)
        id = self._identity(id_or_entity)
        criteria = self._guarded_criteria(id, expected)
        statement = (
            update(self.model)
            .where(*criteria)
            .values(deleted_at=None, **deleted_by(self.model, None))
            .execution_options(include_deleted=True)
        )
        statement = self._bump_version(statement)
        with self._translated(id):
            entity = await self._execute_returning(statement, id)
            if entity is None:
                await self._missing_or_stale(id, expected)
                raise NotFoundError(model=self.model, id=id)
        return entity

    async def delete_where(self, *where: Any, filter_by: FilterInput = None) -> int:
        """Delete every row matching the criteria in one statement; return the count.

        Soft for ``SoftDeleteMixin`` models (rows already deleted are not touched), hard
        otherwise. Entities of affected rows already in the session are kept in step.

        Args:
            *where: SQLAlchemy criteria (pass ``sqlalchemy.true()`` to mean every row).
            filter_by: A caller-supplied filter on declared fields, as for ``list_all``.
                ``where`` and ``filter_by`` together must not be empty.

        Raises:
            InvalidQueryError: No criteria were given, or the filter is refused.
        """
        resolved = self._resolve(filter_by)
        if not where and resolved.empty:
            raise InvalidQueryError(
                "delete_where() needs criteria; pass sqlalchemy.true() to delete every row."
            )
        criteria = self._criteria(where, resolved)
        with self._translated(None):
            if not self._soft:
                result = await self.session.execute(
                    delete(self.model)
                    .where(*criteria)
                    .execution_options(synchronize_session="fetch")
                )
                return int(getattr(result, "rowcount", 0))
            return await self._soft_delete_where(criteria)

    async def _soft_delete_where(self, criteria: list[Any]) -> int:
        columns = column_map(self.model)
        statement = self._bump_version(
            update(self.model)
            .where(*criteria, columns["deleted_at"].is_(None))
            .values(deleted_at=utcnow(), **deleted_by(self.model, current_actor()))
            .execution_options(synchronize_session=False)
        )
        if not self._dialect.update_returning:
            result = await self.session.execute(statement)
            return int(getattr(result, "rowcount", 0))
        version_column = self._version_column
        returned = [*self._mapper.primary_key, columns["deleted_at"]]
        if version_column is not None:
            returned.append(version_column)
        rows = (await self.session.execute(statement.returning(*returned))).all()
        # Keep loaded entities truthful without expiring them (an expired attribute would
        # need IO in async code): write the new values in as their committed state.
        width = len(self._mapper.primary_key)
        identity_map = self.session.sync_session.identity_map
        for row in rows:
            key = identity_key(self.model, tuple(row[:width]))
            entity = identity_map.get(key)
            if entity is not None:
                set_committed_value(entity, "deleted_at", row[width])
                if version_column is not None and self._version_key is not None:
                    set_committed_value(entity, self._version_key, row[width + 1])
        return len(rows)
