"""Soft-deleted rows stay out of every ORM read of a Database session, on every backend."""

from __future__ import annotations

import pickle
from datetime import UTC, datetime

import pytest
from sqlalchemy import MetaData, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, joinedload, selectinload

from tests.integration.softdelete_models import Author, Book, SoftBase
from underlay import Database, DuplicateError, enable_soft_delete


@pytest.fixture
def metadata() -> MetaData:
    return SoftBase.metadata


def _now() -> datetime:
    return datetime.now(UTC)


async def _seed(db: Database) -> None:
    """Ann (live) with books 1 (live) and 2 (deleted); Bob (live) with only deleted book 3;
    Cat (deleted) with live book 4."""
    async with db.session() as session:
        session.add_all(
            [
                Author(
                    id=1,
                    email="ann@example.com",
                    books=[Book(id=1, title="a1"), Book(id=2, title="a2", deleted_at=_now())],
                ),
                Author(
                    id=2,
                    email="bob@example.com",
                    books=[Book(id=3, title="b1", deleted_at=_now())],
                ),
                Author(
                    id=3,
                    email="cat@example.com",
                    deleted_at=_now(),
                    books=[Book(id=4, title="c1")],
                ),
            ]
        )


class TestSelects:
    async def test_plain_select_hides_deleted(self, db: Database) -> None:
        """A plain ORM SELECT returns only live rows."""
        await _seed(db)
        async with db.session() as session:
            ids = (await session.scalars(select(Author.id).order_by(Author.id))).all()
            books = (await session.scalars(select(Book).order_by(Book.id))).all()
        assert ids == [1, 2]
        assert [b.id for b in books] == [1, 4]

    async def test_count_hides_deleted(self, db: Database) -> None:
        """count(*) over an entity counts live rows only."""
        await _seed(db)
        async with db.session() as session:
            total = await session.scalar(select(func.count()).select_from(Author))
            exists = await session.scalar(select(select(Author).where(Author.id == 3).exists()))
        assert total == 2
        assert exists is False

    async def test_statement_option_lifts_filter(self, db: Database) -> None:
        """execution_options(include_deleted=True) on the statement returns deleted rows too."""
        await _seed(db)
        async with db.session() as session:
            ids = (
                await session.scalars(
                    select(Author.id).order_by(Author.id).execution_options(include_deleted=True)
                )
            ).all()
            via_call = (
                await session.scalars(
                    select(Book.id).order_by(Book.id),
                    execution_options={"include_deleted": True},
                )
            ).all()
        assert ids == [1, 2, 3]
        assert via_call == [1, 2, 3, 4]

    @pytest.mark.skipif(
        not hasattr(Session, "execution_options"), reason="session-wide options need SA 2.1"
    )
    async def test_session_option_lifts_filter(self, db: Database) -> None:
        """A session made with execution_options include_deleted=True sees deleted rows."""
        await _seed(db)
        async with db.sessionmaker(execution_options={"include_deleted": True}) as session:
            ids = (await session.scalars(select(Author.id).order_by(Author.id))).all()
            cat = await session.get(Author, 3)
        assert ids == [1, 2, 3]
        assert cat is not None

    async def test_subquery_hides_deleted(self, db: Database) -> None:
        """A subquery over an entity is filtered too: Bob's only book is deleted."""
        await _seed(db)
        async with db.session() as session:
            with_books = select(Book.author_id)
            ids = (
                await session.scalars(
                    select(Author.id).where(Author.id.in_(with_books)).order_by(Author.id)
                )
            ).all()
        assert ids == [1]

    async def test_cte_and_union_hide_deleted(self, db: Database) -> None:
        """CTEs and UNIONs of ORM selects are filtered in each part."""
        await _seed(db)
        async with db.session() as session:
            live_books = select(Book.author_id.label("author_id")).cte("live_books")
            via_cte = (
                await session.scalars(
                    select(Author.id).join(live_books, live_books.c.author_id == Author.id)
                )
            ).all()
            union = select(Author.id).where(Author.id >= 2).union(select(Book.id))
            via_union = sorted((await session.scalars(union)).all())
        assert via_cte == [1]
        assert via_union == [1, 2, 4]

    async def test_core_table_select_is_not_filtered(self, db: Database) -> None:
        """A Core select of the Table (documented as not covered) still sees every row."""
        await _seed(db)
        async with db.session() as session:
            rows = (await session.execute(select(Author.__table__.c.id))).all()
        assert len(rows) == 3


class TestRelationshipLoads:
    async def test_selectin_load_hides_deleted_children(self, db: Database) -> None:
        """selectinload brings only live children."""
        await _seed(db)
        async with db.session() as session:
            authors = (
                await session.scalars(
                    select(Author).options(selectinload(Author.books)).order_by(Author.id)
                )
            ).all()
            loaded = {a.id: [b.id for b in a.books] for a in authors}
        assert loaded == {1: [1], 2: []}

    async def test_joined_load_keeps_parent_without_live_children(self, db: Database) -> None:
        """joinedload filters children in the ON clause: Bob stays, with no books."""
        await _seed(db)
        async with db.session() as session:
            authors = (
                (
                    await session.scalars(
                        select(Author).options(joinedload(Author.books)).order_by(Author.id)
                    )
                )
                .unique()
                .all()
            )
            loaded = {a.id: [b.id for b in a.books] for a in authors}
        assert loaded == {1: [1], 2: []}

    async def test_include_deleted_reaches_selectin_children(self, db: Database) -> None:
        """include_deleted on the parent query also returns deleted children of selectinload."""
        await _seed(db)
        async with db.session() as session:
            authors = (
                await session.scalars(
                    select(Author)
                    .options(selectinload(Author.books))
                    .order_by(Author.id)
                    .execution_options(include_deleted=True)
                )
            ).all()
            loaded = {a.id: [b.id for b in a.books] for a in authors}
        assert loaded == {1: [1, 2], 2: [3], 3: [4]}

    async def test_lazy_load_hides_deleted_children(self, db: Database) -> None:
        """A lazy load from a queried parent returns only live children."""
        await _seed(db)
        async with db.session() as session:
            ann = (await session.scalars(select(Author).where(Author.id == 1))).one()
            books = await ann.awaitable_attrs.books
        assert [b.id for b in books] == [1]

    async def test_lazy_load_of_object_not_loaded_by_query(self, db: Database) -> None:
        """An object that was never queried (created here, then expired) lazy-loads live rows."""
        async with db.session() as session:
            author = Author(id=9, email="new@example.com")
            session.add(author)
            await session.flush()
            session.add_all(
                [
                    Book(title="live", author_id=9),
                    Book(title="gone", author_id=9, deleted_at=_now()),
                ]
            )
            await session.flush()
            session.expire(author, ["books"])
            books = await author.awaitable_attrs.books
        assert [b.title for b in books] == ["live"]

    async def test_lazy_load_ignores_parent_include_deleted(self, db: Database) -> None:
        """Lazy loads do not inherit include_deleted from the query that loaded the parent."""
        await _seed(db)
        async with db.session() as session:
            cat = (
                await session.scalars(
                    select(Author).where(Author.id == 1).execution_options(include_deleted=True)
                )
            ).one()
            books = await cat.awaitable_attrs.books
        assert [b.id for b in books] == [1]

    async def test_loaded_entities_pickle(self, db: Database) -> None:
        """Entities carrying the criterion in their load options can be pickled and merged."""
        await _seed(db)
        async with db.session() as session:
            ann = (await session.scalars(select(Author).where(Author.id == 1))).one()
            copy = pickle.loads(pickle.dumps(ann))  # noqa: S301 - our own bytes
        async with db.session() as session:
            merged = await session.merge(copy)
            books = await merged.awaitable_attrs.books
        assert [b.id for b in books] == [1]


class TestWrites:
    async def test_bulk_update_skips_deleted(self, db: Database) -> None:
        """An ORM-enabled multi-row UPDATE leaves soft-deleted rows alone."""
        await _seed(db)
        async with db.session() as session:
            result = await session.execute(update(Book).values(title="renamed"))
            assert result.rowcount == 2  # type: ignore[attr-defined]
        async with db.session() as session:
            rows = await session.execute(
                select(Book.id, Book.title).execution_options(include_deleted=True)
            )
            titles = dict(rows.all())
        assert titles == {1: "renamed", 2: "a2", 3: "b1", 4: "renamed"}

    async def test_bulk_delete_skips_deleted(self, db: Database) -> None:
        """An ORM-enabled DELETE removes only live rows unless include_deleted is given."""
        await _seed(db)
        async with db.session() as session:
            await session.execute(delete(Book).where(Book.author_id == 1))
        async with db.session() as session:
            left = (
                await session.scalars(
                    select(Book.id).order_by(Book.id).execution_options(include_deleted=True)
                )
            ).all()
            assert left == [2, 3, 4]
            await session.execute(
                delete(Book).where(Book.author_id == 1).execution_options(include_deleted=True)
            )
            everything = await session.scalars(
                select(Book.id).order_by(Book.id).execution_options(include_deleted=True)
            )
            assert everything.all() == [3, 4]

    async def test_live_unique_index_allows_reuse_after_delete(self, db: Database) -> None:
        """An email may be reused once its row is soft-deleted, never by two live rows."""
        async with db.session() as session:
            session.add(Author(email="reuse@example.com"))
        async with db.session() as session:
            await session.execute(
                update(Author).where(Author.email == "reuse@example.com").values(deleted_at=_now())
            )
            session.add(Author(email="reuse@example.com"))
        with pytest.raises(DuplicateError):
            async with db.session() as session:
                session.add(Author(email="reuse@example.com"))
        async with db.session() as session:
            rows = await session.scalar(
                select(func.count())
                .select_from(Author)
                .where(Author.email == "reuse@example.com")
                .execution_options(include_deleted=True)
            )
        assert rows == 2


class TestIdentityMap:
    async def test_get_hides_row_deleted_in_same_session(self, db: Database) -> None:
        """session.get does not return a row soft-deleted earlier in the same session."""
        await _seed(db)
        async with db.session() as session:
            ann = await session.get(Author, 1)
            assert ann is not None
            ann.deleted_at = _now()
            await session.flush()
            assert await session.get(Author, 1) is None
            again = await session.get(Author, 1, execution_options={"include_deleted": True})
            assert again is ann

    async def test_get_hides_row_deleted_by_bulk_update(self, db: Database) -> None:
        """A bulk soft delete synchronises the identity map, so get returns None afterwards."""
        await _seed(db)
        async with db.session() as session:
            ann = await session.get(Author, 1)
            assert ann is not None
            await session.execute(update(Author).where(Author.id == 1).values(deleted_at=_now()))
            assert await session.get(Author, 1) is None

    async def test_get_of_deleted_row_not_in_identity_map(self, db: Database) -> None:
        """A deleted row that is not loaded yet is not found by get."""
        await _seed(db)
        async with db.session() as session:
            assert await session.get(Author, 3) is None
            assert await session.get(Book, 2) is None

    async def test_get_populate_existing_sees_delete_by_other_session(self, db: Database) -> None:
        """get(populate_existing=True) re-reads the row and finds it deleted by someone else."""
        await _seed(db)
        async with db.sessionmaker() as session:
            ann = await session.get(Author, 1)
            assert ann is not None
            await session.commit()  # ann stays in the identity map (no expire on commit)
            async with db.session() as other:
                await other.execute(update(Author).where(Author.id == 1).values(deleted_at=_now()))
            assert await session.get(Author, 1) is ann  # the identity map answers, no SQL
            assert await session.get(Author, 1, populate_existing=True) is None

    async def test_refresh_of_deleted_object_shows_its_state(self, db: Database) -> None:
        """Refreshing an object you hold after it was soft-deleted loads it, deleted_at set."""
        await _seed(db)
        async with db.session() as session:
            ann = await session.get(Author, 1)
            assert ann is not None
        async with db.session() as other:
            await other.execute(update(Author).where(Author.id == 1).values(deleted_at=_now()))
        async with db.session() as session:
            session.add(ann)
            await session.refresh(ann)
            assert ann.is_deleted


class TestOtherSessions:
    async def test_enable_on_own_sessionmaker(self, db: Database) -> None:
        """enable_soft_delete filters an own async_sessionmaker, and only that one."""
        await _seed(db)
        plain = async_sessionmaker(db.engine)
        filtered = async_sessionmaker(db.engine)
        enable_soft_delete(filtered)
        enable_soft_delete(filtered)  # idempotent
        async with plain() as session:
            unfiltered_ids = (await session.scalars(select(Author.id))).all()
        async with filtered() as session:
            filtered_ids = (await session.scalars(select(Author.id))).all()
        assert sorted(unfiltered_ids) == [1, 2, 3]
        assert sorted(filtered_ids) == [1, 2]

    async def test_enable_on_single_session(self, db: Database) -> None:
        """enable_soft_delete on one AsyncSession filters that session only."""
        await _seed(db)
        async with AsyncSession(db.engine) as one, AsyncSession(db.engine) as other:
            enable_soft_delete(one)
            assert len((await one.scalars(select(Author))).all()) == 2
            assert len((await other.scalars(select(Author))).all()) == 3
