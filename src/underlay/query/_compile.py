"""Filters checked against a model's declared fields, then turned into SQL or a predicate.

Both targets share one resolution step (fields, allowed operators, coerced values), so the
in-memory repository and SQL agree: every leaf is two-valued (a NULL column never matches a
comparison, and counts as different for ``ne`` / ``not_in``), so ``not`` means the
complement, and a relationship path matches when some live related row matches.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from functools import lru_cache
from typing import Any, TypeAlias
from uuid import UUID

from sqlalchemy import Column, and_, false, inspect, not_, or_, true
from sqlalchemy.orm import Mapper, RelationshipProperty
from sqlalchemy.sql.elements import ColumnElement

from underlay.exceptions import InvalidQueryError
from underlay.models import SoftDeleteMixin
from underlay.query._parse import DEFAULT_LIMITS, FilterLimits, as_filter
from underlay.query._tree import (
    LIST_OPERATORS,
    OPERATORS,
    TEXT_OPERATORS,
    And,
    Condition,
    Filter,
    Not,
    Or,
)
from underlay.query._values import coerce_value, column_kind

__all__ = [
    "FieldRef",
    "FilterInput",
    "ResolvedFilter",
    "allowed_operators",
    "check_filterable",
    "resolve_filter",
]

#: What ``filter_by`` accepts: the mapping form, a filter tree, or ``None`` (no filter).
FilterInput: TypeAlias = Mapping[str, Any] | Filter | None

_ORDERED = frozenset({"eq", "ne", "lt", "le", "gt", "ge", "in", "not_in", "between", "is_null"})
_TEXT = frozenset({"eq", "ne", "in", "not_in", "is_null"}) | TEXT_OPERATORS
_DISCRETE = frozenset({"eq", "ne", "in", "not_in", "is_null"})
_ORDERED_TYPES = (int, float, Decimal, date, datetime, time, timedelta)


def allowed_operators(column: Column[Any]) -> frozenset[str]:
    """Return the operators a column allows unless its repository says otherwise.

    Text: equality, lists and the text operators. Numbers, dates, times and intervals:
    comparisons, lists and ``between``. Booleans: ``eq`` / ``ne``. Enums and UUIDs:
    equality and lists. Every column allows ``is_null``; others (JSON, ...) only that.
    """
    kind = column_kind(column)
    if kind is None:
        return frozenset({"is_null"})
    if kind is str:
        return _TEXT
    if kind is bool:
        return frozenset({"eq", "ne", "is_null"})
    if issubclass(kind, enum.Enum) or kind is UUID:
        return _DISCRETE
    if issubclass(kind, _ORDERED_TYPES):
        return _ORDERED
    if kind is bytes:
        return frozenset({"eq", "ne", "is_null"})
    return frozenset({"is_null"})


def _mapper(model: type[Any]) -> Mapper[Any]:
    found = inspect(model, raiseerr=False)
    if not isinstance(found, Mapper):
        raise TypeError(f"{model!r} is not a mapped class")
    return found


def _columns(mapper: Mapper[Any]) -> dict[str, Column[Any]]:
    found: dict[str, Column[Any]] = {}
    for prop in mapper.column_attrs:
        if len(prop.columns) == 1 and isinstance(prop.columns[0], Column):
            found[prop.key] = prop.columns[0]
    return found


@dataclass(frozen=True)
class FieldRef:
    """A declared field resolved on its model.

    Attributes:
        name: The declared name (``"email"`` or ``"author.email"``).
        hops: The relationships walked from the repository's model, in order.
        attribute: The column attribute on the last model.
        column: The column compared.
        operators: The operators callers may use on it.
    """

    name: str
    hops: tuple[RelationshipProperty[Any], ...]
    attribute: str
    column: Column[Any]
    operators: frozenset[str]


def _resolve_path(model: type[Any], name: str) -> tuple[tuple[Any, ...], str, Column[Any]]:
    mapper = _mapper(model)
    parts = name.split(".")
    hops: list[RelationshipProperty[Any]] = []
    for part in parts[:-1]:
        relationship = mapper.relationships.get(part)
        if relationship is None:
            raise TypeError(f"{mapper.class_.__name__} has no relationship {part!r} ({name!r})")
        hops.append(relationship)
        mapper = relationship.mapper
    column = _columns(mapper).get(parts[-1])
    if column is None:
        raise TypeError(
            f"filterable field {name!r}: {parts[-1]!r} is not a column attribute of "
            f"{mapper.class_.__name__}"
        )
    return tuple(hops), parts[-1], column


@lru_cache(maxsize=1024)
def _field_table(
    model: type[Any], fields: tuple[str, ...], overrides: tuple[tuple[str, frozenset[str]], ...]
) -> dict[str, FieldRef]:
    custom = dict(overrides)
    unknown = set(custom) - set(fields)
    if unknown:
        raise TypeError(f"filter_operators names undeclared fields: {sorted(unknown)}")
    table: dict[str, FieldRef] = {}
    for name in fields:
        hops, attribute, column = _resolve_path(model, name)
        operators = custom.get(name, allowed_operators(column))
        bad = operators - set(OPERATORS)
        if bad:
            raise TypeError(f"filter_operators[{name!r}] has unknown operators {sorted(bad)}")
        table[name] = FieldRef(name, hops, attribute, column, frozenset(operators))
    return table


def field_table(
    model: type[Any],
    fields: Sequence[str],
    operators: Mapping[str, Collection[str]] | None = None,
) -> dict[str, FieldRef]:
    """Resolve a repository's declared filterable fields (cached per declaration).

    Raises:
        TypeError: A field is not a column attribute (through declared relationships), or
            ``operators`` names an undeclared field or an unknown operator.
    """
    overrides = tuple(sorted((k, frozenset(v)) for k, v in (operators or {}).items()))
    return _field_table(model, tuple(fields), overrides)  # type: ignore[arg-type]  # classes hash


def check_filterable(
    model: type[Any],
    fields: Sequence[str],
    operators: Mapping[str, Collection[str]] | None = None,
) -> tuple[str, ...]:
    """Validate a repository's ``filterable_fields`` and ``filter_operators``.

    Raises:
        TypeError: As for `field_table`.
    """
    field_table(model, fields, operators)
    return tuple(fields)


@dataclass(frozen=True)
class _Leaf:
    ref: FieldRef
    op: str
    value: Any


_Node = _Leaf | And | Or | Not


def _coerce(ref: FieldRef, op: str, value: Any) -> Any:
    if op == "is_null":
        return bool(value)
    if op in TEXT_OPERATORS:
        if not isinstance(value, str):
            raise InvalidQueryError(f"Filter {ref.name}__{op} takes text, not {value!r}.")
        return value
    if op in LIST_OPERATORS:
        return tuple(coerce_value(ref.column, item, field=ref.name) for item in value)
    return coerce_value(ref.column, value, field=ref.name)


def _resolve(node: Filter, table: Mapping[str, FieldRef]) -> _Node:
    if isinstance(node, Condition):
        ref = table.get(node.field)
        if ref is None:
            raise InvalidQueryError(
                f"Cannot filter by {node.field!r}; filterable fields: {', '.join(table) or 'none'}."
            )
        if node.op not in ref.operators:
            raise InvalidQueryError(
                f"Filter {node.field!r} does not allow {node.op!r}; allowed: "
                f"{', '.join(op for op in OPERATORS if op in ref.operators)}."
            )
        return _Leaf(ref, node.op, _coerce(ref, node.op, node.value))
    if isinstance(node, Not):
        return Not(_resolve(node.item, table))  # type: ignore[arg-type]  # resolved nodes
    items = tuple(_resolve(item, table) for item in node.items)
    return type(node)(items)  # type: ignore[arg-type]  # resolved nodes


def _fingerprint_of(node: _Node) -> str:
    if isinstance(node, _Leaf):
        return repr((node.ref.name, node.op, node.value))
    if isinstance(node, Not):
        return f"not({_fingerprint_of(node.item)})"  # type: ignore[arg-type]  # resolved
    inner = ",".join(_fingerprint_of(item) for item in node.items)  # type: ignore[arg-type]  # resolved
    return f"{type(node).__name__.lower()}({inner})"


# -- SQL ------------------------------------------------------------------------------------


def _like_escape(text: str) -> str:
    return text.replace("/", "//").replace("%", "/%").replace("_", "/_")


def _glob_escape(text: str) -> str:
    return "".join(f"[{char}]" if char in "*?[" else char for char in text)


_AFFIXES = {
    "like": ("", ""),
    "startswith": ("", "*"),
    "contains": ("*", "*"),
    "endswith": ("*", ""),
}


def _text_sql(column: Any, op: str, value: str, glob: bool) -> ColumnElement[bool]:
    insensitive = op == "ilike" or (op.startswith("i") and op[1:] in _AFFIXES)
    base = op[1:] if insensitive else op
    before, after = _AFFIXES[base]
    if glob and not insensitive:
        # SQLite's LIKE ignores ASCII case; GLOB is its case-sensitive matcher.
        return column.op("GLOB", is_comparison=True)(before + _glob_escape(value) + after)  # type: ignore[no-any-return]  # a boolean operator
    pattern = before.replace("*", "%") + _like_escape(value) + after.replace("*", "%")
    if insensitive:
        return column.ilike(pattern, escape="/")  # type: ignore[no-any-return]  # a comparison
    return column.like(pattern, escape="/")  # type: ignore[no-any-return]  # a comparison


def _leaf_sql(leaf: _Leaf, glob: bool) -> ColumnElement[bool]:
    column: Any = leaf.ref.column
    op, value = leaf.op, leaf.value
    if op == "is_null":
        return column.is_(None) if value else column.is_not(None)  # type: ignore[no-any-return]  # a comparison
    nullable = bool(leaf.ref.column.nullable)
    if op in ("ne", "not_in"):
        test = column != value if op == "ne" else column.not_in(value)
        return or_(column.is_(None), test) if nullable else test
    if op in TEXT_OPERATORS:
        test = _text_sql(column, op, value, glob)
    elif op == "in":
        test = column.in_(value) if value else false()
    elif op == "between":
        test = column.between(*value)
    else:
        test = {
            "eq": column.__eq__,
            "lt": column.__lt__,
            "le": column.__le__,
            "gt": column.__gt__,
            "ge": column.__ge__,
        }[op](value)
    return and_(column.is_not(None), test) if nullable else test


def _live(model: type[Any]) -> ColumnElement[bool] | None:
    if issubclass(model, SoftDeleteMixin):
        return model.deleted_at.is_(None)
    return None


def _wrap_hops(leaf: _Leaf, test: ColumnElement[bool], include_deleted: bool) -> Any:
    for hop in reversed(leaf.ref.hops):
        live = None if include_deleted else _live(hop.mapper.class_)
        criterion = test if live is None else and_(live, test)
        attribute = getattr(hop.parent.class_, hop.key)
        test = attribute.any(criterion) if hop.uselist else attribute.has(criterion)
    return test


def _sql(node: _Node, glob: bool, include_deleted: bool) -> ColumnElement[bool]:
    if isinstance(node, _Leaf):
        test = _leaf_sql(node, glob)
        return _wrap_hops(node, test, include_deleted) if node.ref.hops else test
    if isinstance(node, Not):
        return not_(_sql(node.item, glob, include_deleted))  # type: ignore[arg-type]  # resolved
    parts = [_sql(item, glob, include_deleted) for item in node.items]  # type: ignore[arg-type]  # resolved
    if isinstance(node, And):
        return and_(true(), *parts) if not parts else and_(*parts)
    return or_(*parts)


# -- Python ---------------------------------------------------------------------------------


def _text_test(op: str, wanted: str) -> Callable[[str], bool]:
    insensitive = op == "ilike" or (op.startswith("i") and op[1:] in _AFFIXES)
    base = op[1:] if insensitive else op
    if insensitive:
        wanted = wanted.lower()
    tests: dict[str, Callable[[str], bool]] = {
        "like": lambda v: v == wanted,
        "startswith": lambda v: v.startswith(wanted),
        "contains": lambda v: wanted in v,
        "endswith": lambda v: v.endswith(wanted),
    }
    test = tests[base]
    return (lambda v: test(v.lower())) if insensitive else test


def _leaf_test(leaf: _Leaf) -> Callable[[Any], bool]:
    op, wanted = leaf.op, leaf.value
    if op == "is_null":
        return lambda v: (v is None) is wanted
    if op == "ne":
        return lambda v: v is None or v != wanted
    if op == "not_in":
        return lambda v: v is None or v not in wanted
    if op in TEXT_OPERATORS:
        text = _text_test(op, wanted)
        return lambda v: v is not None and text(v)
    if op == "in":
        return lambda v: v is not None and v in wanted
    if op == "between":
        low, high = wanted
        return lambda v: v is not None and low <= v <= high
    compare: Callable[[Any], bool] = {
        "eq": lambda v: v == wanted,
        "lt": lambda v: v < wanted,
        "le": lambda v: v <= wanted,
        "gt": lambda v: v > wanted,
        "ge": lambda v: v >= wanted,
    }[op]
    return lambda v: v is not None and compare(v)


def _is_live(entity: Any) -> bool:
    return not (isinstance(entity, SoftDeleteMixin) and entity.deleted_at is not None)


def _walk(
    hops: tuple[RelationshipProperty[Any], ...],
    attribute: str,
    test: Callable[[Any], bool],
    include_deleted: bool,
) -> Callable[[Any], bool]:
    if not hops:
        return lambda entity: test(getattr(entity, attribute))
    hop, rest = hops[0], hops[1:]
    inner = _walk(rest, attribute, test, include_deleted)

    def ok(related: Any) -> bool:
        return related is not None and (include_deleted or _is_live(related)) and inner(related)

    if hop.uselist:
        return lambda entity: any(ok(child) for child in getattr(entity, hop.key) or ())
    return lambda entity: ok(getattr(entity, hop.key))


def _predicate(node: _Node, include_deleted: bool) -> Callable[[Any], bool]:
    if isinstance(node, _Leaf):
        return _walk(node.ref.hops, node.ref.attribute, _leaf_test(node), include_deleted)
    if isinstance(node, Not):
        inner = _predicate(node.item, include_deleted)  # type: ignore[arg-type]  # resolved
        return lambda entity: not inner(entity)
    parts = [_predicate(item, include_deleted) for item in node.items]  # type: ignore[arg-type]  # resolved
    if isinstance(node, And):
        return lambda entity: all(part(entity) for part in parts)
    return lambda entity: any(part(entity) for part in parts)


@dataclass(frozen=True)
class ResolvedFilter:
    """A filter checked against a model: fields declared, operators allowed, values coerced.

    Attributes:
        tree: The filter as given (normalised).
    """

    tree: Filter
    _root: Any

    @property
    def empty(self) -> bool:
        """Whether the filter has no conditions."""
        return isinstance(self.tree, And) and not self.tree.items

    @property
    def fingerprint(self) -> str:
        """A short digest identifying the filter's meaning (for binding cursors to it)."""
        if self.empty:
            return ""
        digest = hashlib.sha256(_fingerprint_of(self._root).encode()).hexdigest()
        return digest[:32]

    def criterion(
        self, *, include_deleted: bool = False, dialect: str = "default"
    ) -> ColumnElement[bool] | None:
        """Return the WHERE criterion, or ``None`` for an empty filter.

        Args:
            include_deleted: Let relationship paths match soft-deleted related rows too.
            dialect: The SQL dialect's name (``"sqlite"`` matches case-sensitive text with
                ``GLOB``, as its ``LIKE`` ignores ASCII case).
        """
        if self.empty:
            return None
        return _sql(self._root, dialect == "sqlite", include_deleted)

    def predicate(self, *, include_deleted: bool = False) -> Callable[[Any], bool]:
        """Return a Python predicate on entities with the meaning of `criterion`."""
        if self.empty:
            return lambda _entity: True
        return _predicate(self._root, include_deleted)


def resolve_filter(
    model: type[Any],
    filter_by: Any,
    *,
    fields: Sequence[str],
    operators: Mapping[str, Collection[str]] | None = None,
    limits: FilterLimits = DEFAULT_LIMITS,
) -> ResolvedFilter:
    """Check a filter against a model's declared fields and coerce its values.

    Args:
        model: The mapped class filtered.
        filter_by: A mapping, a filter tree, or ``None``.
        fields: The declared filterable fields (columns and relationship paths).
        operators: Per-field allowed operators, overriding the defaults per column type.
        limits: The bounds to enforce.

    Returns:
        The resolved filter, ready to become SQL or a Python predicate.

    Raises:
        InvalidQueryError: A field not declared, an operator not allowed, a value that does
            not fit the column, or a broken bound; the message names the field.
    """
    tree = as_filter(filter_by, limits=limits)
    table = field_table(model, fields, operators)
    if isinstance(tree, And) and not tree.items:
        return ResolvedFilter(tree, None)
    return ResolvedFilter(tree, _resolve(tree, table))
