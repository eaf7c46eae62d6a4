"""Namespace names shared by the commit hooks and the cached repository.

* ``t:<table>``: every list (query) entry that reads the table; bumped by any write to it.
* ``r:<table>``: every single-row entry of the table; bumped by writes whose rows are not
  known (bulk UPDATE / DELETE / INSERT statements, ``record_write(..., ids=None)``).
* ``r:<base table>:<primary key>``: the single-row entries of one row.
"""

from __future__ import annotations

import hashlib
import re
import uuid
import weakref
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Table
from sqlalchemy.orm import Mapper
from sqlalchemy.sql.expression import FromClause

from underlay.cache._codec import schema_fingerprint
from underlay.exceptions import InvalidQueryError
from underlay.repository._coerce import canonical_identity

__all__ = [
    "format_id",
    "lists_namespace",
    "row_namespace",
    "rows_namespace",
    "schema_identity",
]


def _name(table: FromClause) -> str:
    return table.fullname if isinstance(table, Table) else str(table.description)


def lists_namespace(table: FromClause) -> str:
    """Return the namespace of the list entries that read ``table``."""
    return f"t:{_name(table)}"


def rows_namespace(table: FromClause) -> str:
    """Return the namespace of every single-row entry of ``table``."""
    return f"r:{_name(table)}"


def _canonical_text(value: Any) -> str:
    if isinstance(value, str):
        # escaped, so ("a,b",) and ("a", "b") never meet
        return value.replace("\\", "\\\\").replace(",", "\\,")
    if isinstance(value, Decimal):
        # one text per number: 1.0 and 1.00 are the same key value
        return "0" if value.is_zero() else str(value.normalize())
    if isinstance(value, datetime) and value.utcoffset() is not None:
        return value.astimezone(UTC).isoformat()
    return str(value)


_PLAIN_TEXT = frozenset({int, uuid.UUID})


def format_id(ident: Any) -> str:
    """Return a primary key (a value or a tuple of values) as text for a key or namespace.

    Give it the canonical key (see `row_namespace`): the text of equal values of one type
    is the same (``Decimal("1.0")`` and ``Decimal("1.00")``, one instant in two zones).
    """
    if type(ident) in _PLAIN_TEXT:  # the usual keys: their text is canonical already
        return str(ident)
    values: Iterable[Any] = ident if isinstance(ident, tuple | list) else (ident,)
    return ",".join(_canonical_text(value) for value in values)


def row_namespace(mapper: Mapper[Any], ident: Any) -> str:
    """Return the namespace of the single-row entries of one row of ``mapper``.

    ``ident`` is coerced to the key columns' types first, so every spelling of one key
    (``5``, ``"5"``, ``(5,)``; a UUID in upper case) names the same namespace. A value the
    key column cannot hold names a namespace of its own (no row can have it).
    """
    try:
        values: Any = canonical_identity(mapper, ident)
    except InvalidQueryError:
        values = ident
    return f"r:{_name(mapper.base_mapper.local_table)}:{format_id(values)}"


# -- schema identity ------------------------------------------------------------------------

_REF_ID = re.compile(r":\d+$")
_IDENTITIES: weakref.WeakKeyDictionary[type[BaseModel], str] = weakref.WeakKeyDictionary()


def _code_digest(code: Any, seen: int = 0) -> str:
    parts = [code.co_code.hex(), repr(code.co_names)]
    for const in code.co_consts:
        if hasattr(const, "co_code") and seen < 8:
            parts.append(_code_digest(const, seen + 1))
        else:
            parts.append(repr(const))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _stable(value: Any, depth: int = 0) -> Any:
    """Return ``value`` (a pydantic core schema) with process-specific parts made stable."""
    if depth > 64:
        return "..."
    if isinstance(value, dict):
        return {
            str(key): _REF_ID.sub("", item)
            if key in ("ref", "schema_ref") and isinstance(item, str)
            else _stable(item, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [_stable(item, depth + 1) for item in value]
    if isinstance(value, type):
        return f"{value.__module__}.{value.__qualname__}"
    function = getattr(value, "__func__", value)
    code = getattr(function, "__code__", None)
    if code is not None:
        name = f"{getattr(function, '__module__', '')}.{getattr(function, '__qualname__', '')}"
        return f"{name}#{_code_digest(code)}"
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if callable(value):
        return f"{type(value).__module__}.{type(value).__qualname__}"
    own_repr: Any = type(value).__repr__
    # the default repr holds the object's address, different in every process
    return repr(value) if own_repr is not object.__repr__ else type(value).__name__


def schema_identity(schema: type[BaseModel]) -> str:
    """Return a short hash identifying ``schema`` for cache keys, computed once per class.

    More than the JSON schema (`schema_fingerprint`): the qualified name, and every
    validator and serializer (by name and code), also of nested models. Two schemas with
    the same fields, one of which masks a value, never share entries.
    """
    found = _IDENTITIES.get(schema)
    if found is None:
        core = _stable(schema.__pydantic_core_schema__)
        document = "\x1f".join(
            [
                f"{schema.__module__}.{schema.__qualname__}",
                schema_fingerprint(schema),
                repr(core),
            ]
        )
        found = hashlib.sha256(document.encode()).hexdigest()[:16]
        _IDENTITIES[schema] = found
    return found
