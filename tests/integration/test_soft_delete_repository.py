"""Soft delete through SQLAlchemyRepository: reads hide deleted rows, deletes are soft."""

from __future__ import annotations

import pytest
from sqlalchemy import MetaData, select

from tests.integration.softdelete_models import Author, Book, SoftBase
from underlay import Database, DatabaseSession, NotFoundError, SQLAlchemyRepository


class AuthorRepository(SQLAlchemyRepository[Author]):
    pass


class BookRepository(SQLAlchemyRepository[Book]):
    pass


@pytest.fixture
def metadata() -> MetaData:
    return SoftBase.metadata


@pytest.fixture
async def seeded(db: Database) -> Database:
    """Authors 1 (ann) and 2 (bob), author 2 soft-deleted through the repository."""
    async with db.session() as session:
        authors = AuthorRepository(session)
        await authors.save_all(
            [Author(id=1, email="ann@example.com"), Author(id=2, email="bob@example.com")]
        )
    async with db.session() as session:
        await AuthorRepository(session).delete(2)
    return db


async def _raw_deleted_at(session: DatabaseSession, id: int) -> object:
    return await session.scalar(
        select(Author.deleted_at).where(Author.id == id).execution_options(include_deleted=True)
    )


class TestReads:
    async def test_reads_hide_deleted(self, seeded: Database) -> None:
        """get, get_one, list_all, count and exists leave the deleted row out."""
        async with seeded.session() as session:
            authors = AuthorRepository(session)
            assert await authors.get(2) is None
            with pytest.raises(NotFoundError):
                await authors.get_one(2)
            assert [a.id for a in await authors.list_all()] == [1]
            assert await authors.count() == 1
            assert await authors.exists(Author.id == 2) is False
            assert await authors.exists(Author.id == 1) is True
            page = await authors.page(order_by=Author.id)
            assert (page.total, [a.id for a in page.items]) == (1, [1])
            cursor_page = await authors.paginate(order_by=Author.id, limit=10)
            assert [a.id for a in cursor_page.items] == [1]

    async def test_include_deleted_reads(self, seeded: Database) -> None:
        """include_deleted=True on every read returns the deleted row too."""
        async with seeded.session() as session:
            authors = AuthorRepository(session)
            bob = await authors.get(2, include_deleted=True)
            assert bob is not None
            assert bob.is_deleted
            assert len(await authors.list_all(include_deleted=True)) == 2
            assert await authors.count(include_deleted=True) == 2
            assert await authors.exists(Author.id == 2, include_deleted=True) is True

    async def test_identity_map_case(self, db: Database) -> None:
        """An entity deleted earlier in the same session is not returned from the session."""
        async with db.session() as session:
            authors = AuthorRepository(session)
            ann = await authors.save(Author(email="ann@example.com"))
            await authors.delete(ann)
            assert await authors.get(ann.id) is None
            assert await session.get(Author, ann.id) is None
            assert await authors.get(ann.id, include_deleted=True) is ann


class TestDeletes:
    async def test_delete_is_soft_and_idempotent(self, seeded: Database) -> None:
        """A second delete keeps the first timestamp; the row is still in the table."""
        async with seeded.session() as session:
            first = await _raw_deleted_at(session, 2)
            assert first is not None
            await AuthorRepository(session).delete(2)
            assert await _raw_deleted_at(session, 2) == first
            version = await session.scalar(
                select(Author.version).where(Author.id == 2).execution_options(include_deleted=True)
            )
        # created at 1, bumped once by the first delete, not by the second
        assert version == 2

    async def test_restore(self, seeded: Database) -> None:
        """restore brings the row back into every read."""
        async with seeded.session() as session:
            bob = await AuthorRepository(session).restore(2)
            assert not bob.is_deleted
        async with seeded.session() as session:
            authors = AuthorRepository(session)
            assert await authors.count() == 2
            assert await authors.get(2) is not None

    async def test_hard_delete_removes_deleted_row(self, seeded: Database) -> None:
        """hard_delete removes a soft-deleted row from the table."""
        async with seeded.session() as session:
            await AuthorRepository(session).hard_delete(2)
        async with seeded.session() as session:
            assert await _raw_deleted_at(session, 2) is None
            assert await AuthorRepository(session).count(include_deleted=True) == 1

    async def test_delete_where_is_soft(self, db: Database) -> None:
        """delete_where marks the matching live rows deleted and reports how many."""
        async with db.session() as session:
            await AuthorRepository(session).save(Author(id=1, email="ann@example.com"))
            await BookRepository(session).save_all(
                [Book(title=f"t{n}", author_id=1) for n in range(3)]
            )
        async with db.session() as session:
            books = BookRepository(session)
            assert await books.delete_where(Book.title != "t0") == 2
            assert await books.delete_where(Book.title != "t0") == 0
        async with db.session() as session:
            books = BookRepository(session)
            assert [b.title for b in await books.list_all()] == ["t0"]
            assert await books.count(include_deleted=True) == 3

    async def test_email_reusable_after_delete(self, seeded: Database) -> None:
        """The live-row unique index lets a new author take a deleted author's email."""
        async with seeded.session() as session:
            authors = AuthorRepository(session)
            await authors.save(Author(id=3, email="bob@example.com"))
            live = await authors.list_all(Author.email == "bob@example.com")
            assert [a.id for a in live] == [3]
