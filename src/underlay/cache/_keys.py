"""Namespace names shared by the commit hooks and the cached repository.

* ``t:<table>``: every list (query) entry that reads the table; bumped by any write to it.
* ``r:<table>``: every single-row entry of the table; bumped by writes whose rows are not
  known (bulk UPDATE / DELETE / INSERT statements, ``record_write(..., ids=None)``).
* ``r:<base table>:<primary key>``: the single-row entries of one row.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Table
from sqlalchemy.orm import Mapper
from sqlalchemy.sql.expression import FromClause

__all__ = ["format_id", "lists_namespace", "row_namespace", "rows_namespace"]


def _name(table: FromClause) -> str:
    return table.fullname if isinstance(table, Table) else str(table.description)


def lists_namespace(table: FromClause) -> str:
    """Return the namespace of the list entries that read ``table``."""
    return f"t:{_name(table)}"


def rows_namespace(table: FromClause) -> str:
    """Return the namespace of every single-row entry of ``table``."""
    return f"r:{_name(table)}"


def format_id(ident: Any) -> str:
    """Return a primary key (a value or a tuple of values) as text for a key or namespace."""
    values: Iterable[Any] = ident if isinstance(ident, tuple | list) else (ident,)
    return ",".join(str(value) for value in values)


def row_namespace(mapper: Mapper[Any], ident: Any) -> str:
    """Return the namespace of the single-row entries of one row of ``mapper``."""
    return f"r:{_name(mapper.base_mapper.local_table)}:{format_id(ident)}"
