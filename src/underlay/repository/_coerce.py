"""Check caller values against column types before any SQL is built.

Every value a caller hands a repository (an id, a ``filter_by`` value, a bulk row's value,
a page size) passes through here. A value is either returned in the column's canonical
Python form (``"01"`` becomes ``1`` for an integer column, an upper-case UUID string becomes
a ``uuid.UUID``) or refused with `InvalidQueryError` naming the field, so that no statement
is ever sent with it.

The public surface is small, for use by other parts of underlay (operator filters, caches):

* ``coerce_value(column, value, *, field)``: one value for one column.
* ``canonical_identity(mapper, ident)``: a primary key, as a tuple of coerced values.
* ``check_count(value, *, name, minimum=0, maximum=MAX_BIGINT)``: a size, limit or offset.
* ``column_coercer(column)``: the cached per-column function behind ``coerce_value``; it
  raises `ValueRefused` (no field name, cheap) for bulk paths that name the row themselves.

The rules follow the column type, with PostgreSQL's ranges on every backend so the same
call behaves the same on SQLite:

* integers: ``int`` (never ``bool``) or a string of ASCII digits, within the type's range
  (SMALLINT 16, INTEGER 32, BIGINT 64 bits);
* floats: finite ``int`` / ``float`` / ``Decimal`` or a numeric string (NaN and infinities
  are refused: SQLite would store them as NULL);
* decimals: as floats, returned as ``Decimal``, with no more integer digits than
  ``precision - scale``;
* strings: ``str`` only, no NUL character, no lone surrogate, at most ``length`` characters;
* enums: a member, its name or its value;
* booleans: ``bool`` or one of the strings ``"true"``, ``"false"``, ``"1"``, ``"0"``;
* dates, datetimes, times: instances or ISO-8601 strings; a datetime for a time-zone aware
  column must carry its zone, one for a naive column must not;
* UUIDs: ``uuid.UUID`` or any string ``uuid.UUID`` parses, returned canonical;
* binary: ``bytes``, ``bytearray`` or ``memoryview``, within ``length``.

Values of other types (JSON, arrays, custom type decorators that convert values
themselves) are passed through unchanged: their own bind processing is the check.
"""

from __future__ import annotations

import math
import operator
import re
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import Column, types
from sqlalchemy.orm import Mapper

from underlay.exceptions import InvalidQueryError
from underlay.models._types import UTCDateTime

__all__ = [
    "MAX_BIGINT",
    "ValueRefused",
    "all_canonical",
    "canonical_identity",
    "check_count",
    "coerce_value",
    "column_coercer",
    "passthrough",
]

#: The largest value a BIGINT (and a LIMIT or OFFSET) holds.
MAX_BIGINT = 2**63 - 1

_INT_TEXT = re.compile(r"[+-]?[0-9]{1,20}")
_NUMBER_TEXT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?")
_TRUE, _FALSE = frozenset({"true", "1"}), frozenset({"false", "0"})

Coercer = Callable[[Any], Any]


class ValueRefused(Exception):  # noqa: N818 - internal signal, never leaves underlay
    """A value does not fit a column; ``reason`` says why (without the field name)."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def show(value: object) -> str:
    """Return a short ``repr`` of a caller value for an error message."""
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a hostile __repr__ must not hide the real error
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 60 else text[:57] + "..."


def _refuse(expected: str, value: Any) -> ValueRefused:
    return ValueRefused(f"expected {expected}, got {show(value)}")


# -- per-type coercers ----------------------------------------------------------------------


def _integer(bits: int) -> Coercer:
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1

    def coerce(value: Any) -> Any:
        if type(value) is int:
            result = value
        elif isinstance(value, bool):
            raise _refuse("an integer (not a boolean)", value)
        elif isinstance(value, str):
            if not _INT_TEXT.fullmatch(value):
                raise _refuse("an integer", value)
            result = int(value)
        elif isinstance(value, float | Decimal):
            raise _refuse("an integer", value)
        else:
            try:
                result = operator.index(value)
            except TypeError:
                raise _refuse("an integer", value) from None
        if not low <= result <= high:
            raise ValueRefused(f"{show(value)} is outside the column's range {low}..{high}")
        return result

    return coerce


def _finite_number(value: Any) -> Decimal | float | int:
    if isinstance(value, bool):
        raise _refuse("a number (not a boolean)", value)
    if isinstance(value, int | float | Decimal):
        number: Decimal | float | int = value
    elif isinstance(value, str):
        if len(value) > 200 or not _NUMBER_TEXT.fullmatch(value):
            raise _refuse("a number", value)
        number = Decimal(value)
    else:
        raise _refuse("a number", value)
    if isinstance(number, float | Decimal) and not math.isfinite(number):
        raise _refuse("a finite number", value)
    return number


def _float(value: Any) -> Any:
    number = _finite_number(value)
    if type(number) is float:
        return number
    try:
        result = float(number)
    except OverflowError:
        raise _refuse("a number within the float range", value) from None
    if not math.isfinite(result):
        raise _refuse("a number within the float range", value)
    return result


# PostgreSQL's limits for an unconstrained NUMERIC
_NUMERIC_WHOLE_DIGITS, _NUMERIC_FRACTION_DIGITS = 131072, 16383


def _decimal(precision: int | None, scale: int | None) -> Coercer:
    whole_digits = _NUMERIC_WHOLE_DIGITS if precision is None else precision - (scale or 0)

    def coerce(value: Any) -> Any:
        number = _finite_number(value)
        try:
            result = number if type(number) is Decimal else Decimal(repr(number))
        except InvalidOperation:
            raise _refuse("a number", value) from None
        if result:
            _sign, digits, exponent = result.as_tuple()
            assert isinstance(exponent, int)  # noqa: S101 - finite, checked above
            if len(digits) + exponent > whole_digits:
                raise ValueRefused(
                    f"{show(value)} has more than {whole_digits} digit(s) before the point"
                )
            if -exponent > _NUMERIC_FRACTION_DIGITS:
                raise ValueRefused(f"{show(value)} has too many digits after the point")
        return result

    return coerce


def _string(length: int | None) -> Coercer:
    def coerce(value: Any) -> Any:
        if type(value) is not str:
            if not isinstance(value, str):
                raise _refuse("a string", value)
            value = str.__str__(value)  # an exact str (a StrEnum member gives its value)
        if length is not None and len(value) > length:
            raise ValueRefused(f"{show(value)} is longer than {length} characters")
        if "\x00" in value:
            raise ValueRefused(f"{show(value)} contains a NUL character")
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueRefused(f"{show(value)} contains a lone surrogate") from None
        return value

    return coerce


def _enum(column_type: types.Enum) -> Coercer:
    enum_class = column_type.enum_class
    names = frozenset(column_type.enums)

    def coerce(value: Any) -> Any:
        if enum_class is None:
            if isinstance(value, str) and value in names:
                return str.__str__(value)
            raise _refuse(f"one of {sorted(names)}", value)
        if isinstance(value, enum_class):
            return value
        if isinstance(value, str) and value in enum_class.__members__:
            return enum_class.__members__[value]
        try:
            return enum_class(value)
        except (ValueError, TypeError):
            raise _refuse(f"one of {sorted(names)}", value) from None

    return coerce


def _boolean(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise _refuse("a boolean", value)


def _datetime(aware: bool) -> Coercer:
    def coerce(value: Any) -> Any:
        if isinstance(value, str) and len(value) <= 64:
            try:
                value = datetime.fromisoformat(value)
            except ValueError:
                raise _refuse("an ISO-8601 datetime", value) from None
        if not isinstance(value, datetime):
            raise _refuse("a datetime", value)
        has_zone = value.tzinfo is not None and value.utcoffset() is not None
        if aware and not has_zone:
            raise ValueRefused(f"{show(value)} has no time zone; pass an aware datetime")
        if not aware and has_zone:
            raise ValueRefused(f"{show(value)} has a time zone; the column stores naive values")
        return value

    return coerce


def _date(value: Any) -> Any:
    if isinstance(value, str) and len(value) <= 32:
        try:
            value = date.fromisoformat(value)
        except ValueError:
            raise _refuse("an ISO-8601 date", value) from None
    if not isinstance(value, date) or isinstance(value, datetime):
        raise _refuse("a date", value)
    return value


def _time(value: Any) -> Any:
    if isinstance(value, str) and len(value) <= 32:
        try:
            value = time.fromisoformat(value)
        except ValueError:
            raise _refuse("an ISO-8601 time", value) from None
    if not isinstance(value, time):
        raise _refuse("a time", value)
    return value


def _interval(value: Any) -> Any:
    if not isinstance(value, timedelta):
        raise _refuse("a timedelta", value)
    return value


def _uuid(as_uuid: bool) -> Coercer:
    def coerce(value: Any) -> Any:
        if isinstance(value, uuid.UUID):
            result = value
        elif isinstance(value, str) and len(value) <= 64:
            try:
                result = uuid.UUID(value)
            except ValueError:
                raise _refuse("a UUID", value) from None
        else:
            raise _refuse("a UUID", value)
        return result if as_uuid else str(result)

    return coerce


def _binary(length: int | None) -> Coercer:
    def coerce(value: Any) -> Any:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise _refuse("bytes", value)
        result = bytes(value)
        if length is not None and len(result) > length:
            raise ValueRefused(f"{len(result)} bytes is longer than {length}")
        return result

    return coerce


def passthrough(value: Any) -> Any:
    """Return ``value`` unchanged: the coercer of types underlay does not check."""
    return value


def _integer_bits(column_type: types.Integer) -> int:
    if isinstance(column_type, types.SmallInteger):
        return 16
    if isinstance(column_type, types.BigInteger):
        return 64
    return 32


def _for_type(column_type: types.TypeEngine[Any]) -> Coercer:
    if isinstance(column_type, UTCDateTime):
        return _datetime(aware=True)
    if isinstance(column_type, types.Interval):
        return _interval
    if isinstance(column_type, types.TypeDecorator):
        decorator = type(column_type)
        if (
            decorator.process_bind_param is not types.TypeDecorator.process_bind_param
            or decorator.bind_processor is not types.TypeDecorator.bind_processor
        ):
            return passthrough  # the decorator converts values itself
        return _for_type(column_type.impl_instance)
    if isinstance(column_type, types.Boolean):
        return _boolean
    if isinstance(column_type, types.Enum):
        return _enum(column_type)
    if isinstance(column_type, types.String):
        return _string(column_type.length)
    if isinstance(column_type, types.Integer):
        return _integer(_integer_bits(column_type))
    # Float is not a Numeric subclass on every SQLAlchemy version
    if isinstance(column_type, types.Float):
        return _decimal(None, None) if column_type.asdecimal else _float
    if isinstance(column_type, types.Numeric):
        if not column_type.asdecimal:
            return _float
        return _decimal(column_type.precision, column_type.scale)
    return _for_other_type(column_type)


def _for_other_type(column_type: types.TypeEngine[Any]) -> Coercer:
    if isinstance(column_type, types.DateTime):
        return _datetime(aware=bool(column_type.timezone))
    if isinstance(column_type, types.Date):
        return _date
    if isinstance(column_type, types.Time):
        return _time
    if isinstance(column_type, types.Uuid):
        return _uuid(bool(column_type.as_uuid))
    if isinstance(column_type, types._Binary):  # LargeBinary and BINARY alike
        return _binary(column_type.length)
    return passthrough


def _all_canonical(column_type: types.TypeEngine[Any]) -> Callable[[Sequence[Any]], bool] | None:
    """Return a C-speed check that a column of values needs no per-value work, if any."""
    if isinstance(column_type, types.Boolean | types.Enum):
        return None
    if isinstance(column_type, types.Integer):
        bits = _integer_bits(column_type)
        low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1

        def integers(values: Sequence[Any]) -> bool:
            return set(map(type, values)) == {int} and low <= min(values) and max(values) <= high

        return integers
    if isinstance(column_type, types.String):
        length = column_type.length

        def strings(values: Sequence[Any]) -> bool:
            if set(map(type, values)) != {str}:
                return False
            if length is not None and max(map(len, values)) > length:
                return False
            text = "".join(values)
            return "\x00" not in text and (text.isascii() or _encodes(text))

        return strings
    if isinstance(column_type, types.Float) and not column_type.asdecimal:

        def floats(values: Sequence[Any]) -> bool:
            # NaN and infinities make the sum non-finite (so may an overflow: then check each)
            return set(map(type, values)) == {float} and math.isfinite(math.fsum(values))

        return floats
    return None


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_CHECKS: weakref.WeakKeyDictionary[Column[Any], Callable[[Sequence[Any]], bool] | None] = (
    weakref.WeakKeyDictionary()
)


def all_canonical(column: Column[Any], values: Sequence[Any]) -> bool:
    """Return whether every value (no ``None`` among them) is already canonical for ``column``.

    A fast, all-or-nothing check for bulk writes: ``False`` means "check each value", not
    that one is invalid.
    """
    if column not in _CHECKS:
        _CHECKS[column] = _all_canonical(column.type)
    check = _CHECKS[column]
    return check is not None and bool(values) and check(values)


_COERCERS: weakref.WeakKeyDictionary[Column[Any], Coercer] = weakref.WeakKeyDictionary()


def column_coercer(column: Column[Any]) -> Coercer:
    """Return the function that coerces values for ``column`` (cached per column).

    The function returns the canonical value or raises `ValueRefused`; ``None`` is not
    handled (callers decide what ``None`` means).
    """
    found = _COERCERS.get(column)
    if found is None:
        found = _for_type(column.type)
        _COERCERS[column] = found
    return found


def coerce_value(column: Column[Any], value: Any, *, field: str) -> Any:
    """Return ``value`` in ``column``'s canonical Python form, or refuse it.

    ``None`` is returned as it is (it means SQL NULL; callers that cannot accept it refuse
    it themselves).

    Args:
        column: The table column the value is compared with or written to.
        value: The caller's value.
        field: The name to show in the error, for example ``"Author.rank"``.

    Returns:
        The coerced value.

    Raises:
        InvalidQueryError: The value does not fit the column's type or bounds.

    Example:
        >>> from sqlalchemy import Column, Integer
        >>> coerce_value(Column("rank", Integer), "07", field="rank")
        7
    """
    if value is None:
        return None
    try:
        return column_coercer(column)(value)
    except ValueRefused as refused:
        raise InvalidQueryError(f"Invalid value for {field}: {refused.reason}.") from None


def canonical_identity(mapper: Mapper[Any], ident: Any) -> tuple[Any, ...]:
    """Return a primary key as a tuple of coerced values, one per key column.

    A single-column key is given as its value (or a one-element tuple); a composite key as a
    tuple or list in the order of the key columns, or a mapping of attribute names.

    Args:
        mapper: The mapper of the model.
        ident: The caller's primary key.

    Returns:
        The canonical key, as SQLAlchemy's identity keys hold it.

    Raises:
        InvalidQueryError: Wrong arity, ``None`` in the key, or a value that does not fit
            its column.
    """
    plan = _IDENTITY_PLANS.get(mapper)
    if plan is None:
        plan = _IDENTITY_PLANS[mapper] = _identity_plan(mapper)
    name, keys, parts = plan
    if isinstance(ident, Mapping):
        if set(ident) != set(keys):
            raise InvalidQueryError(f"{name} primary key needs exactly the keys {list(keys)}.")
        values: tuple[Any, ...] = tuple(ident[key] for key in keys)
    elif isinstance(ident, tuple | list):
        values = tuple(ident)
    else:
        values = (ident,)
    if len(values) != len(parts):
        raise InvalidQueryError(
            f"{name} has a primary key of {len(parts)} column(s); got {show(ident)}."
        )
    result = []
    for (field, coerce), value in zip(parts, values, strict=True):
        if value is None:
            raise InvalidQueryError(f"Invalid value for {field}: a primary key is never None.")
        try:
            result.append(coerce(value))
        except ValueRefused as refused:
            raise InvalidQueryError(f"Invalid value for {field}: {refused.reason}.") from None
    return tuple(result)


# Per mapper: the model name, the key attribute names, and (field, coercer) per key column;
# built on the first lookup, so a get does no attribute lookups or string formatting.
_IDENTITY_PLANS: weakref.WeakKeyDictionary[
    Mapper[Any], tuple[str, tuple[str, ...], tuple[tuple[str, Coercer], ...]]
] = weakref.WeakKeyDictionary()


def _identity_plan(
    mapper: Mapper[Any],
) -> tuple[str, tuple[str, ...], tuple[tuple[str, Coercer], ...]]:
    name = mapper.class_.__name__
    keys = tuple(mapper.get_property_by_column(column).key for column in mapper.primary_key)
    parts = tuple(
        (f"{name}.{key}", column_coercer(column))  # type: ignore[arg-type]  # mapped key columns are Columns
        for key, column in zip(keys, mapper.primary_key, strict=True)
    )
    return name, keys, parts


def check_count(
    value: Any, *, name: str, minimum: int = 0, maximum: int = MAX_BIGINT, hint: str = ""
) -> int:
    """Return ``value`` if it is an ``int`` (never a ``bool``) within ``minimum..maximum``.

    Args:
        value: A size, limit, offset or page number from a caller.
        name: The argument's name, for the error.
        minimum: The smallest value allowed.
        maximum: The largest value allowed.
        hint: A sentence appended to the error.

    Raises:
        InvalidQueryError: Not an integer, or out of range.

    Example:
        >>> check_count(20, name="limit")
        20
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidQueryError(f"{name} must be an integer, got {show(value)}.{hint}")
    number = int(value)
    if not minimum <= number <= maximum:
        raise InvalidQueryError(
            f"{name} must be between {minimum} and {maximum}, got {show(value)}.{hint}"
        )
    return number
