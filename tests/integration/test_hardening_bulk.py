"""Bulk writes that fail leave the transaction as it was; concurrent upserts never deadlock."""

from __future__ import annotations

import asyncio
import random

import pytest
from sqlalchemy import MetaData, String, func, select
from sqlalchemy.orm import Mapped, mapped_column

from tests.conftest import Backend
from tests.integration.models import new_base
from underlay import (
    Database,
    DuplicateError,
    SQLAlchemyRepository,
    VersionedMixin,
    retry_on_conflict,
)

BatchBase = new_base()


class Item(BatchBase):
    __tablename__ = "batch_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(40), unique=True)
    qty: Mapped[int] = mapped_column(default=0)


class Counter(VersionedMixin, BatchBase):
    __tablename__ = "batch_counters"

    id: Mapped[int] = mapped_column(primary_key=True)
    hits: Mapped[int] = mapped_column(default=0)


class ItemRepository(SQLAlchemyRepository[Item]):
    pass


class CounterRepository(SQLAlchemyRepository[Counter]):
    pass


@pytest.fixture
def metadata() -> MetaData:
    return BatchBase.metadata


async def codes(db: Database) -> list[str]:
    async with db.session() as session:
        return list((await session.scalars(select(Item.code).order_by(Item.id))).all())


class TestFailedBatchKeepsTheTransaction:
    @pytest.mark.parametrize("method", ["auto", "values"])
    async def test_duplicate_midway_inserts_nothing_and_keeps_earlier_work(
        self, db: Database, method: str
    ) -> None:
        """50,000 rows with a duplicate at 25,000: none inserted, an earlier save commits."""
        size = 50_000 if method == "auto" else 3_000
        rows = [{"id": i, "code": f"c{i}"} for i in range(2, size + 2)]
        rows[size // 2] = {"id": size + 10, "code": "saved"}
        async with db.session() as session:
            repository = ItemRepository(session)
            saved = await repository.save(Item(id=1, code="saved"))
            with pytest.raises(DuplicateError):
                await repository.insert_many(rows, method=method)  # type: ignore[arg-type]
            assert saved.code == "saved"  # the entity stays loaded (no expiry, no IO)
            await repository.insert_many([{"id": 2, "code": "after"}])
        assert await codes(db) == ["saved", "after"]

    async def test_failed_upsert_many_keeps_earlier_work(self, db: Database) -> None:
        """upsert_many failing on another unique column writes nothing and keeps the rest."""
        async with db.session() as session:
            await ItemRepository(session).insert_many(
                [{"id": 1, "code": "a", "qty": 1}, {"id": 2, "code": "b", "qty": 2}]
            )
        async with db.session() as session:
            repository = ItemRepository(session)
            await repository.save(Item(id=3, code="c"))
            kept = await repository.get_one(1)
            with pytest.raises(DuplicateError):
                await repository.upsert_many(
                    # two statements (two key sets): the first succeeds, the second fails
                    [
                        {"id": 1, "code": "a", "qty": 10},
                        {"id": 2, "code": "b", "qty": 20},
                        {"id": 4, "code": "a"},
                    ],
                    conflict_on=["id"],
                )
            assert kept.qty == 1  # put back to the database's state, not the rolled-back one
        async with db.session() as session:
            rows = await session.execute(select(Item.code, Item.qty).order_by(Item.id))
            assert [tuple(row) for row in rows] == [("a", 1), ("b", 2), ("c", 0)]

    async def test_session_is_usable_after_caught_error(self, db: Database) -> None:
        """After a caught DuplicateError the same session reads and writes normally."""
        async with db.session() as session:
            repository = ItemRepository(session)
            await repository.insert_many([{"id": 1, "code": "x"}])
            with pytest.raises(DuplicateError):
                await repository.insert_many([{"id": 2, "code": "y"}, {"id": 3, "code": "x"}])
            assert await repository.count() == 1
        async with db.session() as session:
            total = await session.scalar(select(func.count()).select_from(Item))
        assert total == 1


class TestUpsertLockOrder:
    async def test_concurrent_overlapping_upserts_do_not_deadlock(
        self, db: Database, backend: Backend
    ) -> None:
        """20 callers upserting overlapping keys in different orders all succeed."""
        keys = list(range(1, 41))
        async with db.session() as session:
            await CounterRepository(session).insert_many([{"id": key} for key in keys])
        start = asyncio.Event()
        rng = random.Random(10)
        orders = [rng.sample(keys, len(keys)) for _ in range(20)]

        @retry_on_conflict(attempts=1 if backend.concurrent_writers else 50, base_delay=0.005)
        async def worker(order: list[int]) -> None:
            async with db.session() as session:
                await start.wait()
                await CounterRepository(session).upsert_many(
                    [{"id": key, "hits": key} for key in order], conflict_on=["id"]
                )

        tasks = [asyncio.create_task(worker(order)) for order in orders]
        await asyncio.sleep(0)
        start.set()
        await asyncio.gather(*tasks)
        async with db.session() as session:
            versions = (await session.scalars(select(Counter.version))).all()
        assert sorted(set(versions)) == [21]
