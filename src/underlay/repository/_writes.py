"""The write methods of ``SQLAlchemyRepository``: save, update, upsert, bulk insert."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal, overload

from pydantic import BaseModel
from sqlalchemy import Table, update
from sqlalchemy.exc import SQLAlchemyError

from underlay.exceptions import (
    InvalidQueryError,
    NotFoundError,
    StaleVersionError,
)
from underlay.repository._bulk import RowReader, in_batches, iterable_rows
from underlay.repository._coerce import check_count, coerce_value
from underlay.repository._deletes import DeleteMethods
from underlay.repository._insert import COPY_THRESHOLD, insert_rows
from underlay.repository._query import coerce_values, column_map, values_dict
from underlay.repository._upsert import UpsertPlan, conflict_target
from underlay.typing import ModelT

__all__ = ["COPY_THRESHOLD", "INSERT_BATCH", "UPSERT_BATCH", "WriteMethods"]

#: Rows ``insert_many`` reads from its iterable and sends at a time.
INSERT_BATCH = 10_000

#: Rows ``upsert_many`` reads from its iterable and sends at a time.
UPSERT_BATCH = 5_000


class WriteMethods(DeleteMethods[ModelT]):
    """Writes of ``SQLAlchemyRepository`` (documented there)."""

    async def _load_unloaded(self, entities: Sequence[Any]) -> None:
        for entity in entities:
            names = self._unloaded_columns(entity)
            if names:
                await self.session.refresh(entity, attribute_names=names)

    # -- save -----------------------------------------------------------------------------

    async def save(self, entity: ModelT | BaseModel) -> ModelT:
        """Add ``entity`` (or build one from a Pydantic model) and flush it.

        Server-generated values (keys, timestamps, version) are loaded, so reading any
        column afterwards needs no IO. Changes to an entity already in the session are
        flushed the same way (a versioned model's version is checked).

        Args:
            entity: A model instance, or a Pydantic model whose set fields become one.

        Returns:
            The flushed entity.

        Raises:
            DuplicateError: A unique constraint rejected it.
            StaleVersionError: A versioned entity changed in the database meanwhile.
        """
        instance = self._entity_from(entity)
        with self._translated(None):
            self.session.add(instance)
            await self.session.flush()
            await self._load_unloaded([instance])
        return instance

    async def save_all(self, entities: Iterable[ModelT | BaseModel]) -> list[ModelT]:
        """Add and flush several entities in one flush; see `save`."""
        instances = [self._entity_from(entity) for entity in entities]
        with self._translated(None):
            self.session.add_all(instances)
            await self.session.flush()
            await self._load_unloaded(instances)
        return instances

    # -- update ---------------------------------------------------------------------------

    async def update(
        self,
        id: Any,
        values: Mapping[str, Any] | BaseModel,
        *,
        expected_version: int | None = None,
    ) -> ModelT:
        """Set the given columns of one row in one ``UPDATE``, and return the fresh entity.

        Only the given fields change (for a Pydantic model, the fields that were set);
        every other column keeps its value *in the database*, whatever the session holds.
        An entity of this row already in the session is refreshed from the statement's
        result. For a versioned model the statement also checks the version (from
        ``expected_version`` or a ``version`` key in ``values``, which is never written as
        a new value) and increments it.

        Args:
            id: The primary key.
            values: The columns to set.
            expected_version: The version the caller last saw; ``None`` skips the check.

        Returns:
            The updated entity.

        Raises:
            InvalidQueryError: Unknown fields, a primary-key field, a value or id that does
                not fit its column, nothing to set (an empty mapping, or only ``version``:
                also on versioned models, so an empty PATCH never changes the version), or
                a version check on a model without a version column. Raised before any SQL.
            StaleVersionError: The row exists but is not at ``expected_version``.
            NotFoundError: No live row has that id (within the repository's scope).
        """
        data = coerce_values(self.model, values_dict(self.model, values))
        pk_keys = {
            key for key, col in column_map(self.model).items() if col.primary_key and key in data
        }
        if pk_keys:
            raise InvalidQueryError(f"update() cannot change the primary key {sorted(pk_keys)}.")
        version_key, version_column = self._version_key, self._version_column
        if version_key is not None and version_key in data:
            given = data.pop(version_key)
            if expected_version is not None and given != expected_version:
                raise InvalidQueryError(
                    f"values[{version_key!r}]={given!r} contradicts "
                    f"expected_version={expected_version!r}."
                )
            expected_version = given
        if expected_version is not None and version_column is None:
            raise InvalidQueryError(f"{self.model.__name__} has no version column to check.")
        if expected_version is not None and version_column is not None:
            expected_version = coerce_value(
                version_column, expected_version, field="expected_version"
            )
        id = self._canonical_id(id)
        if not data:
            # also on versioned models: an empty PATCH must not bump the version (the ETag)
            raise InvalidQueryError("update() needs at least one value to set besides the version.")

        criteria = self._guarded_criteria(id, expected_version)
        if self._soft:
            criteria.append(column_map(self.model)["deleted_at"].is_(None))
        statement = self._bump_version(update(self.model).where(*criteria).values(**data))

        with self._translated(id):
            entity = await self._execute_returning(statement, id)
            if entity is None:
                if expected_version is not None and await self._row_exists(id, live_only=True):
                    raise StaleVersionError(
                        model=self.model, id=id, expected_version=expected_version
                    )
                raise NotFoundError(model=self.model, id=id)
        return entity

    # -- upsert ---------------------------------------------------------------------------

    async def upsert(
        self, values: Mapping[str, Any] | BaseModel, *, conflict_on: Sequence[Any]
    ) -> ModelT:
        """Insert a row, or update the existing row with the same key, in one statement.

        ``INSERT ... ON CONFLICT (conflict_on) DO UPDATE ... RETURNING``: atomic, so
        concurrent upserts of one key never raise. The update branch sets the given
        columns, moves ``updated_at`` and bumps ``version``; a new row starts at version 1.

        Args:
            values: The row (for a Pydantic model, the fields that were set).
            conflict_on: Attribute names (or column attributes) of a primary key, unique
                constraint or unique index.

        Returns:
            The inserted or updated entity (refreshed if it was already in the session).

        Raises:
            InvalidQueryError: Unknown fields, ``conflict_on`` not unique, the conflict
                columns missing from ``values``, or a backend without native upsert.
        """
        (entity,) = await self.upsert_many([values], conflict_on=conflict_on)
        return entity

    @overload
    async def upsert_many(
        self,
        rows: Iterable[Mapping[str, Any] | BaseModel],
        *,
        conflict_on: Sequence[Any],
        returning: Literal[True] = True,
        batch_size: int = UPSERT_BATCH,
    ) -> list[ModelT]: ...

    @overload
    async def upsert_many(
        self,
        rows: Iterable[Mapping[str, Any] | BaseModel],
        *,
        conflict_on: Sequence[Any],
        returning: Literal[False],
        batch_size: int = UPSERT_BATCH,
    ) -> int: ...

    async def upsert_many(
        self,
        rows: Iterable[Mapping[str, Any] | BaseModel],
        *,
        conflict_on: Sequence[Any],
        returning: bool = True,
        batch_size: int = UPSERT_BATCH,
    ) -> list[ModelT] | int:
        """Upsert many rows: one statement per batch of rows with the same keys.

        Rows repeating a key are merged first (the last one wins, keys compared after
        coercion to the column types), because one statement cannot touch a row twice.
        Rows are sent in the order of their conflict keys, so concurrent upserts of
        overlapping keys lock them in the same order and do not deadlock. Like
        `insert_many`, the statements run in a savepoint: if one fails, or the
        iterable raises, no row is written and the transaction is as it was before the
        call. See `upsert`.

        ``rows`` may be any iterable; it is read ``batch_size`` rows at a time. Merging and
        key ordering apply within a batch (a key repeated in a later batch is simply
        upserted again, so the last row still wins). With ``returning=False`` no entity is
        built or kept, so a generator of millions of rows is upserted in flat memory.

        Args:
            rows: An iterable of mappings of attribute names, or of Pydantic models.
            conflict_on: As for `upsert`.
            returning: Return the entities (``True``) or only how many rows were upserted.
            batch_size: Rows read and sent at a time.

        Returns:
            One entity per distinct key, in the order of the rows (a repeated key takes
            the place of its last row); with ``returning=False``, the number of distinct
            keys upserted (per batch).
        """
        size = check_count(batch_size, name="batch_size", minimum=1, maximum=1_000_000)
        dialect = self._dialect.name
        target = conflict_target(self.model, conflict_on, dialect)
        columns = column_map(self.model)
        conflict_keys = [next(k for k, c in columns.items() if c is col) for col in target.columns]
        reader = RowReader(self.model, managed=self._version_key, operation="upsert")
        batches = in_batches(iterable_rows(rows), size)
        first = next(batches, None)
        if first is None:
            return [] if returning else 0
        plan = UpsertPlan(self, reader, conflict_keys, target, returning=returning)
        merged = plan.merge(first)  # the first batch is checked before any SQL
        del first
        found: dict[Any, ModelT] = {}
        count = 0
        loaded: list[ModelT] = []
        with self._translated(None):
            try:
                # a savepoint: a failed statement leaves the transaction as it was before
                async with self.session.begin_nested():
                    while True:
                        entities, written = await plan.send(merged, loaded)
                        count += written
                        if returning:
                            for entity in self._in_row_order(entities, merged, conflict_keys):
                                key = tuple(getattr(entity, k) for k in conflict_keys)
                                found.pop(key, None)
                                found[key] = entity
                        batch = next(batches, None)
                        if batch is None:
                            break
                        merged = plan.merge(batch)
            except BaseException:
                await self._forget_rolled_back(loaded)
                raise
        return list(found.values()) if returning else count

    async def _forget_rolled_back(self, entities: list[ModelT]) -> None:
        """Put entities loaded by a rolled-back savepoint back to the database's state."""
        for entity in entities:
            try:
                await self.session.refresh(entity)
            except SQLAlchemyError:
                # the row was inserted by the rolled-back statement: it does not exist
                if entity in self.session:
                    self.session.expunge(entity)

    @staticmethod
    def _in_row_order(
        entities: list[ModelT], merged: Mapping[Any, Any], conflict_keys: Sequence[str]
    ) -> list[ModelT]:
        """Sort returned entities into the order of ``merged`` (keyed by conflict values).

        RETURNING does not promise the order of the rows, and rows of different key sets
        run as separate statements. Entities whose key does not compare equal to the given
        one (a value the column type converts) keep their returned order, at the end.
        """
        found: dict[Any, ModelT] = {}
        for entity in entities:
            try:
                found[tuple(getattr(entity, key) for key in conflict_keys)] = entity
            except TypeError:
                return entities
        ordered = [found.pop(identity) for identity in merged if identity in found]
        if len(ordered) < len(entities):
            placed = {id(entity) for entity in ordered}
            ordered.extend(entity for entity in entities if id(entity) not in placed)
        return ordered

    # -- bulk insert ----------------------------------------------------------------------

    async def insert_many(
        self,
        rows: Iterable[Mapping[str, Any] | BaseModel],
        *,
        method: Literal["auto", "values", "copy"] = "auto",
        batch_size: int = INSERT_BATCH,
    ) -> int:
        """Insert rows without building ORM objects; return how many were inserted.

        ``"values"`` sends a Core ``INSERT`` as one executemany per set of keys (it goes
        through ``session.execute``, so session events see it). ``"copy"`` streams the rows
        with PostgreSQL's COPY through asyncpg; columns a row leaves out get their Python
        default or the server default. ``"auto"`` uses COPY on asyncpg for
        ``COPY_THRESHOLD`` (1,000) rows or more; on aiosqlite it sends that many rows as
        one executemany on the driver connection when SQLAlchemy would add nothing per row
        (no value needs a type conversion and no left-out column has a computed Python
        default); otherwise ``"values"``. COPY and the driver executemany are recorded
        with `underlay.record_write`, so cache invalidation sees them. Consecutive batches
        with the same keys share one COPY of up to 100,000 rows: the next batch is read
        and checked while the server stores the rows already sent.

        ``rows`` may be any iterable, a generator of millions of rows included: they are
        read ``batch_size`` at a time and only one batch is held in memory. Each batch is
        checked against the columns' types before it is sent, and every batch is written
        inside one savepoint: if the database refuses a row (a duplicate key, say), a value
        does not fit, or the iterable itself raises, none of the rows of the call is
        inserted and the transaction is as it was before the call, so catching the error
        and committing keeps everything written earlier in the transaction. (In a session
        with no transaction under way and no objects, the call is its own transaction's
        first work: a failure rolls that back instead of a savepoint, with the same
        result.) Up to ``batch_size`` rows are all checked before any SQL is sent.

        Args:
            rows: An iterable of mappings of attribute names, or of Pydantic models.
            method: ``"auto"``, ``"values"`` or ``"copy"``.
            batch_size: Rows read and sent at a time (each batch is one COPY or
                executemany per set of keys).

        Returns:
            The number of rows inserted.

        Raises:
            InvalidQueryError: Unknown fields, a value that does not fit its column, a
                ``version`` field, or ``"copy"`` where the driver is not asyncpg or a default
                can only be computed in SQL. Raised before any SQL.
            DuplicateError: A unique constraint rejected a row (nothing is inserted; the
                transaction stays usable).
        """
        if method not in ("auto", "values", "copy"):
            raise InvalidQueryError(f"method must be 'auto', 'values' or 'copy', not {method!r}.")
        size = check_count(batch_size, name="batch_size", minimum=1, maximum=10_000_000)
        table = self._mapper.local_table
        assert isinstance(table, Table)  # noqa: S101 - mapped classes here map one table
        with self._translated(None):
            return await insert_rows(
                self.session,
                self.model,
                table,
                self._dialect,
                rows,
                method=method,
                batch_size=size,
                managed=self._version_key,
            )
