"""Column-type coercion of caller values (no database needed)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any

import pytest
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Date,
    DateTime,
    Double,
    Enum,
    Float,
    Integer,
    Interval,
    LargeBinary,
    Numeric,
    PickleType,
    SmallInteger,
    String,
    Time,
    TypeDecorator,
    Uuid,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from underlay import InvalidQueryError, UTCDateTime
from underlay.repository._coerce import canonical_identity, check_count, coerce_value


class Shade(StrEnum):
    LIGHT = "l"
    DARK = "d"


class Upper(TypeDecorator[str]):
    impl = String(10)
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return str(value).upper()


class Plain(TypeDecorator[int]):
    impl = Integer
    cache_ok = True


U = uuid.UUID("12345678-1234-5678-1234-567812345678")
AWARE = datetime(2024, 5, 1, 12, tzinfo=UTC)

ACCEPTED: list[tuple[Any, Any, Any]] = [
    (Integer(), "-12", -12),
    (Integer(), 2**31 - 1, 2**31 - 1),
    (SmallInteger(), -(2**15), -(2**15)),
    (BigInteger(), 2**63 - 1, 2**63 - 1),
    (Plain(), "3", 3),
    (Float(), 2, 2.0),
    (Double(), "1.5e3", 1500.0),
    (Float(asdecimal=True), "0.1", Decimal("0.1")),
    (Numeric(5, 2), 1.25, Decimal("1.25")),
    (Numeric(5, 2), "-999.99", Decimal("-999.99")),
    (Numeric(asdecimal=False), Decimal("2.5"), 2.5),
    (String(3), Shade.DARK, "d"),
    (String(), "ünï", "ünï"),
    (Boolean(), "True", True),
    (Boolean(), "0", False),
    (Enum("a", "b"), "a", "a"),
    (Enum(Shade), "LIGHT", Shade.LIGHT),
    (Enum(Shade), "d", Shade.DARK),
    (Date(), "2024-05-01", date(2024, 5, 1)),
    (DateTime(), "2024-05-01T12:00:00", datetime(2024, 5, 1, 12)),
    (DateTime(timezone=True), "2024-05-01T14:00:00+02:00", AWARE),
    (UTCDateTime(), AWARE, AWARE),
    (Time(), "12:30", time(12, 30)),
    (Interval(), timedelta(1), timedelta(1)),
    (Uuid(), str(U).upper(), U),
    (Uuid(), U.hex, U),
    (Uuid(as_uuid=False), "{" + str(U) + "}", str(U)),
    (LargeBinary(4), bytearray(b"ab"), b"ab"),
    (JSON(), {"any": ["thing"]}, {"any": ["thing"]}),
    (Upper(), 5, 5),
    (PickleType(), {1, 2}, {1, 2}),
]

REFUSED: list[tuple[Any, Any]] = [
    (Integer(), False),
    (Integer(), 2**31),
    (Integer(), "1_000"),
    (Integer(), "1.0"),
    (Integer(), 1.0),
    (Integer(), [1]),
    (SmallInteger(), 2**15),
    (BigInteger(), -(2**63) - 1),
    (Float(), float("-inf")),
    (Float(), "inf"),
    (Float(), True),
    (Float(), 10**400),
    (Float(), Decimal("1e400")),
    (Numeric(5, 2), Decimal("1000")),
    (Numeric(), Decimal("1e-20000")),
    (Numeric(), "1,5"),
    (String(3), "abcd"),
    (String(), b"bytes"),
    (String(), "\x00"),
    (String(), "\ud83d"),
    (Boolean(), 1),
    (Boolean(), "y"),
    (Enum("a", "b"), "c"),
    (Enum(Shade), "x"),
    (Date(), AWARE),
    (Date(), "x" * 100),
    (DateTime(timezone=True), "2024-05-01T12:00:00"),
    (DateTime(), AWARE),
    (DateTime(), 1714564800),
    (Time(), "25:00"),
    (Interval(), 5),
    (Uuid(), "1234"),
    (Uuid(), U.int),
    (LargeBinary(1), b"ab"),
    (LargeBinary(), "text"),
]


class TestCoerceValue:
    @pytest.mark.parametrize(("column_type", "value", "expected"), ACCEPTED, ids=repr)
    def test_accepted(self, column_type: Any, value: Any, expected: Any) -> None:
        """Values of the column's type, or a spelling of one, come back canonical."""
        result = coerce_value(Column("c", column_type), value, field="T.c")
        assert result == expected
        assert type(result) is type(expected)

    @pytest.mark.parametrize(("column_type", "value"), REFUSED, ids=repr)
    def test_refused(self, column_type: Any, value: Any) -> None:
        """A value outside the column's type or bounds raises InvalidQueryError naming it."""
        with pytest.raises(InvalidQueryError, match=r"Invalid value for T\.c"):
            coerce_value(Column("c", column_type), value, field="T.c")

    def test_none_passes(self) -> None:
        """None means NULL: the caller decides whether it is allowed."""
        assert coerce_value(Column("c", Integer), None, field="c") is None

    def test_hostile_repr_does_not_escape(self) -> None:
        """A value whose repr raises is still refused with InvalidQueryError."""

        class Nasty:
            def __repr__(self) -> str:
                raise RuntimeError

        with pytest.raises(InvalidQueryError, match="<Nasty>"):
            coerce_value(Column("c", Integer), Nasty(), field="c")


class Base(DeclarativeBase):
    pass


class Both(Base):
    __tablename__ = "both"
    a: Mapped[int] = mapped_column(primary_key=True)
    b: Mapped[str] = mapped_column(String(4), primary_key=True)


class TestCanonicalIdentity:
    def test_forms(self) -> None:
        """Tuples, lists and mappings of a composite key give the same canonical tuple."""
        mapper = Both.__mapper__
        for ident in ((1, "x"), ["01", "x"], {"a": "1", "b": "x"}):
            assert canonical_identity(mapper, ident) == (1, "x")

    @pytest.mark.parametrize(
        "ident", [1, (1,), (1, "x", 2), {"a": 1}, {"a": 1, "c": 2}, (None, "x"), (1, "xxxxx")]
    )
    def test_refused(self, ident: Any) -> None:
        """Wrong arity, unknown names, None and values that do not fit are refused."""
        with pytest.raises(InvalidQueryError, match="Both"):
            canonical_identity(Both.__mapper__, ident)


class TestCheckCount:
    @pytest.mark.parametrize("value", [True, 1.0, "1", None, -1, 2**63])
    def test_refused(self, value: Any) -> None:
        """Only integers in range are sizes."""
        with pytest.raises(InvalidQueryError, match="limit"):
            check_count(value, name="limit")

    def test_bounds(self) -> None:
        """The bounds are inclusive."""
        assert check_count(5, name="size", minimum=5, maximum=5) == 5
