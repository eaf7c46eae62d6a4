"""No hidden IO: lazy loads in async code raise at once, named; counted by assert_max_queries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import ClassVar

import pytest
from sqlalchemy import ForeignKey, String, select
from sqlalchemy.orm import Mapped, joinedload, mapped_column, relationship, selectinload

from tests.conftest import Backend, reset_schema
from tests.integration.models import new_base
from underlay import Database, LazyLoadError, SQLAlchemyRepository
from underlay.testing import assert_max_queries, count_queries

LazyBase = new_base()


class Shelf(LazyBase):
    __tablename__ = "lz_shelves"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    books: Mapped[list[Book]] = relationship(back_populates="shelf")


class Book(LazyBase):
    __tablename__ = "lz_books"

    id: Mapped[int] = mapped_column(primary_key=True)
    shelf_id: Mapped[int] = mapped_column(ForeignKey("lz_shelves.id"))
    shelf: Mapped[Shelf] = relationship(back_populates="books")


class Note(LazyBase):
    """A model that opts in alone."""

    __tablename__ = "lz_notes"
    __raise_on_lazy_load__ = True

    id: Mapped[int] = mapped_column(primary_key=True)
    shelf_id: Mapped[int] = mapped_column(ForeignKey("lz_shelves.id"))
    shelf: Mapped[Shelf] = relationship()


class ShelfRepository(SQLAlchemyRepository[Shelf]):
    loader_options: ClassVar = {"list_all": [selectinload(Shelf.books)]}


async def _database(backend: Backend, *, strict: bool) -> Database:
    db = Database(backend.url, raise_on_lazy_load=strict)
    await reset_schema(db)
    await db.create_all(LazyBase.metadata)
    async with db.session() as session:
        shelves = [Shelf(id=i, name=f"s{i}") for i in range(1, 4)]
        session.add_all(shelves)
        session.add_all([Book(id=i, shelf_id=1 + i % 3) for i in range(1, 7)])
        session.add(Note(id=1, shelf_id=1))
    return db


@pytest.fixture
async def strict_db(backend: Backend) -> AsyncIterator[Database]:
    db = await _database(backend, strict=True)
    yield db
    await db.dispose()


@pytest.fixture
async def lenient_db(backend: Backend) -> AsyncIterator[Database]:
    db = await _database(backend, strict=False)
    yield db
    await db.dispose()


class TestRaiseOnLazyLoad:
    async def test_collection_names_relationship_and_fix(self, strict_db: Database) -> None:
        """An unloaded collection raises LazyLoadError naming selectinload, with no SQL sent."""
        async with strict_db.session() as session:
            shelf = (await session.execute(select(Shelf).where(Shelf.id == 1))).scalar_one()
            with count_queries() as counter, pytest.raises(LazyLoadError) as caught:
                _ = shelf.books
            assert counter.count == 0
        assert caught.value.attribute == "Shelf.books"
        assert "selectinload(Shelf.books)" in str(caught.value)

    async def test_scalar_names_joinedload(self, strict_db: Database) -> None:
        """An unloaded many-to-one raises, suggesting joinedload."""
        async with strict_db.session() as session:
            book = (await session.execute(select(Book).where(Book.id == 1))).scalar_one()
            with pytest.raises(LazyLoadError, match=r"joinedload\(Book.shelf\)"):
                _ = book.shelf

    async def test_expired_attribute(self, strict_db: Database) -> None:
        """Reading an expired attribute in async code raises, pointing at refresh."""
        async with strict_db.session() as session:
            shelf = (await session.execute(select(Shelf).where(Shelf.id == 1))).scalar_one()
            session.expire(shelf)
            with pytest.raises(LazyLoadError, match=r"session\.refresh"):
                _ = shelf.name
            await session.refresh(shelf)
            assert shelf.name == "s1"

    async def test_loaded_and_awaited_loads_work(self, strict_db: Database) -> None:
        """Loader options and awaitable_attrs (explicit, awaited IO) are not refused."""
        async with strict_db.session() as session:
            statement = select(Shelf).options(selectinload(Shelf.books)).order_by(Shelf.id)
            shelves = (await session.execute(statement)).scalars().all()
            assert [len(s.books) for s in shelves] == [2, 2, 2]
            book = (
                await session.execute(
                    select(Book).options(joinedload(Book.shelf)).where(Book.id == 2)
                )
            ).scalar_one()
            assert book.shelf.name == "s3"
            other = (await session.execute(select(Book).where(Book.id == 3))).scalar_one()
            assert (await other.awaitable_attrs.shelf).id == 1

    async def test_model_opt_in(self, lenient_db: Database) -> None:
        """A model with __raise_on_lazy_load__ raises even when the database does not."""
        async with lenient_db.session() as session:
            note = (await session.execute(select(Note))).scalar_one()
            with pytest.raises(LazyLoadError, match=r"Note\.shelf"):
                _ = note.shelf

    async def test_repository_default_loader_options(self, strict_db: Database) -> None:
        """A repository's declared loader options apply to its method's reads."""
        async with strict_db.session() as session:
            shelves = await ShelfRepository(session).list_all(order_by=Shelf.id)
            assert [len(s.books) for s in shelves] == [2, 2, 2]


class TestQueryCounterSeesLazyLoads:
    async def test_assert_max_queries_names_lazy_loads(self, lenient_db: Database) -> None:
        """assert_max_queries lists the relationships that were lazy-loaded (the N+1)."""
        async with lenient_db.session() as session:
            shelves = (await session.execute(select(Shelf).order_by(Shelf.id))).scalars().all()
            with pytest.raises(AssertionError, match=r"lazy loads .*Shelf.books x3"):
                async with assert_max_queries(1):
                    for shelf in shelves:
                        await shelf.awaitable_attrs.books

    async def test_counter_records_lazy_loads(self, lenient_db: Database) -> None:
        """count_queries records each lazy load by name."""
        async with lenient_db.session() as session:
            book = (await session.execute(select(Book).where(Book.id == 1))).scalar_one()
            async with count_queries() as counter:
                await book.awaitable_attrs.shelf
            assert counter.lazy_loads == ["Book.shelf"]
