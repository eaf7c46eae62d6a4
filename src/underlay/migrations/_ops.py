"""Migration operations for PostgreSQL enum types: ``op.drop_enum`` and ``op.alter_enum``.

Importing ``underlay.migrations`` registers them on Alembic's ``op``; autogenerate writes
them (see ``_rewrite``), and they do nothing on backends without native enum types, so one
script runs everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alembic.autogenerate import renderers
from alembic.autogenerate.api import AutogenContext
from alembic.operations import MigrateOperation, Operations
from sqlalchemy import text

__all__ = ["AlterEnumOp", "CreateEnumOp", "DropEnumOp"]


def _native_enums(operations: Operations) -> bool:
    return operations.get_context().dialect.name == "postgresql"


def _quote(operations: Operations, name: str) -> str:
    return str(operations.get_context().dialect.identifier_preparer.quote(name))


def _literal(value: str) -> str:
    # Backslash-escaped colons: op.execute() reads ":name" as a bound parameter.
    return "'" + value.replace("'", "''").replace(":", "\\:") + "'"


@Operations.register_operation("drop_enum")
class DropEnumOp(MigrateOperation):
    """Drop a PostgreSQL enum type once the last table using it is gone (``op.drop_enum``)."""

    def __init__(self, name: str, values: Sequence[str] = ()) -> None:
        self.name = name
        self.values = tuple(values)

    @classmethod
    def drop_enum(cls, operations: Operations, name: str) -> None:
        """Drop the enum type ``name`` if it exists; a no-op without native enum types."""
        operations.invoke(cls(name))

    def reverse(self) -> CreateEnumOp:
        return CreateEnumOp(self.name, self.values)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("drop_enum", self.name)


@Operations.implementation_for(DropEnumOp)
def _drop_enum(operations: Operations, operation: DropEnumOp) -> None:
    if _native_enums(operations):
        operations.execute(f"DROP TYPE IF EXISTS {_quote(operations, operation.name)}")


@renderers.dispatch_for(DropEnumOp)
def _render_drop_enum(autogen_context: AutogenContext, operation: DropEnumOp) -> str:
    return f"op.drop_enum({operation.name!r})"


@Operations.register_operation("create_enum")
class CreateEnumOp(MigrateOperation):
    """Create a PostgreSQL enum type for a column added to an existing table."""

    def __init__(self, name: str, values: Sequence[str]) -> None:
        self.name = name
        self.values = tuple(values)

    @classmethod
    def create_enum(cls, operations: Operations, name: str, values: Sequence[str]) -> None:
        """Create the enum type ``name`` unless it exists; a no-op without native enums."""
        operations.invoke(cls(name, values))

    def reverse(self) -> DropEnumOp:
        return DropEnumOp(self.name, self.values)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("create_enum", self.name, self.values)


@Operations.implementation_for(CreateEnumOp)
def _create_enum(operations: Operations, operation: CreateEnumOp) -> None:
    if _native_enums(operations):
        labels = ", ".join(_literal(value) for value in operation.values)
        name = _quote(operations, operation.name)
        operations.execute(
            f"DO $$ BEGIN CREATE TYPE {name} AS ENUM ({labels}); "
            "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
        )


@renderers.dispatch_for(CreateEnumOp)
def _render_create_enum(autogen_context: AutogenContext, operation: CreateEnumOp) -> str:
    return f"op.create_enum({operation.name!r}, {list(operation.values)!r})"


@Operations.register_operation("alter_enum")
class AlterEnumOp(MigrateOperation):
    """Change the values of a PostgreSQL enum type (``op.alter_enum``)."""

    def __init__(self, name: str, values: Sequence[str], *, existing_values: Sequence[str]) -> None:
        self.name = name
        self.values = tuple(values)
        self.existing_values = tuple(existing_values)

    @classmethod
    def alter_enum(
        cls,
        operations: Operations,
        name: str,
        values: Sequence[str],
        *,
        existing_values: Sequence[str],
    ) -> None:
        """Give the enum type ``name`` exactly ``values``, in that order.

        Values are added in place (``ALTER TYPE ... ADD VALUE``) when the existing ones keep
        their order; otherwise (a value removed or moved) the type is recreated and every
        column using it converted, which fails, changing nothing, if a row still holds a
        removed value. A no-op without native enum types.
        """
        operations.invoke(cls(name, values, existing_values=existing_values))

    def reverse(self) -> AlterEnumOp:
        return AlterEnumOp(self.name, self.existing_values, existing_values=self.values)

    def to_diff_tuple(self) -> tuple[Any, ...]:
        return ("alter_enum", self.name, self.existing_values, self.values)


@Operations.implementation_for(AlterEnumOp)
def _alter_enum(operations: Operations, operation: AlterEnumOp) -> None:
    if not _native_enums(operations):
        return
    name = _quote(operations, operation.name)
    kept = [value for value in operation.existing_values if value in operation.values]
    appended_only = kept == [value for value in operation.values if value in kept] and len(
        kept
    ) == len(operation.existing_values)
    if appended_only:
        for position, value in enumerate(operation.values):
            if value in operation.existing_values:
                continue
            where = f" AFTER {_literal(operation.values[position - 1])}" if position else ""
            if not position and operation.existing_values:
                where = f" BEFORE {_literal(operation.existing_values[0])}"
            operations.execute(
                f"ALTER TYPE {name} ADD VALUE IF NOT EXISTS {_literal(value)}{where}"
            )
        return
    _recreate(operations, operation, name)


def _recreate(operations: Operations, operation: AlterEnumOp, name: str) -> None:
    old = _quote(operations, f"{operation.name}__old")
    bind = operations.get_bind()
    columns = bind.execute(
        text(
            "SELECT c.relname, a.attname, pg_get_expr(d.adbin, d.adrelid) "
            "FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid "
            "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            "WHERE a.atttypid = to_regtype(:name) AND c.relkind = 'r' AND NOT a.attisdropped"
        ),
        {"name": operation.name},
    ).all()
    operations.execute(f"ALTER TYPE {name} RENAME TO {old}")
    labels = ", ".join(_literal(value) for value in operation.values)
    operations.execute(f"CREATE TYPE {name} AS ENUM ({labels})")
    for table, column, default in columns:
        target = (
            f"ALTER TABLE {_quote(operations, table)} ALTER COLUMN {_quote(operations, column)}"
        )
        if default is not None:
            operations.execute(f"{target} DROP DEFAULT")
        operations.execute(f"{target} TYPE {name} USING {_quote(operations, column)}::text::{name}")
        if default is not None:
            restored = default.replace(f"::{operation.name}__old", f"::{operation.name}")
            operations.execute(f"{target} SET DEFAULT {restored}")
    operations.execute(f"DROP TYPE {old}")


@renderers.dispatch_for(AlterEnumOp)
def _render_alter_enum(autogen_context: AutogenContext, operation: AlterEnumOp) -> str:
    return (
        f"op.alter_enum({operation.name!r}, {list(operation.values)!r}, "
        f"existing_values={list(operation.existing_values)!r})"
    )
