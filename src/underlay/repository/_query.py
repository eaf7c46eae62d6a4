"""Turn caller input into SQL safely: sort specifications, filters, write values.

Everything here validates against the mapped columns of the model and the fields a
repository declares, and raises :class:`~underlay.InvalidQueryError` before any SQL exists.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Column, inspect
from sqlalchemy.orm import ColumnProperty, Mapper
from sqlalchemy.sql import operators
from sqlalchemy.sql.elements import ColumnElement, UnaryExpression

from underlay.exceptions import InvalidQueryError
from underlay.query import DEFAULT_LIMITS, FilterLimits, resolve_filter
from underlay.repository._coerce import coerce_value

__all__ = [
    "SortKey",
    "check_fields",
    "coerce_values",
    "column_map",
    "filter_criteria",
    "mapper_of",
    "parse_order_by",
    "values_dict",
]

_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def mapper_of(model: type[Any]) -> Mapper[Any]:
    """Return the mapper of ``model``, or raise ``TypeError`` for an unmapped class."""
    mapper = inspect(model, raiseerr=False)
    if not isinstance(mapper, Mapper):
        raise TypeError(f"{model!r} is not a mapped class")
    return mapper


_COLUMN_MAPS: weakref.WeakKeyDictionary[type[Any], dict[str, Column[Any]]] = (
    weakref.WeakKeyDictionary()
)


def column_map(model: type[Any]) -> Mapping[str, Column[Any]]:
    """Map each single-column attribute name of ``model`` to its table column."""
    found = _COLUMN_MAPS.get(model)
    if found is None:
        found = {}
        for prop in mapper_of(model).column_attrs:
            if isinstance(prop, ColumnProperty) and len(prop.columns) == 1:
                column = prop.columns[0]
                if isinstance(column, Column):
                    found[prop.key] = column
        _COLUMN_MAPS[model] = found
    return found


_NAMES_BY_COLUMN: weakref.WeakKeyDictionary[type[Any], dict[tuple[Any, str], str]] = (
    weakref.WeakKeyDictionary()
)


def _names_by_column(model: type[Any]) -> Mapping[tuple[Any, str], str]:
    found = _NAMES_BY_COLUMN.get(model)
    if found is None:
        found = {(col.table, col.name): key for key, col in column_map(model).items()}
        _NAMES_BY_COLUMN[model] = found
    return found


def check_fields(model: type[Any], fields: Iterable[str], *, kind: str) -> tuple[str, ...]:
    """Validate a repository's declared field names; raise ``TypeError`` for a bad one."""
    columns = column_map(model)
    checked = tuple(fields)
    for name in checked:
        if name not in columns:
            raise TypeError(
                f"{kind} field {name!r} is not a column attribute of {model.__name__}; "
                "declare only mapped columns"
            )
    return checked


@dataclass(frozen=True)
class SortKey:
    """One term of an ORDER BY: an expression, its direction and its attribute name.

    Attributes:
        expression: The column or SQL expression sorted on.
        descending: Whether the order is descending.
        name: The model attribute the expression is, or ``None`` for any other expression.
    """

    expression: ColumnElement[Any]
    descending: bool
    name: str | None

    @property
    def clause(self) -> ColumnElement[Any]:
        """The ORDER BY clause for this key."""
        return self.expression.desc() if self.descending else self.expression.asc()

    @property
    def spec(self) -> str:
        """The string form, ``"-name"`` or ``"name"`` (only for named keys)."""
        return ("-" if self.descending else "") + (self.name or "?")


def _parse_string(model: type[Any], text: str, allowed: Sequence[str]) -> list[SortKey]:
    columns = column_map(model)
    keys: list[SortKey] = []
    for raw in text.split(","):
        term = raw.strip()
        descending = term.startswith("-")
        name = term[1:].strip() if term.startswith(("-", "+")) else term
        if not name:
            raise InvalidQueryError(
                f"Empty sort field in {_show(text)}; use e.g. '-created_at,id'."
            )
        if not _FIELD.fullmatch(name) or name.startswith("__"):
            raise InvalidQueryError(f"Sort field {_show(name)} is not a valid field name.")
        if name not in allowed or name not in columns:
            raise InvalidQueryError(
                f"Cannot sort {model.__name__} by {_show(name)}; "
                f"sortable fields: {', '.join(allowed) or 'none'}."
            )
        keys.append(SortKey(columns[name], descending, name))
    return keys


def _parse_expression(model: type[Any], item: Any) -> SortKey:
    element = item.__clause_element__() if hasattr(item, "__clause_element__") else item
    if not isinstance(element, ColumnElement):
        raise InvalidQueryError(f"Cannot sort by {_show(item)}: not a SQL expression.")
    descending = False
    if isinstance(element, UnaryExpression) and element.modifier in (
        operators.desc_op,
        operators.asc_op,
    ):
        descending = element.modifier is operators.desc_op
        element = element.element
    table, column_name = getattr(element, "table", None), getattr(element, "name", None)
    name = (
        _names_by_column(model).get((table, column_name)) if isinstance(column_name, str) else None
    )
    expression = column_map(model)[name] if name is not None else element
    return SortKey(expression, descending, name)


def parse_order_by(model: type[Any], order_by: Any, allowed: Sequence[str]) -> list[SortKey]:
    """Turn an ``order_by`` argument into sort keys.

    Strings (``"-created_at,name"``) come from callers and may name only ``allowed`` fields;
    SQLAlchemy expressions (``User.name.desc()``) come from code and are taken as they are.

    Raises:
        InvalidQueryError: A string names an undeclared, unknown or malformed field, or a
            field appears twice.
    """
    if order_by is None:
        return []
    items = order_by if isinstance(order_by, list | tuple) else [order_by]
    keys: list[SortKey] = []
    for item in items:
        if isinstance(item, str):
            keys.extend(_parse_string(model, item, allowed))
        else:
            keys.append(_parse_expression(model, item))
    names = [key.name for key in keys if key.name is not None]
    if len(names) != len(set(names)):
        raise InvalidQueryError(f"A field appears twice in the sort order {_show(order_by)}.")
    return keys


def filter_criteria(
    model: type[Any],
    filter_by: Any,
    allowed: Sequence[str],
    *,
    operators: Mapping[str, Collection[str]] | None = None,
    limits: FilterLimits = DEFAULT_LIMITS,
    include_deleted: bool = False,
    dialect: str = "default",
) -> list[ColumnElement[bool]]:
    """Turn a caller-supplied ``filter_by`` into WHERE criteria (see `underlay.query`).

    Only ``allowed`` fields are accepted; values are coerced to the column types.

    Raises:
        InvalidQueryError: An undeclared field, a refused operator, a bad value or a
            broken bound.
    """
    resolved = resolve_filter(model, filter_by, fields=allowed, operators=operators, limits=limits)
    criterion = resolved.criterion(include_deleted=include_deleted, dialect=dialect)
    return [] if criterion is None else [criterion]


def values_dict(model: type[Any], values: Mapping[str, Any] | BaseModel) -> dict[str, Any]:
    """Return write values as a dict of column attribute names, refusing unknown names.

    A Pydantic model contributes only the fields that were set on it.

    Raises:
        InvalidQueryError: A key is not a column attribute of ``model``.
    """
    if isinstance(values, BaseModel):
        data = values.model_dump(exclude_unset=True)
    elif isinstance(values, Mapping):
        data = dict(values)
    else:
        raise InvalidQueryError(
            f"Values must be a mapping or a Pydantic model, not {type(values).__name__}."
        )
    columns = column_map(model)
    unknown = [key for key in data if key not in columns]
    if unknown:
        raise InvalidQueryError(
            f"{model.__name__} has no column attribute "
            + ", ".join(_show(key) for key in unknown)
            + "."
        )
    return data


def coerce_values(model: type[Any], data: Mapping[str, Any]) -> dict[str, Any]:
    """Return write values (attribute names, as `values_dict` returns them) coerced to types.

    Raises:
        InvalidQueryError: A value does not fit its column (see `coerce_value`).
    """
    columns = column_map(model)
    return {
        key: coerce_value(columns[key], value, field=f"{model.__name__}.{key}")
        for key, value in data.items()
    }
