"""Bulk insert with PostgreSQL's COPY through asyncpg."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Column, Table
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import FromClause

from underlay.exceptions import translate_error

__all__ = ["copy_rows", "copy_supported"]


def copy_supported(table: FromClause, dialect: Dialect) -> bool:
    """Whether rows for ``table`` can be COPYed: asyncpg, and no SQL-only column defaults."""
    if dialect.name != "postgresql" or dialect.driver != "asyncpg":
        return False
    if not isinstance(table, Table):
        return False
    for column in table.columns:
        default = column.default
        if default is not None and not (default.is_scalar or default.is_callable):
            return False
    return True


def _python_default(column: Column[Any]) -> Any:
    default = column.default
    if default.is_callable:  # type: ignore[union-attr]  # only called for columns with a default
        # SQLAlchemy wraps zero-argument callables to take the execution context
        return default.arg(None)  # type: ignore[union-attr]  # ColumnDefault.arg
    return default.arg  # type: ignore[union-attr]  # ColumnDefault.arg


async def copy_rows(
    connection: AsyncConnection,
    table: FromClause,
    rows: Sequence[Mapping[str, Any]],
    columns: Mapping[str, Column[Any]],
) -> None:
    """COPY ``rows`` (attribute-name mappings) into ``table`` in the connection's transaction.

    Columns a row omits get their Python-side default computed here, or are left out of the
    COPY so the server default applies. Values go through the column types' bind processing,
    as they would for an INSERT.
    """
    assert isinstance(table, Table)  # noqa: S101 - checked by copy_supported
    dialect = connection.dialect
    raw = await connection.get_raw_connection()
    driver: Any = raw.driver_connection
    if not driver.is_in_transaction():
        # SQLAlchemy's asyncpg adapter opens its transaction lazily, on the first statement;
        # a COPY before that would run (and commit) on its own
        await connection.exec_driver_sql("SELECT 1")
    groups: dict[frozenset[str], list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(frozenset(row), []).append(row)
    for keys, group in groups.items():
        names = sorted(keys)
        given = [columns[name] for name in names]
        given_names = {column.name for column in given}
        defaulted = [
            column
            for column in table.columns
            if column.name not in given_names and column.default is not None
        ]
        targets = [*given, *defaulted]
        processors = [
            column.type.dialect_impl(dialect).bind_processor(dialect) for column in targets
        ]
        records = []
        for row in group:
            values = [row[name] for name in names]
            values.extend(_python_default(column) for column in defaulted)
            records.append(
                tuple(
                    value if process is None or value is None else process(value)
                    for value, process in zip(values, processors, strict=True)
                )
            )
        try:
            await driver.copy_records_to_table(
                table.name,
                records=records,
                columns=[column.name for column in targets],
                schema_name=table.schema,
            )
        except Exception as exc:
            if getattr(exc, "sqlstate", None) is None:
                raise
            wrapped = DBAPIError(f"COPY {table.name}", None, exc)
            error = translate_error(wrapped)
            if error is None:
                raise
            raise error from exc
