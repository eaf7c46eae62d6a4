"""Caller values are checked against column types: refused before any SQL, or canonical."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import partial
from typing import Any

import pytest
from sqlalchemy import BigInteger, Enum, MetaData, Numeric, SmallInteger, String, func, select
from sqlalchemy.orm import Mapped, mapped_column

from tests.integration.models import new_base
from underlay import Database, InvalidQueryError, SQLAlchemyRepository, VersionedMixin
from underlay.testing import count_queries

HardBase = new_base()


class Color(enum.Enum):
    RED = "r"
    BLUE = "b"


class Gadget(VersionedMixin, HardBase):
    """One column of each checked type."""

    __tablename__ = "gadgets"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(10), default="")
    qty: Mapped[int] = mapped_column(default=0)
    small: Mapped[int] = mapped_column(SmallInteger, default=0)
    big: Mapped[int] = mapped_column(BigInteger, default=0)
    ratio: Mapped[float] = mapped_column(default=0.0)
    price: Mapped[Decimal] = mapped_column(Numeric(10, 2), default=Decimal(0))
    active: Mapped[bool] = mapped_column(default=True)
    color: Mapped[Color] = mapped_column(Enum(Color), default=Color.RED)
    day: Mapped[date | None] = mapped_column(default=None)
    seen_at: Mapped[datetime | None] = mapped_column(default=None)
    token: Mapped[uuid.UUID | None] = mapped_column(default=None)


class Pair(HardBase):
    """A composite primary key."""

    __tablename__ = "pairs"

    left: Mapped[int] = mapped_column(primary_key=True)
    right: Mapped[str] = mapped_column(String(5), primary_key=True)
    note: Mapped[str] = mapped_column(String(20), default="")


class Keyed(HardBase):
    """A UUID primary key."""

    __tablename__ = "keyed"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(String(20), default="")


class GadgetRepository(SQLAlchemyRepository[Gadget]):
    filterable_fields = ("name", "qty", "small", "big", "ratio", "price", "active", "color")
    filterable_fields += ("day", "seen_at", "token")
    sortable_fields = ("qty",)


class PairRepository(SQLAlchemyRepository[Pair]):
    pass


class KeyedRepository(SQLAlchemyRepository[Keyed]):
    pass


@pytest.fixture
def metadata() -> MetaData:
    return HardBase.metadata


@pytest.fixture
async def gadget(db: Database) -> Gadget:
    async with db.session() as session:
        return await GadgetRepository(session).save(Gadget(id=1, name="one", qty=5))


HOSTILE_IDS: list[Any] = [
    True,
    1.0,
    1.5,
    Decimal("1"),
    " 1",
    "1e0",
    "0x1",
    "\u0661",
    2**31,
    10**30,
    None,
    (1, 2),
    [],
    {"id": 1, "x": 2},
    object(),
    "\udc80",
]


class TestIds:
    async def test_hostile_ids_refused_without_sql(self, db: Database, gadget: Gadget) -> None:
        """An id that does not fit the key column raises InvalidQueryError and sends no SQL."""
        async with db.session() as session:
            repository = GadgetRepository(session)
            for ident in HOSTILE_IDS:
                for call in (
                    partial(repository.get, ident),
                    partial(repository.get_one, ident),
                    partial(repository.delete, ident),
                    partial(repository.update, ident, {"qty": 1}),
                ):
                    with count_queries() as counter, pytest.raises(InvalidQueryError):
                        await call()
                    assert counter.statements == [], ident

    async def test_id_spellings_find_the_row(self, db: Database, gadget: Gadget) -> None:
        """A digit string or a one-element key is coerced to the integer key."""
        async with db.session() as session:
            repository = GadgetRepository(session)
            for ident in (1, "1", "01", "+1", (1,), [1], {"id": 1}):
                found = await repository.get(ident)
                assert found is not None, ident
                assert found.id == 1

    async def test_fraction_never_finds_a_row(self, db: Database, gadget: Gadget) -> None:
        """get(1.5) is refused rather than rounded to row 1 (PostgreSQL did that)."""
        async with db.session() as session:
            with pytest.raises(InvalidQueryError, match=r"Gadget\.id"):
                await GadgetRepository(session).get(1.5)

    async def test_uuid_spellings_are_canonical(self, db: Database) -> None:
        """Upper-case, braced and hex-only UUID strings find the row."""
        key = uuid.uuid4()
        async with db.session() as session:
            await KeyedRepository(session).save(Keyed(id=key, label="x"))
        async with db.session() as session:
            repository = KeyedRepository(session)
            for spelling in (str(key).upper(), "{" + str(key) + "}", key.hex):
                found = await repository.get(spelling)
                assert found is not None
                assert found.id == key
            with pytest.raises(InvalidQueryError, match=r"Keyed\.id"):
                await repository.get("not-a-uuid")

    async def test_composite_keys(self, db: Database) -> None:
        """A composite key takes a tuple, list or mapping; wrong arity is refused."""
        async with db.session() as session:
            await PairRepository(session).save(Pair(left=1, right="a", note="n"))
        async with db.session() as session:
            repository = PairRepository(session)
            for ident in ((1, "a"), ["1", "a"], {"left": 1, "right": "a"}):
                found = await repository.get(ident)
                assert found is not None
                assert found.note == "n"
            for bad in (1, (1,), (1, "a", 2), ("x", "a"), (1, "toolong"), (1, None)):
                with count_queries() as counter, pytest.raises(InvalidQueryError):
                    await repository.get(bad)
                assert counter.statements == []


HOSTILE_FILTERS: list[dict[str, Any]] = [
    {"qty": "abc"},
    {"qty": True},
    {"qty": 1.5},
    {"qty": 2**31},
    {"small": 2**15},
    {"big": 2**63},
    {"name": 5},
    {"name": "x" * 11},
    {"name": "a\x00b"},
    {"name": "a\udc80"},
    {"ratio": float("nan")},
    {"ratio": float("inf")},
    {"ratio": "nan"},
    {"ratio": 10**400},
    {"price": Decimal("NaN")},
    {"color": "GREEN"},
    {"day": datetime(2024, 1, 1, tzinfo=UTC)},
    {"day": "2024-13-01"},
    {"seen_at": datetime(2024, 1, 1)},
    {"seen_at": "yesterday"},
    {"token": "zz"},
    {"token": 5},
]


class TestFilterValues:
    async def test_hostile_filter_values_refused_without_sql(self, db: Database) -> None:
        """A filter value that does not fit its column is refused, naming the field."""
        async with db.session() as session:
            repository = GadgetRepository(session)
            for filter_by in HOSTILE_FILTERS:
                (field,) = filter_by
                for call in (
                    partial(repository.list_all, filter_by=filter_by),
                    partial(repository.count, filter_by=filter_by),
                    partial(repository.exists, filter_by=filter_by),
                    partial(repository.one_or_none, filter_by=filter_by),
                    partial(repository.page, filter_by=filter_by),
                    partial(repository.paginate, filter_by=filter_by),
                ):
                    with (
                        count_queries() as counter,
                        pytest.raises(InvalidQueryError, match=field),
                    ):
                        await call()
                    assert counter.statements == [], filter_by

    async def test_filter_values_are_coerced(self, db: Database, gadget: Gadget) -> None:
        """Filter values in another spelling of the column's type compare as that type."""
        cases: list[tuple[dict[str, Any], bool]] = [
            ({"qty": "5"}, True),
            ({"qty": "6"}, False),
            ({"ratio": "0"}, True),
            ({"price": "0.00"}, True),
            ({"active": "true"}, True),
            ({"active": "FALSE"}, False),
            ({"color": "RED"}, True),
            ({"color": Color.BLUE}, False),
            ({"color": "r"}, True),
        ]
        async with db.session() as session:
            repository = GadgetRepository(session)
            for filter_by, matches in cases:
                assert await repository.exists(filter_by=filter_by) is matches, filter_by


HOSTILE_SIZES: list[tuple[str, dict[str, Any]]] = [
    ("list_all", {"limit": "5"}),
    ("list_all", {"limit": True}),
    ("list_all", {"limit": 5.0}),
    ("list_all", {"limit": -1}),
    ("list_all", {"limit": 2**63}),
    ("list_all", {"offset": "1"}),
    ("list_all", {"offset": -1}),
    ("list_all", {"offset": 10**19}),
    ("page", {"number": "2"}),
    ("page", {"number": 0}),
    ("page", {"number": 10**18}),
    ("page", {"size": True}),
    ("page", {"size": 10**18}),
    ("page", {"size": float("nan")}),
    ("page", {"count": ["exact"]}),
    ("paginate", {"limit": "5"}),
    ("paginate", {"limit": 0}),
    ("paginate", {"after": 5}),
]


class TestSizes:
    async def test_hostile_sizes_refused_without_sql(self, db: Database) -> None:
        """Sizes, limits, offsets and page numbers must be integers in range."""
        async with db.session() as session:
            repository = GadgetRepository(session)
            for method, kwargs in HOSTILE_SIZES:
                with count_queries() as counter, pytest.raises(InvalidQueryError):
                    await getattr(repository, method)(**kwargs)
                assert counter.statements == [], kwargs

    async def test_deep_offset_in_range_runs(self, db: Database, gadget: Gadget) -> None:
        """An offset up to 2**63 - 1 is valid SQL on both backends."""
        async with db.session() as session:
            assert await GadgetRepository(session).list_all(offset=2**62) == []


HOSTILE_ROWS: list[dict[str, Any]] = [
    {"qty": "lots"},
    {"qty": True},
    {"name": "x" * 11},
    {"name": "nul\x00"},
    {"name": "\ud800"},
    {"ratio": float("nan")},
    {"price": Decimal("1e30")},
    {"seen_at": datetime(2024, 1, 1)},
]


class TestWriteValues:
    async def test_bulk_insert_refuses_bad_values(self, db: Database) -> None:
        """insert_many checks every row before any SQL, on the fast paths too (COPY, SQLite)."""
        rows = [{"id": i, "name": f"n{i}", "qty": i} for i in range(1, 1500)]
        async with db.session() as session:
            repository = GadgetRepository(session)
            for bad in HOSTILE_ROWS:
                hostile = list(rows)
                hostile[700] = {**rows[700], **bad}
                for method in ("values", "auto"):
                    with (
                        count_queries() as counter,
                        pytest.raises(InvalidQueryError, match="Gadget"),
                    ):
                        await repository.insert_many(hostile, method=method)  # type: ignore[arg-type]
                    assert counter.statements == [], bad
        async with db.session() as session:
            total = await session.scalar(select(func.count()).select_from(Gadget))
        assert total == 0

    async def test_upsert_and_update_refuse_bad_values(self, db: Database, gadget: Gadget) -> None:
        """upsert, upsert_many and update check values like insert_many."""
        async with db.session() as session:
            repository = GadgetRepository(session)
            for bad in HOSTILE_ROWS:
                for call in (
                    partial(repository.upsert, {"id": 1, **bad}, conflict_on=["id"]),
                    partial(repository.upsert_many, [{"id": 2, **bad}], conflict_on=["id"]),
                    partial(repository.update, 1, bad),
                ):
                    with count_queries() as counter, pytest.raises(InvalidQueryError):
                        await call()
                    assert counter.statements == [], bad

    async def test_bulk_values_are_coerced(self, db: Database) -> None:
        """Digit strings for integers and text UUIDs are stored as their typed values."""
        token = uuid.uuid4()
        rows = [{"id": "7", "qty": "3", "token": str(token).upper(), "price": "1.5"}]
        async with db.session() as session:
            assert await GadgetRepository(session).insert_many(rows) == 1
        async with db.session() as session:
            found = await GadgetRepository(session).get_one(7)
        assert (found.qty, found.token, found.price) == (3, token, Decimal("1.5"))
        assert rows[0]["qty"] == "3"  # the caller's row was not modified


class TestEmptyUpdate:
    @pytest.mark.parametrize("values", [{}, {"version": 1}], ids=["empty", "version-only"])
    async def test_empty_update_refused_and_version_kept(
        self, db: Database, gadget: Gadget, values: dict[str, Any]
    ) -> None:
        """update(id, {}) on a versioned model raises and does not bump the version."""
        async with db.session() as session:
            with count_queries() as counter, pytest.raises(InvalidQueryError, match="at least"):
                await GadgetRepository(session).update(1, values)
            assert counter.statements == []
        async with db.session() as session:
            assert (await GadgetRepository(session).get_one(1)).version == 1
