"""Optimistic locking through SQLAlchemyRepository, including many concurrent writers."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import MetaData, select

from tests.integration.softdelete_models import Counter, SoftBase
from underlay import (
    ConflictError,
    Database,
    SQLAlchemyRepository,
    StaleVersionError,
    retry_on_conflict,
)


class CounterRepository(SQLAlchemyRepository[Counter]):
    pass


@pytest.fixture
def metadata() -> MetaData:
    return SoftBase.metadata


async def _row(db: Database, id: int = 1) -> tuple[int, int]:
    async with db.session() as session:
        row = (
            await session.execute(select(Counter.value, Counter.version).where(Counter.id == id))
        ).one()
    return row[0], row[1]


async def _create(db: Database) -> None:
    async with db.session() as session:
        await CounterRepository(session).save(Counter(id=1, value=0))


class TestUpdate:
    async def test_expected_version_matches(self, db: Database) -> None:
        """update with the current expected_version writes and bumps the version."""
        await _create(db)
        async with db.session() as session:
            counter = await CounterRepository(session).update(1, {"value": 5}, expected_version=1)
            assert counter.version == 2
        assert await _row(db) == (5, 2)

    @pytest.mark.parametrize(
        "how", ["expected_version", "version-in-values"], ids=["argument", "values-key"]
    )
    async def test_stale_version_rejected(self, db: Database, how: str) -> None:
        """A stale version, as argument or as a values key, changes neither value nor version."""
        await _create(db)
        async with db.session() as session:
            await CounterRepository(session).update(1, {"value": 1})
        with pytest.raises(StaleVersionError) as info:
            async with db.session() as session:
                repo = CounterRepository(session)
                if how == "expected_version":
                    await repo.update(1, {"value": 99}, expected_version=1)
                else:
                    await repo.update(1, {"value": 99, "version": 1})
        assert (info.value.model, info.value.id, info.value.expected_version) == (Counter, 1, 1)
        assert await _row(db) == (1, 2)

    async def test_save_of_stale_entity(self, db: Database) -> None:
        """save() of an entity read before another writer committed raises StaleVersionError."""
        await _create(db)
        async with db.session() as session:
            stale = await CounterRepository(session).get_one(1)
        async with db.session() as session:
            await CounterRepository(session).update(1, {"value": 3})
        with pytest.raises(StaleVersionError) as info:
            async with db.session() as session:
                stale.value = 4
                await CounterRepository(session).save(stale)
        assert info.value.id == 1
        assert await _row(db) == (3, 2)


class TestConcurrentIncrements:
    async def test_no_lost_update(self, db: Database) -> None:
        """20 tasks x 5 read-modify-write increments with retry end at exactly +100."""
        await _create(db)
        tasks, increments = 20, 5
        conflicts = 0

        @retry_on_conflict(attempts=200, base_delay=0.002, max_delay=0.05)
        async def increment() -> None:
            nonlocal conflicts
            async with db.session() as session:
                repo = CounterRepository(session)
                current = await repo.get_one(1)
                try:
                    await repo.update(
                        1, {"value": current.value + 1}, expected_version=current.version
                    )
                except ConflictError:
                    # StaleVersionError, or on SQLite a SerializationError (busy snapshot)
                    conflicts += 1
                    raise

        async def worker() -> None:
            for _ in range(increments):
                await increment()

        await asyncio.gather(*(worker() for _ in range(tasks)))
        assert await _row(db) == (tasks * increments, tasks * increments + 1)
        # The run only proves something if writers actually collided.
        assert conflicts > 0
