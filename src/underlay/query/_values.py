"""Filter values coerced to the Python type of their column, or refused by name."""

from __future__ import annotations

import enum
import math
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any
from uuid import UUID

from sqlalchemy import BigInteger, Boolean, Column, SmallInteger
from sqlalchemy import Enum as SAEnum
from sqlalchemy.types import TypeDecorator, TypeEngine

from underlay.exceptions import InvalidQueryError

__all__ = ["coerce_value", "column_kind"]

_INT_BITS = ((SmallInteger, 16), (BigInteger, 64))
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})
_MAX_EXPONENT = 1000


def _no_parse(_text: str) -> Any:
    raise ValueError("not parsed from text")


def _impl(sa_type: TypeEngine[Any]) -> TypeEngine[Any]:
    while isinstance(sa_type, TypeDecorator):
        sa_type = sa_type.impl_instance
    return sa_type


def column_kind(column: Column[Any]) -> type[Any] | None:
    """Return the Python type a column's values have, or ``None`` when it has none."""
    sa_type = column.type
    impl = _impl(sa_type)
    if isinstance(impl, SAEnum) and impl.enum_class is None:
        return str
    if isinstance(impl, Boolean):
        return bool
    found: Any = None
    for candidate in (sa_type, impl):
        try:
            found = candidate.python_type
        except NotImplementedError:
            continue
        if found is not object:
            break
    return found if isinstance(found, type) and found is not object else None


def _refuse(field: str, value: Any, what: str) -> InvalidQueryError:
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    return InvalidQueryError(f"Filter value {shown} for {field!r} is not {what}.")


def _integer(column: Column[Any], value: Any, field: str) -> int:
    if isinstance(value, bool):
        raise _refuse(field, value, "an integer")
    if isinstance(value, str):
        text = value.strip()
        digits = text.removeprefix("-").removeprefix("+")
        if not digits.isascii() or not digits.isdigit() or len(digits) > 20:
            raise _refuse(field, value, "an integer")
        number = int(text)
    elif isinstance(value, float | Decimal):
        if not math.isfinite(value) or value != int(value):
            raise _refuse(field, value, "an integer")
        number = int(value)
    elif isinstance(value, int):
        number = value
    else:
        raise _refuse(field, value, "an integer")
    impl = _impl(column.type)
    bits = next((b for kind, b in _INT_BITS if isinstance(impl, kind)), 32)
    if not -(2 ** (bits - 1)) <= number < 2 ** (bits - 1):
        raise _refuse(field, value, f"within the column's {bits}-bit integer range")
    return number


def _decimal(value: Any, field: str) -> Decimal:
    if isinstance(value, bool):
        raise _refuse(field, value, "a number")
    try:
        number = Decimal(repr(value) if isinstance(value, float) else value)
    except (InvalidOperation, TypeError, ValueError) as exc:
        raise _refuse(field, value, "a number") from exc
    if not number.is_finite() or abs(number.adjusted()) > _MAX_EXPONENT:
        raise _refuse(field, value, "a finite number")
    return number


def _bounded_decimal(impl: Any, value: Any, field: str) -> Decimal:
    number = _decimal(value.strip() if isinstance(value, str) else value, field)
    precision = getattr(impl, "precision", None)
    if isinstance(precision, int) and number:
        # NUMERIC(p, s) holds p - s digits before the point; more is an error in SQL
        whole = precision - (getattr(impl, "scale", None) or 0)
        _sign, digits, exponent = number.as_tuple()
        if isinstance(exponent, int) and len(digits) + exponent > whole:
            raise _refuse(field, value, f"a number with at most {whole} whole digits")
    return number


def _text(impl: Any, value: str, field: str) -> str:
    length = getattr(impl, "length", None)
    if isinstance(length, int) and len(value) > length:
        raise _refuse(field, value, f"text of at most {length} characters")
    if "\x00" in value:
        raise _refuse(field, value, "text without NUL characters")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _refuse(field, value, "text without lone surrogates") from None
    return value


def _float(value: Any, field: str) -> float:
    number = float(_decimal(value.strip() if isinstance(value, str) else value, field))
    if not math.isfinite(number):
        raise _refuse(field, value, "a finite number")
    return number


def _datetime(column: Column[Any], value: Any, field: str) -> datetime:
    if isinstance(value, str):
        text = value.strip()
        try:
            value = (
                datetime.fromisoformat(text)
                if len(text) > 10
                else datetime.combine(date.fromisoformat(text), time(), UTC)
            )
        except ValueError as exc:
            raise _refuse(field, value, "an ISO 8601 date or datetime") from exc
    elif isinstance(value, date) and not isinstance(value, datetime):
        value = datetime.combine(value, time(), UTC)
    if not isinstance(value, datetime):
        raise _refuse(field, value, "a datetime")
    aware = bool(getattr(_impl(column.type), "timezone", False))
    if aware and value.utcoffset() is None:
        raise InvalidQueryError(
            f"Filter value {value.isoformat()!r} for {field!r} has no time zone; add one "
            "(e.g. 'Z' or '+02:00')."
        )
    if not aware and value.utcoffset() is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def _enum(column: Column[Any], kind: type[enum.Enum], value: Any, field: str) -> enum.Enum:
    if isinstance(value, kind):
        return value
    if isinstance(value, str):
        if value in kind.__members__:
            return kind[value]
        for member in kind:
            if member.value == value:
                return member
    names = ", ".join(kind.__members__)
    raise _refuse(field, value, f"one of {names}")


def _bool(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise _refuse(field, value, "true or false")


def _parsed(kind: type[Any], parse: Any, what: str) -> Any:
    def coerce(value: Any, field: str) -> Any:
        if isinstance(value, kind) and not (kind is date and isinstance(value, datetime)):
            return value
        if not isinstance(value, str):
            raise _refuse(field, value, what)
        try:
            return parse(value.strip())
        except ValueError as exc:
            raise _refuse(field, value, what) from exc

    return coerce


def _timedelta(value: Any, field: str) -> timedelta:
    if isinstance(value, timedelta):
        return value
    return timedelta(seconds=_float(value, field))


_SIMPLE: dict[type[Any], Any] = {
    bool: _bool,
    UUID: _parsed(UUID, UUID, "a UUID"),
    date: _parsed(date, date.fromisoformat, "an ISO 8601 date"),
    time: _parsed(time, time.fromisoformat, "an ISO 8601 time"),
    timedelta: _timedelta,
    bytes: _parsed(bytes, _no_parse, "bytes"),
}


def coerce_value(column: Column[Any], value: Any, *, field: str) -> Any:
    """Return ``value`` as the Python type of ``column``'s values.

    Strings from query strings are parsed (``"42"``, ``"2026-01-01T10:00:00Z"``, UUIDs,
    enum names); Python values of the right type pass through. A date-only string for a
    datetime column means midnight UTC.

    Args:
        column: The column compared against.
        value: The caller's value.
        field: The field name, for the error message.

    Raises:
        InvalidQueryError: The value does not fit the column; the message names ``field``.
    """
    kind = column_kind(column)
    impl = _impl(column.type)
    if isinstance(impl, SAEnum) and impl.enum_class is None:
        if isinstance(value, str) and value in impl.enums:
            return value
        raise _refuse(field, value, f"one of {', '.join(impl.enums)}")
    if kind is None:
        raise InvalidQueryError(f"Field {field!r} cannot be compared with a value.")
    if kind is str:
        if not isinstance(value, str):
            raise _refuse(field, value, "text")
        return _text(impl, value, field)
    if issubclass(kind, enum.Enum):
        return _enum(column, kind, value, field)
    if kind is int:
        return _integer(column, value, field)
    if kind is float:
        return _float(value, field)
    if kind is Decimal:
        return _bounded_decimal(impl, value, field)
    if kind is datetime:
        return _datetime(column, value, field)
    coerce = _SIMPLE.get(kind)
    if coerce is None:
        raise _refuse(field, value, f"a {kind.__name__}")
    return coerce(value, field)
