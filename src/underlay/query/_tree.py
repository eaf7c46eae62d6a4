"""The filter tree: conditions and the AND / OR / NOT groups that combine them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

__all__ = [
    "LIST_OPERATORS",
    "OPERATORS",
    "TEXT_OPERATORS",
    "And",
    "Condition",
    "Filter",
    "Not",
    "Or",
]

#: Every operator of the query language, in the order the filtering guide lists them.
OPERATORS: tuple[str, ...] = (
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "in",
    "not_in",
    "between",
    "is_null",
    "like",
    "ilike",
    "startswith",
    "istartswith",
    "contains",
    "icontains",
    "endswith",
    "iendswith",
)

#: Operators whose value is a list (``between``: exactly two items).
LIST_OPERATORS: frozenset[str] = frozenset({"in", "not_in", "between"})

#: Operators that match text; their values are taken literally (no wildcards).
TEXT_OPERATORS: frozenset[str] = frozenset(OPERATORS[10:])


@dataclass(frozen=True, slots=True)
class Condition:
    """One test of one field: ``field op value``.

    Attributes:
        field: A declared field: a column attribute (``"email"``) or a relationship path
            (``"author.email"``).
        op: One of `OPERATORS`.
        value: The value as given (a string from a query string, or a Python value); it is
            coerced to the column's type when the filter is compiled. A tuple for ``in``,
            ``not_in`` and ``between``; a bool for ``is_null``.

    Example:
        >>> Condition("email", "icontains", "ada").key
        'email__icontains'
    """

    field: str
    op: str
    value: Any

    @property
    def key(self) -> str:
        """The mapping key (``field`` for ``eq``, else ``field__op``)."""
        return self.field if self.op == "eq" else f"{self.field}__{self.op}"


@dataclass(frozen=True, slots=True)
class And:
    """Every item must match. An empty ``And`` matches every row.

    Attributes:
        items: The filters combined.
    """

    items: tuple[Filter, ...] = ()


@dataclass(frozen=True, slots=True)
class Or:
    """At least one item must match.

    Attributes:
        items: The filters combined (two or more once normalised).
    """

    items: tuple[Filter, ...] = ()


@dataclass(frozen=True, slots=True)
class Not:
    """The item must not match.

    Attributes:
        item: The filter negated.
    """

    item: Filter


#: A node of a filter tree.
Filter: TypeAlias = Condition | And | Or | Not


def conditions(node: Filter) -> list[Condition]:
    """Return every condition of the tree, depth first."""
    if isinstance(node, Condition):
        return [node]
    if isinstance(node, Not):
        return conditions(node.item)
    return [found for item in node.items for found in conditions(item)]
