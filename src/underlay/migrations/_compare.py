"""Autogenerate comparisons Alembic leaves out: enum values, index predicates, defaults.

The comparators are registered on Alembic's global registry when ``underlay.migrations`` is
imported, and act only in environments configured by `run_migrations` (the ``underlay``
option), so other Alembic environments in the process are left alone.
"""

from __future__ import annotations

import re
from typing import Any

from alembic.autogenerate import comparators
from alembic.autogenerate.api import AutogenContext
from alembic.operations import ops
from sqlalchemy import Column, Enum, Index, String, Table, inspect, text
from sqlalchemy.sql.elements import ClauseElement

from underlay.migrations._ops import AlterEnumOp
from underlay.migrations._render import portable_sql, strip_casts

__all__ = ["OPTION", "compare_server_default", "compare_type", "normalize_sql"]

#: The ``context.configure`` option that switches these comparisons on.
OPTION = "underlay"

_TOKENS = re.compile(r"'(?:[^']|'')*'|\"[^\"]*\"|[^'\"]+")


def _enabled(autogen_context: AutogenContext) -> bool:
    return bool(autogen_context.migration_context.opts.get(OPTION))


def normalize_sql(sql: str | None) -> str | None:
    """Return ``sql`` in a form where spelling differences between backends vanish.

    Casts, parentheses, whitespace and letter case outside quoted text are dropped, so
    PostgreSQL's ``((status)::text = 'active'::text)`` and SQLite's ``status = 'active'``
    compare equal.

    Example:
        >>> normalize_sql("((status)::text = 'active'::text)")
        "status='active'"
        >>> normalize_sql("(Status = 'Active')")
        "status='Active'"
        >>> normalize_sql("status = ANY (ARRAY['a'::text, 'b'::text])")
        "statusin'a','b'"
        >>> normalize_sql("status IN ('a', 'b')")
        "statusin'a','b'"
    """
    if sql is None:
        return None
    parts = []
    for token in _TOKENS.findall(strip_casts(sql)):
        if token.startswith(("'", '"')):
            parts.append(token.strip('"') if token.startswith('"') else token)
        else:
            parts.append(re.sub(r"[\s()]+", "", token).lower())
    # PostgreSQL stores "x IN (a, b)" as "x = ANY (ARRAY[a, b])".
    return re.sub(r"=anyarray\[((?:'(?:[^']|'')*'|[^\]'])*)\]", r"in\1", "".join(parts))


def compare_server_default(
    inspector_column: Column[Any],
    metadata_column: Column[Any],
    rendered_metadata_default: str | None,
    rendered_inspector_default: str | None,
) -> bool:
    """Tell Alembic whether a column's server default changed.

    It replaces the migration implementation's own comparison while `run_migrations` runs
    (PostgreSQL's runs a query per column and cannot see through casts). Both sides are
    normalised with `normalize_sql`; an autoincrementing primary key's sequence default
    does not count.
    """
    table = metadata_column.table
    if metadata_column.primary_key and metadata_column is table._autoincrement_column:
        return False
    return _unquoted(normalize_sql(rendered_inspector_default)) != _unquoted(
        normalize_sql(rendered_metadata_default)
    )


def _unquoted(sql: str | None) -> str | None:
    # A string default is rendered bare for the comparison and reflected as a literal.
    if sql is not None and re.fullmatch(r"'(?:[^']|'')*'", sql):
        return sql[1:-1].replace("''", "'")
    return sql


def compare_type(
    context: Any,
    inspected_column: Column[Any],
    metadata_column: Column[Any],
    inspected_type: Any,
    metadata_type: Any,
) -> bool | None:
    """Compare column types as Alembic does, except enums stored as plain strings.

    Without a native enum type (SQLite) an ``Enum`` is a ``VARCHAR`` as long as its longest
    value; a new value changes that length, which the database does not enforce and which is
    not the change (PostgreSQL's enum values are compared on their own). ``None`` lets
    Alembic compare everything else.
    """
    if (
        isinstance(metadata_type, Enum)
        and not context.dialect.supports_native_enum
        and isinstance(inspected_type, String)
    ):
        return False
    return None


@comparators.dispatch_for("schema")
def _compare_enums(
    autogen_context: AutogenContext, upgrade_ops: ops.UpgradeOps, schemas: Any
) -> None:
    connection = autogen_context.connection
    if not _enabled(autogen_context) or connection is None:
        return
    if connection.dialect.name != "postgresql":
        return
    declared: dict[str, tuple[str, ...]] = {}
    for table in autogen_context.sorted_tables:
        for column in table.columns:
            type_ = column.type
            if isinstance(type_, Enum) and type_.native_enum and type_.name:
                declared.setdefault(str(type_.name), tuple(type_.enums))
    inspector: Any = inspect(connection)
    reflected = {enum["name"]: tuple(enum["labels"]) for enum in inspector.get_enums()}
    changed = [
        AlterEnumOp(name, values, existing_values=reflected[name])
        for name, values in sorted(declared.items())
        if name in reflected and reflected[name] != values
    ]
    # First: later operations of the same revision may use the new values.
    upgrade_ops.ops[:0] = changed


def _where(index: Index, dialect: str) -> str | None:
    where = index.dialect_kwargs.get(f"{dialect}_where")
    if where is None:
        return None
    if isinstance(where, ClauseElement):
        return str(where.compile(compile_kwargs={"literal_binds": True}))
    return str(where)


@comparators.dispatch_for("table")
def _compare_index_predicates(  # noqa: PLR0917 - Alembic's table comparator signature
    autogen_context: AutogenContext,
    modify_table_ops: ops.ModifyTableOps,
    schema: str | None,
    table_name: str,
    conn_table: Table | None,
    metadata_table: Table | None,
) -> None:
    if not _enabled(autogen_context) or conn_table is None or metadata_table is None:
        return
    dialect = autogen_context.dialect.name if autogen_context.dialect is not None else ""
    reflected = {index.name: index for index in conn_table.indexes}
    for index in sorted(metadata_table.indexes, key=lambda each: str(each.name)):
        old = reflected.get(index.name)
        if old is None:
            continue
        new_where, old_where = _where(index, dialect), _where(old, dialect)
        if normalize_sql(new_where) == normalize_sql(old_where):
            continue
        # The old index as the models would have declared it: every dialect's predicate
        # that matched this dialect's now holds the database's old predicate.
        kwargs = dict(index.dialect_kwargs)
        for key in list(kwargs):
            if key.endswith("_where") and normalize_sql(_where(index, key[: -len("_where")])) == (
                normalize_sql(new_where)
            ):
                kwargs[key] = text(portable_sql(old_where)) if old_where is not None else None
        kwargs = {key: value for key, value in kwargs.items() if value is not None}
        columns = [str(getattr(expr, "name", expr)) for expr in index.expressions]
        recreate = ops.CreateIndexOp(
            str(index.name), table_name, columns, schema=schema, unique=index.unique, **kwargs
        )
        drop = ops.DropIndexOp(
            str(index.name),
            table_name,
            schema=schema,
            _reverse=recreate,
            unique=index.unique,
            **kwargs,
        )
        modify_table_ops.ops.append(drop)
        modify_table_ops.ops.append(ops.CreateIndexOp.from_index(index))
