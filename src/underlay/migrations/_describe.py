"""Readable sentences for the differences Alembic's autogenerate finds."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import CheckConstraint, ForeignKeyConstraint, Index, Table, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import Constraint, DefaultClause
from sqlalchemy.sql.elements import ClauseElement, TextClause
from sqlalchemy.types import TypeEngine

from underlay.migrations._render import strip_casts

__all__ = ["describe_difference", "describe_differences"]

_LABELS = {"type": "type", "default": "server default", "comment": "comment"}


def describe_difference(diff: Any, *, dialect: Dialect | None = None) -> str:
    """Return a readable sentence for one entry of Alembic's autogenerate diff list.

    Args:
        diff: One entry of the diff list (a tuple, or a list of tuples for one column).
        dialect: The dialect to write types and defaults in; a generic one by default.

    Returns:
        One sentence saying what the database has and what the models declare.

    Example:
        >>> from sqlalchemy import Column, Integer, MetaData, Table
        >>> describe_difference(("remove_table", Table("drafts", MetaData())))
        'Table drafts is in the database but not in the models.'
        >>> describe_difference(("add_column", None, "posts", Column("summary", Integer)))
        'Column posts.summary is in the models but not in the database.'
    """
    if isinstance(diff, list):
        return " ".join(describe_difference(item, dialect=dialect) for item in diff)
    if not isinstance(diff, tuple) or not diff:
        return repr(diff)
    operation, *rest = diff
    if operation.startswith("modify_") and len(rest) >= 6:
        _schema, table, column, _info, old, new = rest[:6]
        what = operation.removeprefix("modify_")
        if what == "nullable":
            return (
                f"Column {table}.{column} is {_nullability(old)} in the database and "
                f"{_nullability(new)} in the models."
            )
        return (
            f"Column {table}.{column} has {_LABELS.get(what, what)} {_value(old, dialect)} "
            f"in the database and {_value(new, dialect)} in the models."
        )
    if operation in {"add_column", "remove_column"} and len(rest) == 3:
        _schema, table, column = rest
        return f"Column {table}.{column.name} {_found(operation)}."
    if operation == "alter_enum" and len(rest) == 3:
        name, old, new = rest
        return (
            f"Enum type {name} has the values {', '.join(old)} in the database and "
            f"{', '.join(new)} in the models."
        )
    subject = rest[0] if rest else None
    if isinstance(subject, Table):
        return f"Table {subject.name} {_found(operation)}."
    if isinstance(subject, Index | Constraint):
        return f"{_item(subject, dialect)} {_found(operation)}."
    return f"{operation}: {', '.join(str(getattr(item, 'name', item)) for item in rest)}."


def describe_differences(diffs: Sequence[Any], *, dialect: Dialect | None = None) -> list[str]:
    """Describe a diff list; an index dropped and created again (a new predicate) is one line."""
    removed = {diff[1].name: diff[1] for diff in diffs if _is(diff, "remove_index")}
    added = {diff[1].name: diff[1] for diff in diffs if _is(diff, "add_index")}
    lines = []
    for diff in diffs:
        name = diff[1].name if _is(diff, "remove_index") or _is(diff, "add_index") else None
        if name is not None and name in removed and name in added:
            if diff[0] == "remove_index":
                lines.append(
                    f"Index {name} on {_table(added[name])} has "
                    f"{_predicate(removed[name], dialect)} in the database and "
                    f"{_predicate(added[name], dialect)} in the models."
                )
            continue
        lines.append(describe_difference(diff, dialect=dialect))
    return lines


def _is(diff: Any, operation: str) -> bool:
    return isinstance(diff, tuple) and len(diff) == 2 and diff[0] == operation


def _found(operation: str) -> str:
    if operation.startswith("add"):
        return "is in the models but not in the database"
    return "is in the database but not in the models"


def _nullability(nullable: object) -> str:
    return "nullable" if nullable else "NOT NULL"


def _value(value: Any, dialect: Dialect | None) -> str:
    if value is None:
        return "none"
    if isinstance(value, TypeEngine):
        try:
            return str(value.compile(dialect)) if dialect is not None else str(value)
        except Exception:  # noqa: BLE001 - a type this dialect cannot write: show it as Python
            return repr(value)
    if isinstance(value, DefaultClause):
        value = value.arg
    if isinstance(value, TextClause):
        return strip_casts(value.text)
    if isinstance(value, ClauseElement):
        return str(value.compile(dialect=dialect))
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def _table(item: Index | Constraint) -> str:
    table = item.table
    return table.name if isinstance(table, Table) else "?"


def _columns(item: Index | Constraint) -> str:
    if isinstance(item, Index):
        names = [str(getattr(expr, "name", expr)) for expr in item.expressions]
    else:
        names = [column.name for column in getattr(item, "columns", [])]
    return ", ".join(names)


def _predicate(index: Index, dialect: Dialect | None) -> str:
    where = None
    for key, value in index.dialect_kwargs.items():
        wanted = dialect is None or key == f"{dialect.name}_where"
        if key.endswith("_where") and value is not None and wanted:
            where = value
            break
    return f"WHERE {_value(where, dialect)}" if where is not None else "no WHERE"


def _item(item: Index | Constraint, dialect: Dialect | None) -> str:
    where = f"{_table(item)}({_columns(item)})"
    if isinstance(item, Index):
        kind = "Unique index" if item.unique else "Index"
        predicate = _predicate(item, dialect)
        suffix = f" {predicate}" if predicate != "no WHERE" else ""
        return f"{kind} {item.name} on {where}{suffix}"
    if isinstance(item, ForeignKeyConstraint):
        referred = item.elements[0].target_fullname.rsplit(".", 1)[0] if item.elements else "?"
        return f"Foreign key {item.name} on {where} -> {referred}"
    if isinstance(item, UniqueConstraint):
        return f"Unique constraint {item.name} on {where}"
    if isinstance(item, CheckConstraint):
        return f"Check constraint {item.name} on {_table(item)} ({_value(item.sqltext, dialect)})"
    return f"{type(item).__name__} {item.name} on {where}"
