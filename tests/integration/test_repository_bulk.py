"""The fast paths of insert_many and upsert_many: key sets, conversions, order, errors."""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import Dialect, MetaData, Numeric, String, TypeDecorator
from sqlalchemy.orm import Mapped, mapped_column

from tests.integration.models import new_base
from underlay import (
    ConstraintError,
    Database,
    DuplicateError,
    InvalidQueryError,
    SQLAlchemyRepository,
    TimestampMixin,
    VersionedMixin,
)
from underlay.testing import count_queries, record_transactions

BulkBase = new_base()
LARGE = 1500  # above COPY_THRESHOLD: method="auto" takes the driver's bulk path


class Widget(TimestampMixin, BulkBase):
    """Plain columns with constant Python defaults: eligible for every fast path.

    ``label`` is stored in a column of another name.
    """

    __tablename__ = "widgets"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(40), unique=True)
    label: Mapped[str] = mapped_column("label_text", String(40), default="")
    qty: Mapped[int] = mapped_column(default=0)


class Note(BulkBase):
    """One column to give and no Python defaults."""

    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str] = mapped_column(String(40))


class Stamp(BulkBase):
    """Columns whose values need conversions, and a computed (callable) default key."""

    __tablename__ = "stamps"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    code: Mapped[str] = mapped_column(String(40), unique=True)
    at: Mapped[datetime]
    amount: Mapped[Decimal] = mapped_column(Numeric(12, 4))
    flag: Mapped[bool] = mapped_column(default=False)


class Lowered(TypeDecorator[str]):
    """Stores strings lower-cased, so a returned value can differ from the given one."""

    impl = String(40)
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Dialect) -> str | None:
        """Lower-case the value before it is sent."""
        return None if value is None else value.lower()


class Handle(VersionedMixin, BulkBase):
    """A unique key the column type rewrites; versioned."""

    __tablename__ = "handles"

    id: Mapped[int] = mapped_column(primary_key=True)
    handle: Mapped[str] = mapped_column(Lowered, unique=True)
    note: Mapped[str] = mapped_column(String(40), default="")


class WidgetRepository(SQLAlchemyRepository[Widget]):
    pass


class NoteRepository(SQLAlchemyRepository[Note]):
    pass


class StampRepository(SQLAlchemyRepository[Stamp]):
    pass


class HandleRepository(SQLAlchemyRepository[Handle]):
    pass


@pytest.fixture
def metadata() -> MetaData:
    return BulkBase.metadata


def _widget_rows(count: int) -> list[dict[str, Any]]:
    """Rows in three key sets; the third repeats the second's keys in another order."""
    rows: list[dict[str, Any]] = []
    for i in range(count):
        code = f"w{i:05d}"
        if i % 3 == 0:
            rows.append({"code": code})
        elif i % 3 == 1:
            rows.append({"code": code, "label": f"L{i}", "qty": i})
        else:
            rows.append({"qty": i, "label": f"L{i}", "code": code})
    return rows


async def _stored_widgets(db: Database) -> dict[str, tuple[str, int]]:
    async with db.session() as session:
        widgets = await WidgetRepository(session).list_all()
    assert all(w.created_at is not None for w in widgets)
    return {w.code: (w.label, w.qty) for w in widgets}


def _expected_widgets(count: int) -> dict[str, tuple[str, int]]:
    return {f"w{i:05d}": ("", 0) if i % 3 == 0 else (f"L{i}", i) for i in range(count)}


class TestInsertManyFastPaths:
    async def test_large_mixed_key_sets_bypass_core(self, db: Database) -> None:
        """A large batch of mixed key sets goes to the driver, with defaults, recorded."""
        rows = _widget_rows(LARGE)
        snapshot = [dict(row) for row in rows]
        with record_transactions(db) as log:
            async with db.session() as session:
                with count_queries() as counter:
                    assert await WidgetRepository(session).insert_many(rows) == LARGE
                assert not any("INSERT" in sql for sql in counter.statements)
        assert [(w.model, w.ids, w.kind) for w in log.writes] == [(Widget, None, "write")]
        assert rows == snapshot
        assert await _stored_widgets(db) == _expected_widgets(LARGE)

    async def test_values_method_goes_through_the_session(self, db: Database) -> None:
        """method='values' sends Core INSERTs that session events see, with defaults."""
        rows = _widget_rows(LARGE)
        with record_transactions(db) as log:
            async with db.session() as session:
                with count_queries() as counter:
                    assert (
                        await WidgetRepository(session).insert_many(rows, method="values") == LARGE
                    )
                assert any("INSERT" in sql for sql in counter.statements)
        # seen by the session's events as Core INSERTs on the table, not recorded by hand
        assert {(w.tables, w.kind) for w in log.writes} == {((Widget.__table__,), "insert")}
        assert await _stored_widgets(db) == _expected_widgets(LARGE)

    async def test_small_batch_goes_through_the_session(self, db: Database) -> None:
        """Below the threshold, method='auto' sends Core INSERTs."""
        async with db.session() as session:
            with count_queries() as counter:
                assert await WidgetRepository(session).insert_many(_widget_rows(6)) == 6
            assert any("INSERT" in sql for sql in counter.statements)
        assert await _stored_widgets(db) == _expected_widgets(6)

    async def test_single_column_rows(self, db: Database) -> None:
        """Rows giving one column, with nothing to default or convert, take the fast path."""
        async with db.session() as session:
            repo = NoteRepository(session)
            with count_queries() as counter:
                assert await repo.insert_many([{"body": f"n{i}"} for i in range(LARGE)]) == LARGE
            assert not any("INSERT" in sql for sql in counter.statements)
            notes = await repo.list_all()
        assert sorted(n.body for n in notes) == sorted(f"n{i}" for i in range(LARGE))

    async def test_converted_values_and_computed_defaults(self, db: Database) -> None:
        """Aware datetimes, decimals, booleans and UUID defaults survive a large batch."""
        plus_two = timezone(timedelta(hours=2))
        base = datetime(2024, 3, 4, 5, 6, 7, 123456, tzinfo=plus_two)
        given = uuid.UUID(int=7)
        rows: list[dict[str, Any]] = [
            {
                "code": f"s{i:05d}",
                "at": base + timedelta(seconds=i),
                "amount": Decimal(f"{i}.0101"),
                **({"flag": True} if i % 2 else {}),
            }
            for i in range(LARGE)
        ]
        rows[5]["id"] = given
        async with db.session() as session:
            assert await StampRepository(session).insert_many(rows) == LARGE
        async with db.session() as session:
            stamps = {s.code: s for s in await StampRepository(session).list_all()}
        assert len(stamps) == LARGE
        assert len({s.id for s in stamps.values()}) == LARGE
        assert stamps["s00005"].id == given
        tenth = stamps["s00010"]
        assert tenth.at == base + timedelta(seconds=10)
        assert tenth.at.utcoffset() == timedelta(0)
        assert tenth.amount == Decimal("10.0101")
        assert (tenth.flag, stamps["s00011"].flag) == (False, True)

    async def test_mappings_and_schemas_in_a_large_batch(self, db: Database) -> None:
        """Read-only mappings and Pydantic models are accepted on the fast path."""

        class WidgetIn(BaseModel):
            code: str
            qty: int = 0

        rows: list[Any] = [
            MappingProxyType({"code": f"w{i:05d}", "qty": i})
            if i % 2
            else WidgetIn(code=f"w{i:05d}", qty=i)
            if i % 4 == 0
            else WidgetIn(code=f"w{i:05d}")
            for i in range(LARGE)
        ]
        async with db.session() as session:
            assert await WidgetRepository(session).insert_many(rows) == LARGE
        stored = await _stored_widgets(db)
        assert stored["w00003"] == ("", 3)
        assert stored["w00004"] == ("", 4)
        assert stored["w00002"] == ("", 0)  # an unset schema field is left to the default

    async def test_duplicate_in_a_large_batch(self, db: Database) -> None:
        """A unique violation on the fast path raises DuplicateError and inserts nothing."""
        rows = _widget_rows(LARGE)
        rows[-1]["code"] = rows[0]["code"]
        with pytest.raises(DuplicateError):
            async with db.session() as session:
                await WidgetRepository(session).insert_many(rows)
        assert await _stored_widgets(db) == {}

    async def test_not_null_in_a_large_batch(self, db: Database) -> None:
        """A NULL in a NOT NULL column on the fast path raises ConstraintError."""
        rows = _widget_rows(LARGE)
        rows[7]["code"] = None
        with pytest.raises(ConstraintError):
            async with db.session() as session:
                await WidgetRepository(session).insert_many(rows)
        assert await _stored_widgets(db) == {}

    @pytest.mark.parametrize(
        "bad",
        [{"code": "x", "nope": 1}, ("code", "x")],
        ids=["unknown-key-in-later-key-set", "not-a-mapping"],
    )
    async def test_bad_later_row_refused_before_sql(self, db: Database, bad: Any) -> None:
        """A bad row after many good ones raises InvalidQueryError without sending SQL."""
        rows: list[Any] = [*_widget_rows(LARGE), bad]
        async with db.session() as session:
            with count_queries() as counter, pytest.raises(InvalidQueryError):
                await WidgetRepository(session).insert_many(rows)
            assert counter.count == 0

    async def test_version_in_a_later_key_set_refused(self, db: Database) -> None:
        """A version key is refused even when only a later key set carries it."""
        rows: list[dict[str, Any]] = [{"handle": f"h{i}"} for i in range(LARGE)]
        rows.append({"handle": "late", "version": 4})
        async with db.session() as session:
            with count_queries() as counter, pytest.raises(InvalidQueryError, match="version"):
                await HandleRepository(session).insert_many(rows)
            assert counter.count == 0


class TestUpsertManyOrder:
    async def test_input_order_across_key_sets(self, db: Database) -> None:
        """Entities come back in row order across key sets; a repeated key takes its last place."""
        async with db.session() as session:
            repo = WidgetRepository(session)
            await repo.insert_many([{"code": "b", "qty": 1}])
            result = await repo.upsert_many(
                [
                    {"code": "c", "label": "c1"},
                    {"code": "a", "label": "a1", "qty": 3},
                    {"code": "b", "label": "b1"},
                    {"code": "c", "label": "c2"},
                ],
                conflict_on=["code"],
            )
            assert [(w.code, w.label, w.qty) for w in result] == [
                ("a", "a1", 3),
                ("b", "b1", 1),
                ("c", "c2", 0),
            ]

    async def test_many_rows_in_input_order(self, db: Database) -> None:
        """A large upsert, half new rows in shuffled order, returns them in input order."""
        async with db.session() as session:
            await WidgetRepository(session).insert_many(
                [{"code": f"w{i:05d}", "qty": i} for i in range(0, LARGE, 2)]
            )
        codes = [f"w{i:05d}" for i in range(LARGE)]
        random.Random(7).shuffle(codes)
        async with db.session() as session:
            result = await WidgetRepository(session).upsert_many(
                [{"code": code, "label": "new"} for code in codes], conflict_on=["code"]
            )
            assert [w.code for w in result] == codes
            assert {w.label for w in result} == {"new"}
            assert result[codes.index("w00004")].qty == 4
        assert len(await _stored_widgets(db)) == LARGE

    async def test_keys_rewritten_by_the_column_type(self, db: Database) -> None:
        """Entities whose stored key differs from the given one follow the matched ones."""
        async with db.session() as session:
            repo = HandleRepository(session)
            result = await repo.upsert_many(
                [{"handle": "b"}, {"handle": "A"}, {"handle": "c"}], conflict_on=["handle"]
            )
            assert [h.handle for h in result] == ["b", "c", "a"]
            again = await repo.upsert_many(
                [{"handle": "B", "note": "x"}, {"handle": "c", "note": "y"}],
                conflict_on=["handle"],
            )
            assert [(h.handle, h.note, h.version) for h in again] == [
                ("c", "y", 2),
                ("b", "x", 2),
            ]
