"""Generated columns through SQLite batch rebuilds.

Two problems stop Alembic's table rebuild (copy, drop, rename) of a SQLite table that has a
generated column. SQLAlchemy's reflection finds the ``GENERATED ALWAYS AS (...)`` expression
with a pattern that stops at the first comma, so a column typed ``NUMERIC(6, 2)`` comes back
with an empty expression; and the copy then lists the generated column among the columns it
inserts into, which SQLite refuses. While a migration runs, the migration context's own
implementation object gets two instance-level hooks: reflection re-reads the expression
from the table's SQL, and the copy leaves generated columns out (SQLite computes them).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from alembic import context
from sqlalchemy import Table, text
from sqlalchemy.engine import Connection

__all__ = ["generated_columns", "generated_expression"]


@contextmanager
def generated_columns(connection: Connection) -> Iterator[None]:
    """Install the hooks on the current migration context's implementation (SQLite only)."""
    if connection.dialect.name != "sqlite":
        yield
        return
    impl: Any = context.get_context().impl
    reflect = impl.autogen_column_reflect
    prepare = impl.prep_table_for_batch

    def column_reflect(inspector: Any, table: Table, column_info: dict[str, Any]) -> None:
        reflect(inspector, table, column_info)
        computed = column_info.get("computed")
        if computed is not None and not computed.get("sqltext"):
            sql = inspector.bind.execute(
                text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :name"),
                {"name": table.name},
            ).scalar()
            expression = generated_expression(sql or "", column_info["name"])
            if expression:
                computed["sqltext"] = expression

    def prep_table_for_batch(batch_impl: Any, table: Table) -> None:
        prepare(batch_impl, table)
        for column in table.columns:
            if column.computed is not None and column.name in batch_impl.column_transfers:
                batch_impl.column_transfers[column.name].pop("expr", None)

    impl.autogen_column_reflect = column_reflect
    impl.prep_table_for_batch = prep_table_for_batch
    try:
        yield
    finally:
        del impl.autogen_column_reflect
        del impl.prep_table_for_batch


def generated_expression(table_sql: str, column: str) -> str | None:
    """Return the expression of ``column``'s ``GENERATED ALWAYS AS (...)`` in ``table_sql``.

    Parentheses are matched, so commas inside the column's type or the expression are fine.

    Example:
        >>> generated_expression(
        ...     'CREATE TABLE t (a NUMERIC(6, 2), "b" NUMERIC(6, 2) '
        ...     "GENERATED ALWAYS AS (round(a, 1) * 2) STORED)",
        ...     "b",
        ... )
        'round(a, 1) * 2'
    """
    name = re.escape(column)
    start = re.compile(
        rf"(?:^|[(,])\s*(?:\"{name}\"|`{name}`|\[{name}\]|{name})\s", re.IGNORECASE
    ).search(table_sql)
    if start is None:
        return None
    marker = re.compile(r"GENERATED\s+ALWAYS\s+AS\s*\(", re.IGNORECASE).search(
        table_sql, start.end()
    )
    if marker is None:
        return None
    depth, position, quote = 1, marker.end(), ""
    while position < len(table_sql) and depth:
        char = table_sql[position]
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        position += 1
    return table_sql[marker.end() : position - 1].strip() if not depth else None
