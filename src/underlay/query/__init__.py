"""The query language callers may send: operator filters, groups and query strings.

A filter is a tree of `Condition` leaves (``field op value``) under `And`, `Or` and `Not`
groups. Build it in code, from the mapping form (``{"rank__ge": 3, "or": [...]}``) with
`parse_filter`, or from a URL query string with `parse_query_string`; `to_mapping` and
`to_query_string` write it back. Repositories take any of these as ``filter_by`` and check
it against their declared fields before any SQL exists.
"""

from underlay.query._compile import (
    FieldRef,
    FilterInput,
    ResolvedFilter,
    allowed_operators,
    check_filterable,
    resolve_filter,
)
from underlay.query._parse import (
    DEFAULT_LIMITS,
    FilterLimits,
    as_filter,
    parse_filter,
    parse_query_string,
    split_list,
    to_mapping,
    to_query_string,
)
from underlay.query._search import SearchMode, SearchSpec, search_terms
from underlay.query._tree import OPERATORS, And, Condition, Filter, Not, Or
from underlay.query._values import coerce_value

__all__ = [
    "DEFAULT_LIMITS",
    "OPERATORS",
    "And",
    "Condition",
    "FieldRef",
    "Filter",
    "FilterInput",
    "FilterLimits",
    "Not",
    "Or",
    "ResolvedFilter",
    "SearchMode",
    "SearchSpec",
    "allowed_operators",
    "as_filter",
    "check_filterable",
    "coerce_value",
    "parse_filter",
    "parse_query_string",
    "resolve_filter",
    "search_terms",
    "split_list",
    "to_mapping",
    "to_query_string",
]
