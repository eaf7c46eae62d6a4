"""Shared per-row work of the bulk writes: checking, grouping and flattening rows.

Bulk writes see thousands of rows with the same keys, so everything that depends only on a
row's key set (the name check, the refusal of managed columns, the column list and the
value conversions) is done once per key set instead of once per row.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice, repeat
from operator import itemgetter
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Column, Table
from sqlalchemy.engine import Dialect

from underlay.exceptions import InvalidQueryError
from underlay.repository._coerce import (
    ValueRefused,
    all_canonical,
    column_coercer,
    passthrough,
)
from underlay.repository._query import column_map, values_dict
from underlay.tenancy._context import inside_all_tenants
from underlay.tenancy._mixins import TenantMixin

__all__ = [
    "PreparedBatch",
    "RowReader",
    "coerce_groups",
    "coerce_rows",
    "group_rows",
    "in_batches",
    "in_key_order",
    "iterable_rows",
    "prepare_batch",
    "python_default",
    "row_layout",
]


class RowReader:
    """Turn caller rows into attribute-name mappings, checking each key set once.

    A ``dict`` is used as it is (never modified); other mappings are copied and Pydantic
    models contribute the fields that were set.
    """

    def __init__(self, model: type[Any], *, managed: str | None, operation: str) -> None:
        self.model = model
        self.managed = managed
        self.operation = operation
        self.checked: set[frozenset[str]] = set()
        # the keys of the last row read: consecutive rows with equal keys skip every check
        self.last: Any = None

    def read(self, raw: Mapping[str, Any] | BaseModel) -> Mapping[str, Any]:
        """Return ``raw`` as a mapping of checked attribute names.

        Raises:
            InvalidQueryError: Not a mapping or model, an unknown key, or a managed column.
        """
        row = raw if type(raw) is dict else self.normalize(raw)
        keys = row.keys()
        if keys != self.last:
            self.check(frozenset(keys), row)
            self.last = keys
        return row

    def normalize(self, raw: Mapping[str, Any] | BaseModel) -> dict[str, Any]:
        """Return a dict of ``raw``'s values (unchecked); see the class docstring."""
        if isinstance(raw, BaseModel):
            return raw.model_dump(exclude_unset=True)
        if isinstance(raw, Mapping):
            return dict(raw)
        # untyped callers can pass anything: values_dict raises the usual error
        return values_dict(self.model, raw)  # type: ignore[unreachable]

    def check(self, key_set: frozenset[str], row: Mapping[str, Any]) -> None:
        """Check a key set the first time it is seen (``row`` is one row with it)."""
        if key_set in self.checked:
            return
        values_dict(self.model, row)
        if self.managed is not None and self.managed in key_set:
            raise InvalidQueryError(
                f"{self.operation} manages {self.model.__name__}.{self.managed} itself; "
                "leave it out."
            )
        if (
            "tenant_id" in key_set
            and issubclass(self.model, TenantMixin)
            and not inside_all_tenants()
        ):
            raise InvalidQueryError(
                f"{self.operation} stamps {self.model.__name__}.tenant_id from "
                "tenant_context(); leave it out (or name it inside all_tenants())."
            )
        self.checked.add(key_set)


def group_rows(
    rows: Iterable[Mapping[str, Any] | BaseModel], reader: RowReader
) -> list[list[Mapping[str, Any]]]:
    """Read ``rows`` and group them by key set, in order of each set's first row.

    One executemany (or COPY) needs rows with the same keys. Consecutive rows with equal
    keys go to the same group without building a key set for each.
    """
    groups: dict[frozenset[str], list[Mapping[str, Any]]] = {}
    last: Any = None
    current: list[Mapping[str, Any]] = []  # replaced at the first row
    append = current.append
    # the hot loop of a bulk insert: a dict row with the previous row's keys costs one
    # key-view comparison and an append
    for raw in rows:
        row = raw if type(raw) is dict else reader.normalize(raw)
        keys = row.keys()
        if keys != last:
            key_set = frozenset(keys)
            reader.check(key_set, row)
            append = groups.setdefault(key_set, []).append
            last = keys
        append(row)
    return list(groups.values())


def coerce_groups(
    model: type[Any], groups: list[list[Mapping[str, Any]]]
) -> list[list[Mapping[str, Any]]]:
    """Coerce every value of grouped rows to its column's type, before any SQL.

    A row whose values all come back unchanged (the usual case) is kept as it is; a row
    with a converted value (``"7"`` for an integer column) is copied, never modified.

    Raises:
        InvalidQueryError: A value does not fit its column; the message names the column
            and the value.
    """
    columns = column_map(model)
    coerced_groups = []
    for group in groups:
        coercers = [
            (key, coerce)
            for key in group[0]
            if (coerce := column_coercer(columns[key])) is not passthrough
        ]
        if coercers:
            coercers = [
                (key, coerce)
                for key, coerce in coercers
                if not all_canonical(
                    columns[key], [value for row in group if (value := row[key]) is not None]
                )
            ]
        result = group
        for index, row in enumerate(group if coercers else ()):
            copy: dict[str, Any] | None = None
            for key, coerce in coercers:
                value = row[key]
                if value is None:
                    continue
                try:
                    new = coerce(value)
                except ValueRefused as refused:
                    raise InvalidQueryError(
                        f"Invalid value for {model.__name__}.{key}: {refused.reason}."
                    ) from None
                if new is not value:
                    if copy is None:
                        copy = dict(row)
                    copy[key] = new
            if copy is not None:
                if result is group:
                    result = list(group)
                result[index] = copy
        coerced_groups.append(result)
    return coerced_groups


@dataclass(frozen=True)
class PreparedBatch:
    """One batch of a bulk write, checked and coerced, ready to send.

    Attributes:
        groups: The rows grouped by key set (see `group_rows`), values coerced.
        columns: For a batch of one group, its values column by column, in sorted key
            order, when they were read while checking (see `RowLayout.records`), else
            ``None``.
    """

    groups: list[list[Mapping[str, Any]]]
    columns: list[list[Any]] | None = None


def prepare_batch(
    model: type[Any], batch: list[Mapping[str, Any] | BaseModel], reader: RowReader
) -> PreparedBatch:
    """Check and coerce one batch of rows (`group_rows`, then `coerce_groups`).

    The usual bulk load (plain dicts with the same keys, every value already in its
    column's canonical form) is checked column by column at C speed, without a Python
    step per row; anything else takes the general path, which gives the same result and
    the same errors.

    Raises:
        InvalidQueryError: As `group_rows` and `coerce_groups`.
    """
    columns = uniform_columns(model, batch, reader)
    if columns is not None:
        return PreparedBatch([batch], columns)  # type: ignore[list-item]  # all dicts, checked
    return PreparedBatch(coerce_groups(model, group_rows(batch, reader)))


def uniform_columns(
    model: type[Any], batch: list[Mapping[str, Any] | BaseModel], reader: RowReader
) -> list[list[Any]] | None:
    """Return the batch's values column by column (sorted keys) if the fast check covers it.

    That is: every row is a ``dict`` with the first row's keys (two or more), and every
    value is ``None`` or already canonical for its column. ``None`` means "use the
    general path"; it says nothing about the rows being invalid.

    Raises:
        InvalidQueryError: The first row's keys are refused (unknown, managed, tenant).
    """
    if len(batch) < 2 or set(map(type, batch)) != {dict}:
        return None
    first: dict[str, Any] = batch[0]  # type: ignore[assignment]  # checked: all dicts
    width = len(first)
    # equal sizes and a value for each of the first row's keys: the same key set
    if width < 2 or set(map(len, batch)) != {width}:  # type: ignore[arg-type]  # dicts
        return None
    reader.check(frozenset(first), first)
    names = sorted(first)
    mapping = column_map(model)
    columns = []
    # one C-level pass per column: no per-row Python, and no object per row (a transpose
    # of row tuples would make an iterator per row, which the garbage collector pays for)
    for name in names:
        try:
            values = list(map(itemgetter(name), batch))  # type: ignore[arg-type]  # dicts
        except KeyError:
            return None
        column = mapping[name]
        if column_coercer(column) is not passthrough and not all_canonical(column, values):
            # NULLs fail the check (their type is not the column's): check the others
            present = [value for value in values if value is not None]
            if len(present) == len(values) or (present and not all_canonical(column, present)):
                return None
        columns.append(values)
    return columns


def iterable_rows(rows: Any) -> Iterable[Any]:
    """Return ``rows`` if it can be a collection of rows (not a mapping, string or scalar).

    Raises:
        InvalidQueryError: ``rows`` is a single mapping or model, a string or not iterable.
    """
    if isinstance(rows, Mapping | BaseModel | str | bytes) or not isinstance(rows, Iterable):
        raise InvalidQueryError(
            f"rows must be an iterable of mappings or models, not {type(rows).__name__}."
        )
    return rows


def in_batches(rows: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Yield the items of ``rows`` in lists of ``size`` (the last may be shorter).

    Only one list is built at a time, so a generator of any length is read in flat memory.
    """
    iterator = iter(rows)
    while batch := list(islice(iterator, size)):
        yield batch


def coerce_rows(model: type[Any], rows: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """`coerce_groups` for rows with mixed key sets, keeping their order."""
    positions: dict[frozenset[str], list[int]] = {}
    for index, row in enumerate(rows):
        positions.setdefault(frozenset(row), []).append(index)
    result = list(rows)
    for indices in positions.values():
        (coerced,) = coerce_groups(model, [[rows[index] for index in indices]])
        for index, row in zip(indices, coerced, strict=True):
            result[index] = row
    return result


def in_key_order(merged: Mapping[Any, Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Return the rows of ``merged`` (keyed by conflict values) sorted by key.

    Concurrent upserts that lock the same keys in one order cannot deadlock each other.
    """
    try:
        keys = sorted(merged, key=lambda key: [(value is None, value) for value in key])
    except TypeError:
        # keys that do not compare (position placeholders, mixed types): keep the order
        return list(merged.values())
    return [merged[key] for key in keys]


def python_default(column: Column[Any]) -> Any:
    """Compute the Python-side default of ``column`` (a scalar or a callable)."""
    default = column.default
    if default.is_callable:  # type: ignore[union-attr]  # only called for columns with a default
        # SQLAlchemy wraps zero-argument callables to take the execution context
        return default.arg(None)  # type: ignore[union-attr]  # ColumnDefault.arg
    return default.arg  # type: ignore[union-attr]  # ColumnDefault.arg


@dataclass(frozen=True)
class RowLayout:
    """How rows with one key set become tuples in the order of ``columns``.

    Attributes:
        names: The attribute names the rows give, in tuple order.
        columns: The table columns of the tuples: the given ones, then those whose Python
            default is computed here (columns left out of both get their server default).
        defaulted: The columns among ``columns`` filled with their Python default.
        processors: Each column's bind processor (``None`` where the value passes as is).
    """

    names: tuple[str, ...]
    columns: tuple[Column[Any], ...]
    defaulted: tuple[Column[Any], ...]
    processors: tuple[Callable[[Any], Any] | None, ...]

    @property
    def plain(self) -> bool:
        """Whether no value needs a conversion (tuples can be taken from rows as they are)."""
        return all(process is None for process in self.processors)

    def records(
        self,
        rows: Sequence[Mapping[str, Any]],
        columns: list[list[Any]] | None = None,
        *,
        lazy: bool = False,
    ) -> Iterable[tuple[Any, ...]]:
        """Return one tuple per row, defaults computed and values converted.

        ``columns``, if given, are ``rows``' values column by column in `names` order
        (from `prepare_batch`); the tuples are zipped from them where nothing needs
        converting or computing per row. With ``lazy``, those zipped tuples are made as
        they are read (nothing in them can fail), so each lives only while it is sent;
        otherwise, and on every other path, a list is returned, any error raised here.
        """
        names, defaulted = self.names, self.defaulted
        # constant defaults repeat alongside the columns (a computed one is called per row)
        if (
            columns is not None
            and self.plain
            and all(column.default.is_scalar for column in defaulted)  # type: ignore[union-attr]  # defaulted columns have one
        ):
            constants = [repeat(column.default.arg) for column in defaulted]  # type: ignore[union-attr]  # ColumnDefault.arg
            # the columns all have the batch's length; the constants end with them
            zipped = zip(*columns, *constants, strict=False)
            return zipped if lazy else list(zipped)
        if self.plain and not defaulted:
            if len(names) == 1:
                (name,) = names
                return [(row[name],) for row in rows]
            getter = itemgetter(*names)
            return list(map(getter, rows))
        records = []
        processors = self.processors
        for row in rows:
            values = [row[name] for name in names]
            values.extend(python_default(column) for column in defaulted)
            records.append(
                tuple(
                    value if process is None or value is None else process(value)
                    for value, process in zip(values, processors, strict=True)
                )
            )
        return records


def row_layout(model: type[Any], table: Table, keys: Iterable[str], dialect: Dialect) -> RowLayout:
    """Lay out rows with the attribute names ``keys`` as tuples for ``table``.

    Columns a row leaves out that have a Python-side default (scalar or callable) are
    appended; the caller checks that no left-out column has a SQL default expression.
    """
    columns = column_map(model)
    names = tuple(sorted(keys))
    given = [columns[name] for name in names]
    given_names = {column.name for column in given}
    defaulted = tuple(
        column
        for column in table.columns
        if column.name not in given_names and column.default is not None
    )
    targets = (*given, *defaulted)
    processors = tuple(column.type._cached_bind_processor(dialect) for column in targets)
    return RowLayout(names, targets, defaulted, processors)
