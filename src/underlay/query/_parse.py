"""Filters from mappings and query strings, checked against bounds, and back again.

Parsing checks the shape of a filter (keys, operators, value shapes, bounds); it knows
nothing of a model. Compiling checks it against a repository's declared fields and coerces
the values to the column types.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, time
from decimal import Decimal
from enum import Enum
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode
from uuid import UUID

from pydantic import BaseModel

from underlay.exceptions import InvalidQueryError
from underlay.query._tree import (
    LIST_OPERATORS,
    OPERATORS,
    And,
    Condition,
    Filter,
    Not,
    Or,
)

__all__ = [
    "DEFAULT_LIMITS",
    "FilterLimits",
    "as_filter",
    "parse_filter",
    "parse_query_string",
    "to_mapping",
    "to_query_string",
]

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_GROUPS = ("and", "or", "not")
_KNOWN_OPS = frozenset(OPERATORS)
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


@dataclass(frozen=True, slots=True)
class FilterLimits:
    """Bounds on what one filter may ask for, checked before anything is compiled.

    Attributes:
        max_clauses: The most conditions in one filter.
        max_in: The most values in one ``in`` / ``not_in`` list.
        max_depth: The deepest nesting of ``and`` / ``or`` / ``not`` groups.
        max_string: The longest string value, in characters.
        max_query_length: The longest query string (or JSON group value), in characters.

    Example:
        >>> FilterLimits(max_in=10).max_in
        10
    """

    max_clauses: int = 50
    max_in: int = 100
    max_depth: int = 4
    max_string: int = 1000
    max_query_length: int = 16384


#: The bounds used when a repository declares none.
DEFAULT_LIMITS = FilterLimits()


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


class _Budget:
    """Counts the conditions of one filter as it is parsed."""

    def __init__(self, limits: FilterLimits) -> None:
        self.limits = limits
        self.clauses = 0
        self.raw = 0

    def take(self) -> None:
        self.clauses += 1
        if self.clauses > self.limits.max_clauses:
            raise InvalidQueryError(
                f"The filter has more than {self.limits.max_clauses} conditions."
            )

    def nest(self, depth: int, *, raw: bool = False) -> None:
        if raw:
            # nested "and" groups add no level but still recurse: bound them too
            self.raw += 1
            if self.raw > 2 * self.limits.max_depth + 2:
                raise InvalidQueryError("The filter nests 'and' groups too deeply.")
        if depth > self.limits.max_depth:
            raise InvalidQueryError(
                f"The filter nests groups deeper than {self.limits.max_depth} levels."
            )


def split_key(key: object) -> tuple[str, str]:
    """Split a filter key into its field path and operator (``eq`` when none is given).

    Raises:
        InvalidQueryError: The key is not ``field``, ``field__op``, ``a.b`` or ``a.b__op``.
    """
    if not isinstance(key, str) or not key or len(key) > 256:
        raise InvalidQueryError(f"Invalid filter key {_show(key)}.")
    field, sep, op = key.rpartition("__")
    if not sep or op not in _KNOWN_OPS:
        field, op = key, "eq"
    for part in field.split("."):
        if not _NAME.fullmatch(part) or part.startswith("__"):
            raise InvalidQueryError(
                f"Invalid filter key {_show(key)}: use 'field' or 'field__op' with op one of "
                f"{', '.join(OPERATORS)}."
            )
    return field, op


def _check_text(field: str, value: str, limits: FilterLimits) -> str:
    if len(value) > limits.max_string:
        raise InvalidQueryError(
            f"Filter value for {field!r} is longer than {limits.max_string} characters."
        )
    if "\x00" in value:
        raise InvalidQueryError(f"Filter value for {field!r} contains a NUL character.")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidQueryError(f"Filter value for {field!r} is not valid text.") from exc
    return value


def _scalar(field: str, value: Any, limits: FilterLimits) -> Any:
    if isinstance(value, str):
        return _check_text(field, value, limits)
    if isinstance(value, BaseModel | Mapping | bytes | bytearray) or (
        isinstance(value, Iterable) and not isinstance(value, Enum)
    ):
        raise InvalidQueryError(
            f"Filter value for {field!r} must be a single value, not {type(value).__name__}."
        )
    return value


def split_list(text: str) -> tuple[str, ...]:
    r"""Split a comma-separated list value; ``\,`` is a literal comma, ``\\`` a backslash.

    Example:
        >>> split_list(r"a,b\,c")
        ('a', 'b,c')
    """
    items: list[str] = []
    current: list[str] = []
    chars = iter(text)
    for char in chars:
        if char == "\\":
            current.append(next(chars, "\\"))
        elif char == ",":
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return tuple(items)


def _join_list(values: Iterable[Any]) -> str:
    return ",".join(_text(v).replace("\\", "\\\\").replace(",", "\\,") for v in values)


def _flag(field: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise InvalidQueryError(f"is_null on {field!r} takes true or false, not {_show(value)}.")


def make_condition(field: str, op: str, value: Any, limits: FilterLimits) -> Condition:
    """Build a condition, checking the value's shape for the operator (not its type).

    ``None`` with ``eq`` / ``ne`` becomes ``is_null`` true / false.

    Raises:
        InvalidQueryError: The operator is unknown, or the value has the wrong shape or
            breaks a bound.
    """
    if op not in _KNOWN_OPS:
        raise InvalidQueryError(f"Unknown filter operator {_show(op)} for {field!r}.")
    if value is None:
        if op not in ("eq", "ne"):
            raise InvalidQueryError(f"Filter {field}__{op} needs a value, got None.")
        return Condition(field, "is_null", op == "eq")
    if op == "is_null":
        return Condition(field, op, _flag(field, value))
    if op in LIST_OPERATORS:
        if isinstance(value, str):
            items: tuple[Any, ...] = split_list(value)
        elif isinstance(value, list | tuple):
            items = tuple(value)
        else:
            raise InvalidQueryError(
                f"Filter {field}__{op} takes a list, not {type(value).__name__}."
            )
        if not items:
            raise InvalidQueryError(f"Filter {field}__{op} needs at least one value.")
        if op == "between" and len(items) != 2:
            raise InvalidQueryError(
                f"Filter {field}__between takes two values (low, high), got {len(items)}."
            )
        if len(items) > limits.max_in:
            raise InvalidQueryError(f"Filter {field}__{op} lists more than {limits.max_in} values.")
        checked = tuple(_scalar(field, item, limits) for item in items)
        if any(item is None for item in checked):
            raise InvalidQueryError(f"Filter {field}__{op} cannot list None.")
        return Condition(field, op, checked)
    return Condition(field, op, _scalar(field, value, limits))


def _combine(kind: type[And] | type[Or], items: list[Filter]) -> Filter:
    flat: list[Filter] = []
    for item in items:
        flat.extend(item.items if isinstance(item, kind) else (item,))
    if len(flat) == 1:
        return flat[0]
    return kind(tuple(flat))


def _parse_group(key: str, value: Any, depth: int, budget: _Budget) -> Filter:
    # An "and" group adds no level: its items sit in the enclosing AND.
    level = depth if key == "and" else depth + 1
    budget.nest(level, raw=True)
    if key == "not":
        return Not(_parse_mapping(value, level, budget))
    if not isinstance(value, list | tuple) or not value:
        raise InvalidQueryError(f"A {key!r} group takes a non-empty list of filters.")
    items = [_parse_mapping(item, level, budget) for item in value]
    return _combine(And if key == "and" else Or, items)


def _parse_mapping(data: Any, depth: int, budget: _Budget) -> Filter:
    if not isinstance(data, Mapping):
        raise InvalidQueryError(f"A filter must be a mapping, not {type(data).__name__}.")
    items: list[Filter] = []
    for key, value in data.items():
        if key in _GROUPS:
            items.append(_parse_group(key, value, depth, budget))
            budget.raw -= 1
        else:
            budget.take()
            field, op = split_key(key)
            items.append(make_condition(field, op, value, budget.limits))
    return _combine(And, items)


def _check_tree(node: Any, depth: int, budget: _Budget) -> Filter:
    if isinstance(node, Condition):
        budget.take()
        field, _ = split_key(node.field)
        return make_condition(field, node.op, node.value, budget.limits)
    if isinstance(node, Not):
        budget.nest(depth + 1)
        return Not(_check_tree(node.item, depth + 1, budget))
    if isinstance(node, Or):
        if not node.items:
            raise InvalidQueryError("An 'or' group takes a non-empty list of filters.")
        budget.nest(depth + 1)
        return _combine(Or, [_check_tree(item, depth + 1, budget) for item in node.items])
    if isinstance(node, And):
        budget.nest(depth, raw=True)
        checked = _combine(And, [_check_tree(item, depth, budget) for item in node.items])
        budget.raw -= 1
        return checked
    raise InvalidQueryError(f"Not a filter: {_show(node)}.")


def parse_filter(data: Mapping[str, Any], *, limits: FilterLimits = DEFAULT_LIMITS) -> Filter:
    """Parse the mapping form of a filter into a normalised tree.

    Keys are ``field`` (equality) or ``field__op``; ``"and"`` / ``"or"`` take a list of
    mappings, ``"not"`` one mapping. Entries of one mapping are combined with AND.

    Args:
        data: The filter, e.g. ``{"rank__ge": 3, "or": [{"name": "ada"}, {"name": "bob"}]}``.
        limits: The bounds to enforce.

    Returns:
        The filter tree (an empty `And` for an empty mapping).

    Raises:
        InvalidQueryError: A malformed key, an unknown operator, a value of the wrong shape
            or a broken bound.

    Example:
        >>> parse_filter({"rank__ge": 3, "name": "ada"}).items[0]
        Condition(field='rank', op='ge', value=3)
    """
    return _parse_mapping(data, 0, _Budget(limits))


def as_filter(value: Any, *, limits: FilterLimits = DEFAULT_LIMITS) -> Filter:
    """Return ``value`` (a mapping, a filter tree or ``None``) as a checked, normalised tree.

    Raises:
        InvalidQueryError: As for `parse_filter`.
    """
    if value is None:
        return And()
    if isinstance(value, Condition | And | Or | Not):
        return _check_tree(value, 0, _Budget(limits))
    if isinstance(value, Mapping):
        return parse_filter(value, limits=limits)
    raise InvalidQueryError(f"filter_by must be a mapping or a filter, not {type(value).__name__}.")


def _reject_constant(name: str) -> Any:
    raise InvalidQueryError(f"{name} is not a valid filter value.")


def _load_json(key: str, text: str, limits: FilterLimits) -> Any:
    if len(text) > limits.max_query_length:
        raise InvalidQueryError(f"The {key!r} parameter is too long.")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise InvalidQueryError(
            f"The {key!r} parameter must be JSON: a list of filter objects for 'or' / 'and', "
            "one filter object for 'not'."
        ) from exc


def parse_query_string(
    query: str | Iterable[tuple[str, str]],
    *,
    ignore: Collection[str] = (),
    limits: FilterLimits = DEFAULT_LIMITS,
) -> Filter:
    r"""Parse a URL query string (or its decoded pairs) into a normalised filter tree.

    Each ``field=value`` or ``field__op=value`` pair is one condition; pairs combine with
    AND. List operators (``in``, ``not_in``, ``between``) take comma-separated values
    (``\,`` for a literal comma). ``or=`` / ``and=`` take a JSON list of filter objects
    and ``not=`` one JSON filter object, in the mapping form of `parse_filter`.

    Args:
        query: The query string (without ``?``), or (key, value) pairs already decoded.
        ignore: Parameter names that are not filters (``order_by``, ``limit``, ...).
        limits: The bounds to enforce.

    Returns:
        The filter tree.

    Raises:
        InvalidQueryError: Anything malformed, unknown or out of bounds.

    Example:
        >>> parse_query_string("rank__ge=3&name__in=ada,bob").items[1]
        Condition(field='name', op='in', value=('ada', 'bob'))
    """
    if isinstance(query, str):
        if len(query) > limits.max_query_length:
            raise InvalidQueryError(
                f"The query string is longer than {limits.max_query_length} characters."
            )
        try:
            pairs: Iterable[tuple[str, str]] = parse_qsl(
                query.removeprefix("?"),
                keep_blank_values=True,
                errors="strict",
                max_num_fields=limits.max_clauses + len(ignore),
            )
        except ValueError as exc:
            raise InvalidQueryError(f"Malformed or oversized query string: {exc}.") from exc
    else:
        pairs = query
    budget = _Budget(limits)
    items: list[Filter] = []
    for pair in pairs:
        if not isinstance(pair, tuple) or len(pair) != 2:
            raise InvalidQueryError(f"Query parameters must be (key, value) pairs: {_show(pair)}.")
        key, value = pair
        if key in ignore:
            continue
        if not isinstance(value, str):
            raise InvalidQueryError(f"Query parameter {_show(key)} must be a string.")
        if key in _GROUPS:
            items.append(_parse_group(key, _load_json(key, value, limits), 0, budget))
            budget.raw -= 1
        else:
            budget.take()
            field, op = split_key(key)
            items.append(make_condition(field, op, value, limits))
    return _combine(And, items)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, int | float | Decimal | UUID):
        return str(value)
    raise InvalidQueryError(f"Cannot write a {type(value).__name__} into a query string.")


def _json_value(value: Any) -> Any:
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, tuple | list):
        return [_json_value(item) for item in value]
    return _text(value)


def to_mapping(node: Filter) -> dict[str, Any]:
    """Return the mapping form of a filter tree; `parse_filter` reads it back unchanged.

    Example:
        >>> to_mapping(parse_filter({"or": [{"name": "ada"}, {"rank__lt": 2}]}))
        {'or': [{'name': 'ada'}, {'rank__lt': 2}]}
    """
    if isinstance(node, Condition):
        key = node.key if node.field not in _GROUPS else f"{node.field}__{node.op}"
        return {key: _json_value(node.value)}
    if isinstance(node, Not):
        return {"not": to_mapping(node.item)}
    if isinstance(node, Or):
        return {"or": [to_mapping(item) for item in node.items]}
    merged: dict[str, Any] = {}
    for item in node.items:
        part = to_mapping(item)
        if merged.keys() & part.keys():
            return {"and": [to_mapping(item) for item in node.items]}
        merged.update(part)
    return merged


def _pair(node: Filter) -> tuple[str, str]:
    if isinstance(node, Condition):
        key = node.key if node.field not in _GROUPS else f"{node.field}__{node.op}"
        if node.op in LIST_OPERATORS:
            return key, _join_list(node.value)
        return key, _text(node.value)
    if isinstance(node, Not):
        return "not", json.dumps(to_mapping(node.item), separators=(",", ":"))
    if isinstance(node, Or):
        items = [to_mapping(item) for item in node.items]
        return "or", json.dumps(items, separators=(",", ":"))
    return "and", json.dumps([to_mapping(item) for item in node.items], separators=(",", ":"))


def to_query_string(node: Filter) -> str:
    """Return the query-string form of a filter; `parse_query_string` reads it back.

    A tree parsed from a query string comes back equal; one built in code with typed
    values comes back with those values as text, which compiles to the same SQL.

    Example:
        >>> to_query_string(parse_filter({"name__in": ["ada", "b,c"], "rank__ge": 3}))
        'name__in=ada%2Cb%5C%2Cc&rank__ge=3'
    """
    items = node.items if isinstance(node, And) else (node,)
    return urlencode([_pair(item) for item in items], quote_via=quote)
