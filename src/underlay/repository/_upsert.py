"""Native ``INSERT ... ON CONFLICT DO UPDATE`` statements for PostgreSQL and SQLite."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Index, Table, UniqueConstraint
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.sql.elements import ColumnElement

from underlay.exceptions import DuplicateError, InvalidQueryError
from underlay.repository._bulk import RowReader, coerce_rows, group_rows, in_key_order
from underlay.repository._query import column_map
from underlay.tenancy._mixins import TenantMixin

__all__ = ["ConflictTarget", "UpsertPlan", "conflict_target", "upsert_statement"]

_INSERTS: dict[str, Any] = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


@dataclass(frozen=True)
class ConflictTarget:
    """The columns an upsert conflicts on, and the predicate of a partial unique index."""

    columns: list[Column[Any]]
    where: ColumnElement[bool] | None = None


def _unique_sets(table: Table, dialect_name: str) -> dict[frozenset[str], Any]:
    """Map each unique column set to ``None``, or to its partial index's predicate."""
    sets: dict[frozenset[str], Any] = {}
    for index in table.indexes:
        if isinstance(index, Index) and index.unique:
            names = frozenset(c.name for c in index.columns if isinstance(c, Column))
            # a partial index arbitrates conflicts only when the statement repeats its predicate
            sets[names] = index.dialect_kwargs.get(f"{dialect_name}_where")
    sets[frozenset(c.name for c in table.primary_key.columns)] = None
    for constraint in table.constraints:
        if isinstance(constraint, UniqueConstraint):
            sets[frozenset(c.name for c in constraint.columns)] = None
    for column in table.columns:
        if column.unique:
            sets[frozenset([column.name])] = None
    return sets


def conflict_target(
    model: type[Any], conflict_on: Sequence[Any], dialect_name: str
) -> ConflictTarget:
    """Resolve ``conflict_on`` (attribute names or column attributes) to a unique target.

    A primary key, unique constraint or unique index must cover exactly these columns. A
    partial unique index (such as :func:`underlay.live_unique_index`) works too: its
    predicate becomes the statement's conflict ``WHERE``.

    Raises:
        InvalidQueryError: A name is not a column attribute, or nothing unique covers
            exactly these columns.
    """
    if not isinstance(conflict_on, list | tuple) or not conflict_on:
        raise InvalidQueryError(
            f"conflict_on must be a non-empty list of column names, not {conflict_on!r:.60}."
        )
    columns = column_map(model)
    resolved: list[Column[Any]] = []
    for item in conflict_on:
        name = item if isinstance(item, str) else getattr(item, "key", None)
        if not isinstance(name, str) or name not in columns:
            raise InvalidQueryError(f"{model.__name__} has no column {item!r:.60} to upsert on.")
        resolved.append(columns[name])
    table = resolved[0].table
    unique = _unique_sets(table, dialect_name) if isinstance(table, Table) else {}
    key = frozenset(c.name for c in resolved)
    if key not in unique:
        raise InvalidQueryError(
            f"conflict_on={[c.name for c in resolved]!r} is not a primary key, unique "
            f"constraint or unique index of {model.__name__}; an upsert needs one."
        )
    return ConflictTarget(resolved, unique[key])


def _on_update_value(column: Column[Any]) -> Any:
    default = column.onupdate
    if default is None:
        return None
    if default.is_clause_element or default.is_scalar:
        return default.arg  # type: ignore[attr-defined]  # ColumnDefault.arg
    if default.is_callable:
        # SQLAlchemy wraps zero-argument callables to take the execution context
        return default.arg(None)  # type: ignore[attr-defined]  # ColumnDefault.arg
    return None


def upsert_statement(
    model: type[Any],
    dialect_name: str,
    keys: Iterable[str],
    target: ConflictTarget,
    *,
    version_column: Column[Any] | None,
    returning: bool = True,
) -> Any:
    """Build one ORM-enabled upsert returning entities, for rows with the attribute ``keys``.

    The rows are passed when it is executed (an executemany, which SQLAlchemy batches).
    The update branch sets every given column except the conflict and primary-key columns,
    moves ``onupdate`` columns (such as ``updated_at``) and bumps ``version_column``.

    Raises:
        InvalidQueryError: The dialect has no native upsert.
    """
    insert = _INSERTS.get(dialect_name)
    if insert is None:
        raise InvalidQueryError(
            f"upsert needs INSERT ... ON CONFLICT, which underlay supports on PostgreSQL and "
            f"SQLite, not {dialect_name}."
        )
    columns = column_map(model)
    conflict = target.columns
    statement = insert(model)
    table = conflict[0].table
    fixed = {c.name for c in conflict} | {c.name for c in table.primary_key.columns}
    # sorted: rows with the same key set in another order build the same (cached) statement
    names = sorted(keys)
    given = {columns[key].name for key in names}
    set_: dict[Column[Any], ColumnElement[Any] | Any] = {
        columns[key]: statement.excluded[columns[key].name]
        for key in names
        if columns[key].name not in fixed
    }
    for column in table.columns:
        if column.name not in given and column.name not in fixed and column.onupdate is not None:
            set_[column] = _on_update_value(column)
    if version_column is not None:
        set_[version_column] = version_column + 1
    if not set_:
        # DO NOTHING would return no row for an existing key; a no-op update returns it
        set_[conflict[0]] = statement.excluded[conflict[0].name]
    # A key taken by another tenant's row must not update that row: the conflict branch only
    # touches rows of the inserting tenant, and a refused row returns nothing.
    same_tenant = (
        table.c.tenant_id == statement.excluded.tenant_id
        if issubclass(model, TenantMixin)
        else None
    )
    upsert = statement.on_conflict_do_update(
        index_elements=list(conflict), index_where=target.where, set_=set_, where=same_tenant
    )
    return upsert.returning(model) if returning else upsert


class UpsertPlan:
    """The per-batch work of `WriteMethods.upsert_many`: merge, order, send."""

    def __init__(
        self,
        repository: Any,
        reader: RowReader,
        conflict_keys: list[str],
        target: Any,
        *,
        returning: bool,
    ) -> None:
        self.repository = repository
        self.reader = reader
        self.conflict_keys = conflict_keys
        self.target = target
        self.complete: Any = None
        # a tenant model needs the returned rows to tell a key taken by another tenant
        self.returning = returning or issubclass(repository.model, TenantMixin)

    def merge(self, batch: list[Any]) -> dict[Any, Mapping[str, Any]]:
        """Read and coerce one batch, merging rows that repeat a key (the last one wins)."""
        model = self.repository.model
        read: list[Mapping[str, Any]] = []
        for raw in batch:
            row = self.reader.read(raw)
            if row.keys() != self.complete:
                missing = [key for key in self.conflict_keys if key not in row]
                if missing:
                    raise InvalidQueryError(f"Upserted rows need a value for {missing}.")
                self.complete = row.keys()
            read.append(row)
        # merged on coerced values: "5" and 5 are one key
        merged: dict[Any, Mapping[str, Any]] = {}
        for position, row in enumerate(coerce_rows(model, read)):
            try:
                identity: Any = tuple(row[key] for key in self.conflict_keys)
                hash(identity)
            except TypeError:
                identity = position
            merged.pop(identity, None)
            merged[identity] = row
        return merged

    async def send(
        self, merged: dict[Any, Mapping[str, Any]], loaded: list[Any]
    ) -> tuple[list[Any], int]:
        """Upsert one merged batch; return the entities (if returned) and the row count."""
        repository = self.repository
        model = repository.model
        session = repository.session
        dialect = repository._dialect.name
        returned: list[Any] = []
        for group in group_rows(in_key_order(merged), self.reader):
            # one statement per key set, the rows as executemany parameters: SQLAlchemy
            # batches them (insertmanyvalues), the statement is cached
            statement = upsert_statement(
                model,
                dialect,
                group[0].keys(),
                self.target,
                version_column=repository._version_column,
                returning=self.returning,
            )
            if not self.returning:
                await session.execute(statement, list(group))
                continue
            result = await session.execute(
                statement, list(group), execution_options={"populate_existing": True}
            )
            entities = result.scalars().all()
            returned.extend(entities)
            loaded.extend(entities)
        if self.returning and len(returned) < len(merged) and issubclass(model, TenantMixin):
            raise DuplicateError(
                f"An upserted {model.__name__} key is taken by a row of another tenant; "
                "nothing of this call was kept for it. Use another key.",
                model=model,
            )
        return returned, len(merged)
