"""Foreign keys without an index: find them in models or a database, and index them."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Index, MetaData, Table, event, inspect
from sqlalchemy.engine import Connection, Inspector
from sqlalchemy.orm import Mapper
from sqlalchemy.schema import ForeignKeyConstraint, PrimaryKeyConstraint, UniqueConstraint

from underlay.models import NAMING_CONVENTION

__all__ = ["UnindexedForeignKey", "index_foreign_keys", "unindexed_foreign_keys"]

#: Tables that belong to the migration tool, never reported.
_IGNORED_TABLES = frozenset({"alembic_version"})


@dataclass(frozen=True)
class UnindexedForeignKey:
    """A foreign key whose columns lead no index of their table.

    PostgreSQL (and SQLite) index the referenced key but not the referencing columns, so
    each delete or key update of a referenced row scans the referencing table, and joins
    from parent to children cannot use an index.

    Attributes:
        table: The referencing table.
        columns: The foreign key's columns, in constraint order.
        referred_table: The referenced table.
        constraint_name: The foreign key constraint's name, when it has one.
        index_name: The name the naming convention gives an index on ``columns``.
    """

    table: str
    columns: tuple[str, ...]
    referred_table: str
    constraint_name: str | None
    index_name: str

    def __str__(self) -> str:
        columns = ", ".join(self.columns)
        return (
            f"Foreign key {self.table}({columns}) -> {self.referred_table} has no index: "
            f"deleting a {self.referred_table} row scans {self.table}. "
            f"Add an index on {self.table}({columns}), e.g. {self.index_name}."
        )


def unindexed_foreign_keys(
    source: MetaData | Table | Connection | Inspector,
    *,
    schema: str | None = None,
) -> list[UnindexedForeignKey]:
    """Return the foreign keys whose columns are not the leading columns of an index.

    An index, unique constraint or primary key covers a foreign key when its first columns
    are the key's columns (in any order). Partial indexes do not count: the database's own
    lookups on delete carry no ``WHERE`` that would let it use one.

    Args:
        source: The models' ``MetaData`` (or one ``Table``), or a sync ``Connection`` or
            ``Inspector`` to read the database's schema (from async code:
            ``await conn.run_sync(unindexed_foreign_keys)``).
        schema: With a connection, the schema to read; the default schema by default.

    Returns:
        The foreign keys without an index, ordered by table and columns.

    Example:
        >>> from sqlalchemy import Column, ForeignKey, Integer, MetaData, Table
        >>> metadata = MetaData(naming_convention=NAMING_CONVENTION)
        >>> _ = Table("users", metadata, Column("id", Integer, primary_key=True))
        >>> posts = Table(
        ...     "posts",
        ...     metadata,
        ...     Column("id", Integer, primary_key=True),
        ...     Column("author_id", ForeignKey("users.id")),
        ... )
        >>> [str(key.index_name) for key in unindexed_foreign_keys(metadata)]
        ['ix_posts_author_id']
    """
    if isinstance(source, MetaData):
        found = [key for table in source.tables.values() for key in _from_table(table)]
    elif isinstance(source, Table):
        found = _from_table(source)
    else:
        found = _from_database(source if isinstance(source, Inspector) else inspect(source), schema)
    return sorted(found, key=lambda key: (key.table, key.columns))


def index_foreign_keys(target: MetaData | Table | type[Any]) -> list[Index]:
    """Give every unindexed foreign key an index named by the naming convention.

    Call it once your models are declared, e.g. at the end of the models module
    (``index_foreign_keys(Base.metadata)``), or pass the declarative base itself
    (``index_foreign_keys(Base)``) to also index the models declared after the call.
    The indexes are ordinary ``Index`` objects of the tables: ``create_all`` creates them
    and Alembic's autogenerate writes ``create_index`` for them.

    Args:
        target: A ``MetaData``, a ``Table`` or a declarative base class.

    Returns:
        The indexes added now (models declared later are indexed as they are mapped).

    Example:
        >>> from sqlalchemy import Column, ForeignKey, Integer, MetaData, Table
        >>> metadata = MetaData(naming_convention=NAMING_CONVENTION)
        >>> _ = Table("users", metadata, Column("id", Integer, primary_key=True))
        >>> _ = Table("posts", metadata, Column("author_id", ForeignKey("users.id")))
        >>> [index.name for index in index_foreign_keys(metadata)]
        ['ix_posts_author_id']
        >>> index_foreign_keys(metadata)
        []
    """
    if isinstance(target, Table):
        return _index_table(target)
    if isinstance(target, MetaData):
        return [index for table in list(target.tables.values()) for index in _index_table(table)]
    metadata = getattr(target, "metadata", None)
    if not isinstance(metadata, MetaData):
        raise TypeError(
            f"index_foreign_keys() takes a MetaData, a Table or a declarative base, not {target!r}"
        )
    event.listen(target, "after_mapper_constructed", _index_mapped, propagate=True)
    return index_foreign_keys(metadata)


def _index_mapped(mapper: Mapper[Any], cls: type[Any]) -> None:
    if isinstance(mapper.local_table, Table):
        _index_table(mapper.local_table)


def _index_table(table: Table) -> list[Index]:
    added = []
    for key in _from_table(table):
        columns = (table.c[name] for name in key.columns)
        # The convention's name when it is free; otherwise (a partial index took it) our own.
        convention_name = _index_name(table.name, key.columns, table.metadata.naming_convention)
        index = Index(None if key.index_name == convention_name else key.index_name, *columns)
        added.append(index)
    return added


def _from_table(table: Table) -> list[UnindexedForeignKey]:
    if table.name in _IGNORED_TABLES:
        return []
    leads: list[Sequence[str]] = [
        [column.name for column in constraint.columns]
        for constraint in table.constraints
        if isinstance(constraint, PrimaryKeyConstraint | UniqueConstraint)
    ]
    for index in table.indexes:
        partial = any(
            key.endswith("_where") and value is not None
            for key, value in index.dialect_kwargs.items()
        )
        if not partial:
            leads.append(_leading_columns(index.expressions))
    found = []
    for constraint in table.constraints:
        if not isinstance(constraint, ForeignKeyConstraint) or not constraint.elements:
            continue
        columns = tuple(element.parent.name for element in constraint.elements)
        if _covered(columns, leads):
            continue
        referred = constraint.elements[0].target_fullname.rsplit(".", 1)[0].rsplit(".", 1)[-1]
        name = constraint.name if isinstance(constraint.name, str) else None
        found.append(
            UnindexedForeignKey(
                table=table.name,
                columns=columns,
                referred_table=referred,
                constraint_name=name,
                index_name=_free_name(
                    _index_name(table.name, columns, table.metadata.naming_convention),
                    {str(index.name) for index in table.indexes},
                ),
            )
        )
    return found


def _leading_columns(expressions: Iterable[Any]) -> list[str]:
    names = []
    for expression in expressions:
        if isinstance(expression, Column):
            names.append(expression.name)
        elif isinstance(expression, str):
            names.append(expression)
        else:
            break
    return names


def _from_database(inspector: Inspector, schema: str | None) -> list[UnindexedForeignKey]:
    foreign_keys = inspector.get_multi_foreign_keys(schema=schema)
    indexes = inspector.get_multi_indexes(schema=schema)
    uniques = inspector.get_multi_unique_constraints(schema=schema)
    primary_keys = inspector.get_multi_pk_constraint(schema=schema)
    found = []
    for key, constraints in foreign_keys.items():
        table = key[1]
        if table in _IGNORED_TABLES:
            continue
        leads: list[Sequence[str]] = [unique["column_names"] for unique in uniques.get(key, [])]
        primary = primary_keys.get(key)
        if primary:
            leads.append(primary["constrained_columns"])
        for index in indexes.get(key, []):
            options = index.get("dialect_options", {}).items()
            if any(name.endswith("_where") and value is not None for name, value in options):
                continue
            leads.append(_leading_columns(index["column_names"]))
        for constraint in constraints:
            columns = tuple(constraint["constrained_columns"])
            if not columns or _covered(columns, leads):
                continue
            found.append(
                UnindexedForeignKey(
                    table=table,
                    columns=columns,
                    referred_table=constraint["referred_table"],
                    constraint_name=constraint["name"],
                    index_name=_free_name(
                        _index_name(table, columns, NAMING_CONVENTION),
                        {str(index["name"]) for index in indexes.get(key, [])},
                    ),
                )
            )
    return found


def _covered(columns: tuple[str, ...], leads: Iterable[Sequence[str]]) -> bool:
    wanted = set(columns)
    return any(set(lead[: len(columns)]) == wanted for lead in leads)


def _free_name(name: str, taken: set[str]) -> str:
    return name if name not in taken else f"{name}_fk"


def _index_name(table: str, columns: tuple[str, ...], convention: Any) -> str:
    # Let SQLAlchemy apply the convention to a throwaway copy of the table's columns.
    metadata = MetaData(naming_convention=dict(convention))
    scratch = Table(table, metadata, *(Column(name) for name in columns))
    index = Index(None, *(scratch.c[name] for name in columns))
    return str(index.name) if index.name else f"ix_{table}_{'_'.join(columns)}"
