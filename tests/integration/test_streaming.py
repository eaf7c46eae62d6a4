"""Flat-memory work: stream() reads in batches, insert_many / upsert_many take generators."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import MetaData, String, func, select, text
from sqlalchemy.orm import Mapped, mapped_column

from tests.integration.models import new_base
from underlay import (
    Database,
    DuplicateError,
    InvalidQueryError,
    SoftDeleteMixin,
    SQLAlchemyRepository,
)
from underlay.repository import Stream

StreamBase = new_base()


class Item(SoftDeleteMixin, StreamBase):
    __tablename__ = "stream_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(40), unique=True)
    grp: Mapped[str] = mapped_column(String(10))
    rank: Mapped[int]


class ItemRepository(SQLAlchemyRepository[Item]):
    sortable_fields = ("id", "rank")
    filterable_fields = ("grp", "rank")


class ItemOut(BaseModel):
    id: int
    code: str


@pytest.fixture
def metadata() -> MetaData:
    return StreamBase.metadata


def _rows(count: int, *, start: int = 0) -> Iterator[dict[str, Any]]:
    for i in range(start, start + count):
        yield {"id": i + 1, "code": f"c{i:06d}", "grp": "even" if i % 2 == 0 else "odd", "rank": i}


async def _count(db: Database) -> int:
    async with db.session() as session:
        return int(await session.scalar(select(func.count()).select_from(Item)) or 0)


@pytest.fixture
async def filled(db: Database) -> Database:
    """25 items, ids 1..25; every fifth one soft-deleted."""
    async with db.session() as session:
        repo = ItemRepository(session)
        await repo.insert_many(_rows(25))
        for i in range(5, 26, 5):
            await repo.delete(i)
    return db


class TestManyRows:
    async def test_results_longer_than_the_driver_prefetch(self, db: Database) -> None:
        """Buffered and server-side results of 600 rows come back whole, in order."""
        async with db.session() as session:
            await ItemRepository(session).insert_many(_rows(600))
        async with db.session() as session:
            listed = [item.id for item in await ItemRepository(session).list_all()]
            result = await session.stream(select(Item.id).order_by(Item.id))
            streamed = [
                row async for partition in result.scalars().partitions(70) for row in partition
            ]
        assert listed == streamed == list(range(1, 601))


class TestStream:
    async def test_batches_in_primary_key_order(self, filled: Database) -> None:
        """Live rows come in batches of batch_size by primary key, deleted ones left out."""
        sizes, ids = [], []
        async with (
            filled.session() as session,
            ItemRepository(session).stream(batch_size=7) as batches,
        ):
            async for batch in batches:
                sizes.append(len(batch))
                ids += [item.id for item in batch]
        assert ids == [i for i in range(1, 26) if i % 5]
        assert sizes == [7, 7, 6]

    async def test_order_filter_and_criteria(self, filled: Database) -> None:
        """order_by, filter_by and where criteria apply as in list_all."""
        async with filled.session(readonly=True) as session:
            repo = ItemRepository(session)
            stream = repo.stream(Item.rank < 20, order_by="-rank", filter_by={"grp": "even"})
            got = [item.rank async for batch in stream for item in batch]
            assert got == await _ranks(repo, Item.rank < 20, filter_by={"grp": "even"})
        assert got == [18, 16, 12, 10, 8, 6, 2, 0]

    async def test_include_deleted_and_schema(self, filled: Database) -> None:
        """include_deleted returns every row; schema= yields validated schemas."""
        async with filled.session(readonly=True, snapshot=True) as session:
            stream = ItemRepository(session).stream(
                include_deleted=True, schema=ItemOut, batch_size=10
            )
            batches = [batch async for batch in stream]
        assert [len(b) for b in batches] == [10, 10, 5]
        assert all(isinstance(item, ItemOut) for batch in batches for item in batch)
        assert batches[0][0] == ItemOut(id=1, code="c000000")

    async def test_early_break_closes_the_stream(self, filled: Database) -> None:
        """Leaving the async with block early closes the stream; the session keeps working."""
        async with filled.session() as session:
            repo = ItemRepository(session)
            async with repo.stream(batch_size=3) as batches:
                async for batch in batches:
                    assert len(batch) == 3
                    if filled.engine.dialect.name == "postgresql":
                        # one server-side cursor, not the whole result on the client
                        assert await _open_portals(session) == 1
                    break
            assert batches.closed
            assert [b async for b in batches] == []
            again = [item.id async for batch in repo.stream(batch_size=50) for item in batch]
            assert len(again) == 20
            assert await repo.count() == 20
            await repo.insert_many([{"id": 100, "code": "new", "grp": "x", "rank": 100}])
        assert await _count(filled) == 21  # live rows: 20 and the new one

    async def test_bad_arguments_refused_before_sql(self, filled: Database) -> None:
        """A bad batch_size or sort field raises at the call, before any SQL."""
        async with filled.session() as session:
            repo = ItemRepository(session)
            for size in (0, -1, "10", True):
                with pytest.raises(InvalidQueryError, match="batch_size"):
                    repo.stream(batch_size=size)  # type: ignore[arg-type]  # the point
            with pytest.raises(InvalidQueryError):
                repo.stream(order_by="code")
            assert isinstance(repo.stream(), Stream)


async def _ranks(repo: ItemRepository, *where: Any, filter_by: Any) -> list[int]:
    items = await repo.list_all(*where, order_by="-rank", filter_by=filter_by)
    return [item.rank for item in items]


async def _open_portals(session: Any) -> int:
    # protocol-level portals (server-side cursors) of this connection, besides this query's
    statement = text("SELECT count(*) FROM pg_cursors WHERE name <> ''")
    return int((await session.execute(statement)).scalar_one())


class _BoomError(Exception):
    """Raised by a row generator part-way through."""


def _raising(count: int, after: int) -> Iterator[dict[str, Any]]:
    for row in _rows(count):
        if row["id"] > after:
            raise _BoomError
        yield row


class TestGeneratorWrites:
    @pytest.mark.parametrize("method", ["auto", "values"], ids=["auto", "values"])
    async def test_insert_many_from_a_generator(self, db: Database, method: Any) -> None:
        """A generator longer than a batch is inserted whole, batch by batch."""
        async with db.session() as session:
            count = await ItemRepository(session).insert_many(
                _rows(2500), batch_size=1000, method=method
            )
        assert count == 2500
        assert await _count(db) == 2500

    @pytest.mark.parametrize("method", ["auto", "values"], ids=["auto", "values"])
    async def test_generator_raising_midway_leaves_nothing(self, db: Database, method: Any) -> None:
        """Batches sent before the generator raised are rolled back with the savepoint."""
        async with db.session() as session:
            repo = ItemRepository(session)
            await repo.insert_many([{"id": 9000, "code": "kept", "grp": "x", "rank": 0}])
            with pytest.raises(_BoomError):
                await repo.insert_many(_raising(3000, after=2500), batch_size=1000, method=method)
            assert await repo.count() == 1
        assert await _count(db) == 1

    @pytest.mark.parametrize("method", ["auto", "values"], ids=["auto", "values"])
    async def test_duplicate_in_a_later_batch(self, db: Database, method: Any) -> None:
        """A DuplicateError in batch 3 undoes batches 1 and 2; the transaction stays usable."""

        def rows() -> Iterator[dict[str, Any]]:
            yield from _rows(2500)
            yield {"id": 5000, "code": "c000007", "grp": "x", "rank": 0}  # code of row 8

        async with db.session() as session:
            repo = ItemRepository(session)
            await repo.insert_many([{"id": 9000, "code": "kept", "grp": "x", "rank": 0}])
            with pytest.raises(DuplicateError):
                await repo.insert_many(rows(), batch_size=1000, method=method)
            await repo.insert_many([{"id": 9001, "code": "after", "grp": "x", "rank": 0}])
        assert await _count(db) == 2

    async def test_bad_value_in_a_later_batch(self, db: Database) -> None:
        """A value refused in batch 2 undoes batch 1 (InvalidQueryError, nothing kept)."""

        def rows() -> Iterator[dict[str, Any]]:
            yield from _rows(1500)
            yield {"id": 5000, "code": "bad", "grp": "x", "rank": "not a number"}

        async with db.session() as session:
            with pytest.raises(InvalidQueryError, match="rank"):
                await ItemRepository(session).insert_many(rows(), batch_size=1000)
        assert await _count(db) == 0

    async def test_upsert_many_from_a_generator(self, db: Database) -> None:
        """returning=False upserts a generator batch by batch and returns the row count."""
        async with db.session() as session:
            await ItemRepository(session).insert_many(_rows(1000))
        changed = ({**row, "grp": "new"} for row in _rows(2000, start=500))
        async with db.session() as session:
            repo = ItemRepository(session)
            count = await repo.upsert_many(
                changed, conflict_on=["code"], returning=False, batch_size=700
            )
        assert count == 2000
        async with db.session() as session:
            repo = ItemRepository(session)
            assert await repo.count() == 2500
            assert await repo.count(filter_by={"grp": "new"}) == 2000

    async def test_upsert_many_returning_across_batches(self, db: Database) -> None:
        """With returning, a key repeated in a later batch appears once, at its last place."""
        rows = [*_rows(5), {"id": 2, "code": "c000001", "grp": "again", "rank": 99}]
        async with db.session() as session:
            items = await ItemRepository(session).upsert_many(
                rows, conflict_on=["code"], batch_size=2
            )
        assert [item.id for item in items] == [1, 3, 4, 5, 2]
        assert items[-1].grp == "again"

    async def test_upsert_generator_raising_midway_leaves_nothing(self, db: Database) -> None:
        """An upsert whose generator raises after two batches keeps nothing."""
        async with db.session() as session:
            repo = ItemRepository(session)
            with pytest.raises(_BoomError):
                await repo.upsert_many(
                    _raising(300, after=250), conflict_on=["code"], batch_size=100
                )
            assert await repo.count() == 0
