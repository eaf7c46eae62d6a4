"""Pages, keyset predicates and opaque cursors, signed once a secret is configured.

A cursor is ``base64url(json payload)``, followed by ``"." + base64url(HMAC-SHA256(secret,
payload))`` when a cursor secret is configured. The payload carries the table, the sort
specification and the last row's sort values with type tags, so datetimes, decimals and
UUIDs round-trip exactly. A cursor whose table, sort order or value types do not match (or,
with a secret, whose signature does not) is refused with `InvalidQueryError`.

Without a secret, cursors are validated but not signed, so every worker and every restart
accepts every other's cursors. That is safe because a cursor only says where a page starts:
its values are bound parameters checked against the sort columns' types, and the query keeps
every filter and scope of the request, so a hand-made cursor shows nothing the same request
could not page to. A secret adds tamper evidence (clients cannot craft start positions).
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Generic, TypeVar
from uuid import UUID

from sqlalchemy import and_, or_
from sqlalchemy.sql.elements import ColumnElement

from underlay.exceptions import InvalidQueryError
from underlay.repository._query import SortKey

__all__ = [
    "CURSOR_SECRET_ENV",
    "CursorPage",
    "Page",
    "check_cursor_values",
    "decode_cursor",
    "encode_cursor",
    "keyset_predicate",
    "set_cursor_secret",
]

#: Environment variable holding the secret that signs cursors (shared by every worker).
CURSOR_SECRET_ENV = "UNDERLAY_CURSOR_SECRET"  # noqa: S105 - a variable name, not a secret

ItemT = TypeVar("ItemT")


@dataclass(frozen=True)
class Page(Generic[ItemT]):
    """One page of an offset-paginated result.

    Attributes:
        items: The rows of this page.
        total: How many rows match in all, or ``None`` when counting was skipped.
        number: The 1-based page number.
        size: The page size asked for (the last page may hold fewer items).

    Example:
        >>> page = Page(items=["a", "b"], total=5, number=1, size=2)
        >>> page.pages, page.has_next
        (3, True)
    """

    items: list[ItemT]
    total: int | None
    number: int
    size: int

    @property
    def pages(self) -> int | None:
        """The number of pages, or ``None`` when ``total`` is unknown."""
        if self.total is None:
            return None
        return max(1, -(-self.total // self.size))

    @property
    def has_next(self) -> bool:
        """Whether a later page may hold rows (a full page counts when ``total`` is unknown)."""
        if self.total is None:
            return len(self.items) == self.size
        return self.number * self.size < self.total


@dataclass(frozen=True)
class CursorPage(Generic[ItemT]):
    """One page of a keyset-paginated result.

    Attributes:
        items: The rows of this page.
        next_cursor: Pass it as ``after=`` to get the next page; ``None`` on the last page.
        has_more: Whether rows follow this page.

    Example:
        >>> CursorPage(items=[1, 2], next_cursor=None, has_more=False).has_more
        False
    """

    items: list[ItemT]
    next_cursor: str | None
    has_more: bool = field(default=False)


_configured_secret: bytes | None = None


def set_cursor_secret(secret: str | bytes | None) -> None:
    """Set the key that signs pagination cursors for every repository without its own.

    Without a secret cursors are unsigned (validated, not tamper-evident) and work in every
    process. With one, cursors are signed and must verify on every worker that may receive
    them, so give all workers the same secret: call this at start-up, set the
    ``UNDERLAY_CURSOR_SECRET`` environment variable, or set ``cursor_secret`` on a repository
    class. Unsigned cursors handed out before a secret was set are refused afterwards.

    Args:
        secret: At least 16 bytes (or characters) of secret material; ``None`` to unset.

    Raises:
        ValueError: The secret is shorter than 16 bytes.

    Example:
        >>> set_cursor_secret("a long and random secret value")
        >>> set_cursor_secret(None)
    """
    global _configured_secret  # noqa: PLW0603 - one process-wide setting, like logging's
    _configured_secret = None if secret is None else _as_key(secret)


def _as_key(secret: str | bytes) -> bytes:
    key = secret.encode() if isinstance(secret, str) else bytes(secret)
    if len(key) < 16:
        raise ValueError("a cursor secret needs at least 16 bytes")
    return key


def resolve_secret(own: str | bytes | None) -> bytes | None:
    """Return the signing key: the repository's, the configured one, the env var, or ``None``."""
    if own is not None:
        return _as_key(own)
    if _configured_secret is not None:
        return _configured_secret
    env = os.environ.get(CURSOR_SECRET_ENV)
    if env:
        return _as_key(env)
    return None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _encode_value(value: Any) -> Any:
    # bool before int: bool is an int subclass and must come back as a bool
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, enum.Enum):
        return {"enum": value.name}
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return {"float": repr(value)}
    if isinstance(value, datetime):
        return {"datetime": value.isoformat()}
    if isinstance(value, date):
        return {"date": value.isoformat()}
    if isinstance(value, time):
        return {"time": value.isoformat()}
    if isinstance(value, timedelta):
        return {"timedelta": [value.days, value.seconds, value.microseconds]}
    if isinstance(value, Decimal):
        return {"decimal": str(value)}
    if isinstance(value, UUID):
        return {"uuid": str(value)}
    if isinstance(value, bytes):
        return {"bytes": _b64(value)}
    raise InvalidQueryError(f"Cannot put a {type(value).__name__} sort value into a cursor.")


_DECODERS: dict[str, Any] = {
    "enum": str,
    "float": float,
    "datetime": datetime.fromisoformat,
    "date": date.fromisoformat,
    "time": time.fromisoformat,
    "timedelta": lambda parts: timedelta(days=parts[0], seconds=parts[1], microseconds=parts[2]),
    "decimal": Decimal,
    "uuid": UUID,
    "bytes": _unb64,
}


def _decode_value(value: Any) -> Any:
    if isinstance(value, dict):
        ((tag, raw),) = value.items()
        return _DECODERS[tag](raw)
    return value


def encode_cursor(
    secret: bytes | None,
    *,
    table: str,
    spec: Sequence[str],
    values: Sequence[Any],
    filters: str = "",
) -> str:
    """Mint a cursor for the row with sort ``values`` under ``spec`` (signed with a secret).

    ``filters`` identifies the caller's filter (a fingerprint); a cursor only verifies for
    the same one.
    """
    body: dict[str, Any] = {"t": table, "k": list(spec), "v": [_encode_value(v) for v in values]}
    if filters:
        body["f"] = filters
    payload = json.dumps(
        body,
        separators=(",", ":"),
        sort_keys=True,
    ).encode()
    if secret is None:
        return _b64(payload)
    signature = hmac.new(secret, payload, hashlib.sha256).digest()
    return f"{_b64(payload)}.{_b64(signature)}"


def decode_cursor(
    secret: bytes | None, cursor: str, *, table: str, spec: Sequence[str], filters: str = ""
) -> list[Any]:
    """Check ``cursor`` and return its sort values.

    Without a secret any signature part is ignored (a cursor signed before the secret was
    removed still works); with one, the signature must match.

    Raises:
        InvalidQueryError: The cursor is malformed, not signed with ``secret`` when one is
            set, or minted for another table, sort order or filter.
    """
    invalid = InvalidQueryError(
        "Invalid pagination cursor: pass back a next_cursor exactly as it was returned, "
        "with the same order_by and filters."
    )
    if not isinstance(cursor, str) or len(cursor) > 8192 or cursor.count(".") > 1:
        raise invalid
    body, dot, signature = cursor.partition(".")
    if secret is not None and not dot:
        raise invalid
    try:
        payload, given = _unb64(body), _unb64(signature)
    except (binascii.Error, ValueError) as exc:
        raise invalid from exc
    if secret is not None:
        expected = hmac.new(secret, payload, hashlib.sha256).digest()
        if not hmac.compare_digest(given, expected):
            raise invalid
    try:
        data = json.loads(payload)
        matches = (
            data["t"] == table
            and data["k"] == list(spec)
            and data.get("f", "") == filters
            and len(data["v"]) == len(spec)
        )
        values = [_decode_value(v) for v in data["v"]] if matches else None
    except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
        raise invalid from exc
    if values is None:
        raise invalid
    return values


def _expected_type(expression: ColumnElement[Any]) -> type | None:
    # a TypeDecorator may report ``object``; the type it wraps knows better
    for column_type in (expression.type, getattr(expression.type, "impl_instance", None)):
        try:
            python_type: type = column_type.python_type  # type: ignore[union-attr]  # None raises below
        except (NotImplementedError, AttributeError):
            continue
        if python_type is not object:
            return python_type
    return None


def check_cursor_values(keys: Sequence[SortKey], values: Sequence[Any]) -> None:
    """Refuse cursor values that do not fit their sort column's type (before any SQL).

    Raises:
        InvalidQueryError: A value is missing, a container, or of another type.
    """
    for key, value in zip(keys, values, strict=True):
        expected = _expected_type(key.expression)
        fits: bool
        if value is None or isinstance(value, list | dict):
            fits = False
        elif expected is None:
            fits = True
        elif issubclass(expected, enum.Enum):
            fits = isinstance(value, str)  # enums travel by name
        elif expected is float or expected is Decimal:
            fits = isinstance(value, int | float | Decimal) and not isinstance(value, bool)
        elif expected is int:
            fits = isinstance(value, int) and not isinstance(value, bool)
        elif expected is datetime:
            fits = isinstance(value, datetime)
        else:
            fits = isinstance(value, expected)
        if not fits:
            raise InvalidQueryError(
                "Invalid pagination cursor: pass back a next_cursor exactly as it was "
                "returned, with the same order_by."
            )


def keyset_predicate(keys: Sequence[SortKey], values: Sequence[Any]) -> ColumnElement[bool]:
    """Return the WHERE criterion selecting the rows after ``values`` in the order of ``keys``.

    Expanded into ``OR``/``AND`` terms (no row-value comparison), so every key may have its
    own direction. A leading range term on the first key lets an index bound the scan.
    """
    alternatives = []
    for index, key in enumerate(keys):
        terms = [k.expression == v for k, v in zip(keys[:index], values[:index], strict=True)]
        value = values[index]
        terms.append(key.expression < value if key.descending else key.expression > value)
        alternatives.append(and_(*terms))
    first, first_value = keys[0], values[0]
    bound = first.expression <= first_value if first.descending else first.expression >= first_value
    return and_(bound, or_(*alternatives))
