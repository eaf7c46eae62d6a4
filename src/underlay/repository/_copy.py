"""Bulk insert on the driver connection: COPY through asyncpg, executemany through aiosqlite."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import FromClause

from underlay.exceptions import translate_error
from underlay.repository._bulk import PreparedBatch, RowLayout, row_layout

__all__ = [
    "begin_copy",
    "copy_records",
    "copy_supported",
    "driver_insert_layouts",
    "executemany_rows",
]


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


def driver_insert_layouts(
    model: type[Any], table: Table, groups: Sequence[Sequence[Mapping[str, Any]]], dialect: Dialect
) -> list[RowLayout] | None:
    """Return the layouts for an executemany on the aiosqlite connection, or ``None``.

    Only where SQLAlchemy would add nothing per row: no value needs a bind processor and
    every column a row leaves out has no Python-side default or a constant one (the same
    value SQLAlchemy would bind). Anything else goes through Core.
    """
    if dialect.name != "sqlite" or dialect.driver != "aiosqlite":
        return None
    layouts = []
    for group in groups:
        layout = row_layout(model, table, group[0].keys(), dialect)
        if not layout.plain or any(not c.default.is_scalar for c in layout.defaulted):  # type: ignore[union-attr]  # defaulted columns have a default
            return None
        layouts.append(layout)
    return layouts


async def executemany_rows(
    connection: AsyncConnection,
    table: Table,
    prepared: PreparedBatch,
    layouts: Sequence[RowLayout],
) -> None:
    """INSERT the batch's groups with one executemany each on the aiosqlite connection.

    The statement runs in the session's transaction (the connection has begun it), so it
    commits and rolls back with it. Errors are translated as for any other statement.
    """
    dialect = connection.dialect
    preparer = dialect.identifier_preparer
    raw = await connection.get_raw_connection()
    driver: Any = raw.driver_connection
    name = preparer.format_table(table)
    for group, layout in zip(prepared.groups, layouts, strict=True):
        columns = ", ".join(preparer.quote(column.name) for column in layout.columns)
        marks = ", ".join("?" for _ in layout.columns)
        sql = f"INSERT INTO {name} ({columns}) VALUES ({marks})"  # noqa: S608 - quoted identifiers, bound values
        try:
            cursor = await driver.executemany(sql, layout.records(group, prepared.columns))
        except sqlite3.Error as exc:
            # raise what a Core statement would: the underlay error, else SQLAlchemy's wrapper
            wrapped = DBAPIError.instance(sql, None, exc, sqlite3.Error)
            raise (translate_error(wrapped) or wrapped) from exc
        await cursor.close()


async def begin_copy(connection: AsyncConnection) -> Any:
    """Return the asyncpg connection under ``connection``, its transaction begun.

    SQLAlchemy's asyncpg adapter opens its transaction lazily, on the first statement; a
    COPY before that would run (and commit) on its own.
    """
    raw = await connection.get_raw_connection()
    driver: Any = raw.driver_connection
    if not driver.is_in_transaction():
        await connection.exec_driver_sql("SELECT 1")
    return driver


async def copy_records(
    driver: Any, table: Table, layout: RowLayout, records: Iterable[tuple[Any, ...]]
) -> None:
    """COPY ``records`` (tuples in ``layout``'s column order) into ``table``.

    Runs in the connection's transaction (see `begin_copy`). Errors the server raises are
    translated as for any other statement.
    """
    try:
        await driver.copy_records_to_table(
            table.name,
            records=records,
            columns=[column.name for column in layout.columns],
            schema_name=table.schema,
        )
    except Exception as exc:
        if getattr(exc, "sqlstate", None) is None:
            raise
        error = translate_error(DBAPIError(f"COPY {table.name}", None, exc))
        if error is None:
            raise
        raise error from exc
