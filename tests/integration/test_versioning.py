"""Optimistic locking through the ORM: conflicts are caught, named, and never lose an update."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import MetaData, select, update
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from tests.integration.softdelete_models import Author, Counter, SoftBase
from underlay import Database, InvalidQueryError, StaleVersionError, enable_versioning


@pytest.fixture
def metadata() -> MetaData:
    return SoftBase.metadata


async def _counter(db: Database, value: int = 0, id: int = 1) -> Counter:
    async with db.session() as session:
        counter = Counter(id=id, value=value)
        session.add(counter)
    return counter


async def _row(db: Database, id: int = 1) -> tuple[int, int]:
    async with db.session() as session:
        row = (
            await session.execute(select(Counter.value, Counter.version).where(Counter.id == id))
        ).one()
    return row[0], row[1]


class TestTwoSessions:
    async def test_second_writer_gets_stale_version(self, db: Database) -> None:
        """Two sessions edit one row: the second commit raises and the first write stands."""
        await _counter(db)
        async with db.session() as first_session:
            first = await first_session.get(Counter, 1)
        async with db.session() as second_session:
            second = await second_session.get(Counter, 1)
        assert first is not None
        assert second is not None

        async with db.session() as session:
            session.add(first)
            first.value = 10
        with pytest.raises(StaleVersionError) as info:
            async with db.session() as session:
                session.add(second)
                second.value = 20

        assert await _row(db) == (10, 2)
        assert info.value.model is Counter
        assert info.value.id == 1
        assert info.value.expected_version == 1
        assert isinstance(info.value.__cause__, StaleDataError)

    async def test_conflict_at_explicit_flush_names_row(self, db: Database) -> None:
        """A conflict found by an explicit flush carries the model and id."""
        await _counter(db, id=7)
        async with db.session() as session:
            stale = await session.get(Counter, 7)
        async with db.session() as session:
            await session.execute(update(Counter).where(Counter.id == 7).values(value=1))
        with pytest.raises(StaleVersionError) as info:
            async with db.session() as session:
                session.add(stale)
                assert stale is not None
                stale.value = 99
                await session.flush()
        assert (info.value.model, info.value.id) == (Counter, 7)
        assert await _row(db, 7) == (1, 2)

    async def test_conflict_at_autoflush_names_row(self, db: Database) -> None:
        """A conflict surfacing in the autoflush of a query is a StaleVersionError too."""
        await _counter(db)
        async with db.session() as session:
            stale = await session.get(Counter, 1)
        async with db.session() as session:
            await session.execute(update(Counter).values(value=5))
        with pytest.raises(StaleVersionError) as info:
            async with db.session() as session:
                session.add(stale)
                assert stale is not None
                stale.value = 6
                await session.scalars(select(Counter))
        assert info.value.model is Counter
        assert await _row(db) == (5, 2)

    async def test_stale_delete_is_rejected(self, db: Database) -> None:
        """Deleting a row that changed since it was read raises and deletes nothing."""
        await _counter(db)
        async with db.session() as session:
            stale = await session.get(Counter, 1)
        async with db.session() as session:
            await session.execute(update(Counter).values(value=3))
        with pytest.raises(StaleVersionError) as info:
            async with db.session() as session:
                await session.delete(stale)
        assert info.value.id == 1
        assert await _row(db) == (3, 2)

    async def test_names_the_stale_row_among_several(self, db: Database) -> None:
        """With several versioned rows in one flush, the error names the one that was stale."""
        for id in (1, 2, 3):
            await _counter(db, id=id)
        async with db.session() as session:
            held = (await session.scalars(select(Counter).order_by(Counter.id))).all()
        async with db.session() as session:
            await session.execute(update(Counter).where(Counter.id == 2).values(value=50))
        with pytest.raises(StaleVersionError) as info:
            async with db.session() as session:
                session.add_all(held)
                for counter in held:
                    counter.value = 7
        assert (info.value.model, info.value.id, info.value.expected_version) == (Counter, 2, 1)
        assert [await _row(db, id) for id in (1, 2, 3)] == [(0, 1), (50, 2), (0, 1)]

    async def test_unidentified_stale_row_still_names_model(self) -> None:
        """In-memory SQLite (one shared connection) cannot look rows up: the model is named."""
        async with Database("sqlite+aiosqlite:///:memory:") as db:
            await db.create_all(SoftBase.metadata)
            for id in (1, 2):
                await _counter(db, id=id)
            async with db.session() as session:
                held = (await session.scalars(select(Counter).order_by(Counter.id))).all()
            async with db.session() as session:
                await session.execute(update(Counter).where(Counter.id == 2).values(value=5))
            with pytest.raises(StaleVersionError) as info:
                async with db.session() as session:
                    session.add_all(held)
                    for counter in held:
                        counter.value = 7
            assert (info.value.model, info.value.id) == (Counter, None)
            assert [await _row(db, id) for id in (1, 2)] == [(0, 1), (5, 2)]


class TestAssignedVersion:
    async def test_assigned_stale_version_is_rejected(self, db: Database) -> None:
        """entity.version = <stale> is the expected version: the write fails, nothing moves."""
        await _counter(db)
        async with db.session() as session:
            await session.execute(update(Counter).values(value=1))
            await session.execute(update(Counter).values(value=2))
        assert await _row(db) == (2, 3)
        with pytest.raises(StaleVersionError) as info:
            async with db.session() as session:
                counter = await session.get(Counter, 1)
                assert counter is not None
                counter.version = 1  # what a client read long ago
                counter.value = 100
        assert info.value.expected_version == 1
        assert await _row(db) == (2, 3)

    async def test_merge_of_stale_copy_is_rejected(self, db: Database) -> None:
        """merge() of a detached copy carrying an old version (load-then-copy) is refused."""
        await _counter(db)
        async with db.session() as session:
            await session.execute(update(Counter).values(value=1))
        with pytest.raises(StaleVersionError):
            async with db.session() as session:
                await session.merge(Counter(id=1, value=50, version=1))
        assert await _row(db) == (1, 2)

    async def test_assigned_current_version_bumps(self, db: Database) -> None:
        """Assigning the current version is accepted and the version still moves forward."""
        await _counter(db)
        async with db.session() as session:
            counter = await session.get(Counter, 1)
            assert counter is not None
            counter.version = 1
            counter.value = 5
        assert counter.version == 2
        assert await _row(db) == (5, 2)

    async def test_version_never_moves_backwards(self, db: Database) -> None:
        """A lower assigned version never becomes the row's version, even without other edits."""
        await _counter(db)
        async with db.session() as session:
            await session.execute(update(Counter).values(value=1))
        async with db.session() as session:
            counter = await session.get(Counter, 1)
            assert counter is not None
            counter.version = 1
        assert await _row(db) == (1, 2)


class TestBulkUpdate:
    async def test_multi_row_update_bumps_each_version(self, db: Database) -> None:
        """An ORM update(Model).where(...) bumps the version of every row it changes."""
        for id in (1, 2, 3):
            await _counter(db, id=id)
        async with db.session() as session:
            await session.execute(update(Counter).where(Counter.id <= 2).values(value=9))
        assert [await _row(db, id) for id in (1, 2, 3)] == [(9, 2), (9, 2), (0, 1)]

    async def test_version_in_values_is_expected_version(self, db: Database) -> None:
        """values(version=v) matches rows at version v only and bumps them; never sets v."""
        await _counter(db, id=1)
        await _counter(db, id=2)
        async with db.session() as session:
            await session.execute(update(Counter).where(Counter.id == 2).values(value=1))
        async with db.session() as session:
            result = await session.execute(update(Counter).values(value=7, version=1))
            assert result.rowcount == 1  # type: ignore[attr-defined]
        assert await _row(db, 1) == (7, 2)
        assert await _row(db, 2) == (1, 2)

    async def test_version_expression_cannot_move_backwards(self, db: Database) -> None:
        """A version expression in values is replaced by version + 1."""
        await _counter(db)
        async with db.session() as session:
            await session.execute(update(Counter).values(value=1))
        async with db.session() as session:
            await session.execute(update(Counter).values(value=2, version=Counter.version - 5))
        assert await _row(db) == (2, 3)

    async def test_loaded_objects_follow_bulk_bump(self, db: Database) -> None:
        """Objects in the session get the bumped version, so their next flush does not conflict."""
        await _counter(db)
        async with db.session() as session:
            counter = await session.get(Counter, 1)
            assert counter is not None
            await session.execute(update(Counter).where(Counter.id == 1).values(value=3))
            assert counter.version == 2
            counter.value = 4
        assert await _row(db) == (4, 3)

    async def test_bulk_by_primary_key_checks_versions(self, db: Database) -> None:
        """update(Model) with rows by primary key matches each row on its given version."""
        await _counter(db)
        async with db.session() as session:
            await session.execute(update(Counter), [{"id": 1, "value": 5, "version": 1}])
        assert await _row(db) == (5, 2)
        with pytest.raises(StaleVersionError) as info:
            async with db.session() as session:
                await session.execute(update(Counter), [{"id": 1, "value": 6, "version": 1}])
        assert info.value.model is Counter
        assert await _row(db) == (5, 2)

    async def test_bulk_by_primary_key_needs_versions(self, db: Database) -> None:
        """Rows by primary key without a version are refused before any SQL."""
        await _counter(db)
        with pytest.raises(InvalidQueryError, match="version"):
            async with db.session() as session:
                await session.execute(update(Counter), [{"id": 1, "value": 5}])
        assert await _row(db) == (0, 1)

    async def test_ordered_values_are_refused(self, db: Database) -> None:
        """ordered_values() on a versioned model is refused rather than left unversioned."""
        await _counter(db)
        with pytest.raises(InvalidQueryError, match="ordered_values"):
            async with db.session() as session:
                await session.execute(update(Counter).ordered_values((Counter.value, 1)))
        assert await _row(db) == (0, 1)

    async def test_core_table_update_is_bumped(self, db: Database) -> None:
        """A Core update of the Table, unchecked, still moves the version by one."""
        await _counter(db)
        async with db.session() as session:
            table = Counter.__table__
            await session.execute(update(table).values(value=8))
        assert await _row(db) == (8, 2)

    async def test_core_update_on_raw_connection_is_bumped(self, db: Database) -> None:
        """A Core update outside any session bumps the version as well."""
        await _counter(db)
        async with db.engine.begin() as conn:
            await conn.execute(update(Counter.__table__).values(value=3))
        assert await _row(db) == (3, 2)

    async def test_soft_deleted_versioned_rows_untouched(self, db: Database) -> None:
        """A bulk update of a model with both mixins skips deleted rows and bumps live ones."""
        async with db.session() as session:
            session.add_all([Author(id=1, email="a@x"), Author(id=2, email="b@x")])
        async with db.session() as session:
            await session.execute(
                update(Author).where(Author.id == 2).values(deleted_at=datetime.now(UTC))
            )
            await session.execute(update(Author).values(name="bulk"))
        async with db.session() as session:
            rows = await session.execute(
                select(Author.id, Author.name, Author.version)
                .order_by(Author.id)
                .execution_options(include_deleted=True)
            )
            assert [tuple(r) for r in rows] == [(1, "bulk", 2), (2, "", 2)]


class TestOtherSessions:
    async def test_enable_versioning_on_own_sessionmaker(self, db: Database) -> None:
        """enable_versioning gives an own sessionmaker the version guard and the bulk bump."""
        await _counter(db)
        maker = async_sessionmaker(db.engine, expire_on_commit=False)
        enable_versioning(maker)
        async with maker() as session, session.begin():
            await session.execute(update(Counter).values(value=1))
        assert await _row(db) == (1, 2)
        async with maker() as session:
            counter = await session.get(Counter, 1)
            assert counter is not None
            counter.version = 1
            counter.value = 2
            # Outside Database sessions the conflict stays SQLAlchemy's own error.
            with pytest.raises(StaleDataError):
                await session.commit()
        assert await _row(db) == (1, 2)
