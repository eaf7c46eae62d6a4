"""Upserts, bulk inserts and deletes of SQLAlchemyRepository on every backend."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pydantic import BaseModel
from sqlalchemy import MetaData, func, select, true
from sqlalchemy.orm import selectinload

from tests.conftest import Backend
from tests.integration.repo_models import (
    Article,
    ArticleRepository,
    Author,
    AuthorRepository,
    MemberRepository,
    Reading,
    ReadingRepository,
    RepoBase,
    TagRepository,
)
from underlay import (
    Database,
    DuplicateError,
    InvalidQueryError,
    NotFoundError,
    StaleVersionError,
)
from underlay.testing import assert_max_queries, count_queries, record_transactions


@pytest.fixture
def metadata() -> MetaData:
    return RepoBase.metadata


class TestUpsert:
    async def test_insert_then_update(self, db: Database) -> None:
        """The first upsert inserts at version 1; the next updates, bumping version."""
        async with db.session() as session:
            repo = ArticleRepository(session)
            created = await repo.upsert({"slug": "a", "title": "first"}, conflict_on=["slug"])
            assert (created.title, created.version) == ("first", 1)
        await asyncio.sleep(0.01)
        async with db.session() as session:
            repo = ArticleRepository(session)
            updated = await repo.upsert({"slug": "a", "title": "second"}, conflict_on=["slug"])
            assert updated.id == created.id
            assert (updated.title, updated.version) == ("second", 2)
            assert updated.updated_at > created.updated_at
            assert updated.created_at == created.created_at
            assert await repo.count() == 1

    async def test_update_branch_keeps_columns_not_given(self, db: Database) -> None:
        """Columns the upsert does not name keep their stored values."""
        async with db.session() as session:
            repo = ArticleRepository(session)
            await repo.upsert({"slug": "a", "title": "t", "views": 7}, conflict_on=["slug"])
            again = await repo.upsert({"slug": "a", "title": "t2"}, conflict_on=["slug"])
            assert again.views == 7

    async def test_refreshes_loaded_entity(self, db: Database) -> None:
        """An entity already in the session shows the upserted values."""
        async with db.session() as session:
            repo = ArticleRepository(session)
            first = await repo.upsert({"slug": "a", "title": "one"}, conflict_on=["slug"])
            second = await repo.upsert({"slug": "a", "title": "two"}, conflict_on=["slug"])
            assert second is first
            assert first.title == "two"

    async def test_from_schema(self, db: Database) -> None:
        """A Pydantic model is accepted as the upserted values."""

        class ArticleIn(BaseModel):
            slug: str
            title: str

        async with db.session() as session:
            article = await ArticleRepository(session).upsert(
                ArticleIn(slug="p", title="from schema"), conflict_on=["slug"]
            )
        assert article.title == "from schema"

    async def test_upsert_many_merges_repeated_keys(self, db: Database) -> None:
        """upsert_many returns one entity per key; a repeated key's last row wins."""
        async with db.session() as session:
            repo = ArticleRepository(session)
            await repo.upsert({"slug": "b", "title": "old"}, conflict_on=["slug"])
            result = await repo.upsert_many(
                [
                    {"slug": "a", "title": "a1"},
                    {"slug": "b", "title": "b1"},
                    {"slug": "a", "title": "a2"},
                ],
                conflict_on=[Article.slug],
            )
            assert sorted((a.slug, a.title, a.version) for a in result) == [
                ("a", "a2", 1),
                ("b", "b1", 2),
            ]
            assert await repo.count() == 2

    async def test_composite_unique_key(self, db: Database) -> None:
        """A multi-column unique constraint can be the conflict target."""
        taken = datetime(2024, 5, 1, 12, tzinfo=UTC)
        async with db.session() as session:
            repo = ReadingRepository(session)
            first = await repo.upsert(
                {"sensor": "s", "taken_at": taken, "amount": Decimal("1.5")},
                conflict_on=["sensor", "taken_at"],
            )
            second = await repo.upsert(
                {"sensor": "s", "taken_at": taken, "amount": Decimal("2.25")},
                conflict_on=["sensor", "taken_at"],
            )
            assert second.id == first.id
            assert second.amount == Decimal("2.25")

    @pytest.mark.parametrize(
        ("values", "conflict_on"),
        [
            ({"slug": "a", "title": "t"}, ["title"]),
            ({"slug": "a", "title": "t"}, ["nope"]),
            ({"slug": "a", "title": "t"}, "slug"),
            ({"title": "t"}, ["slug"]),
            ({"slug": "a", "title": "t", "version": 5}, ["slug"]),
            ({"slug": "a", "bogus": 1}, ["slug"]),
        ],
        ids=["not-unique", "unknown", "bare-string", "key-missing", "version", "unknown-field"],
    )
    async def test_invalid_upserts_refused_before_sql(
        self, db: Database, values: dict[str, object], conflict_on: list[str]
    ) -> None:
        """Bad conflict targets or values raise InvalidQueryError without sending SQL."""
        async with db.session() as session:
            repo = ArticleRepository(session)
            with count_queries() as counter, pytest.raises(InvalidQueryError):
                await repo.upsert(values, conflict_on=conflict_on)
            assert counter.count == 0

    async def test_key_only_upsert_and_python_onupdate(self, db: Database) -> None:
        """An upsert naming only the key returns the existing row; on-update values apply."""
        async with db.session() as session:
            repo = TagRepository(session)
            first = await repo.upsert({"name": "x"}, conflict_on=["name"])
            assert (first.state, first.note) == ("new", "")
            again = await repo.upsert({"name": "x"}, conflict_on=["name"])
            assert again.id == first.id
            assert (again.state, again.note) == ("changed", "by callable")
            assert await repo.count() == 1

    async def test_partial_unique_index_as_target(self, db: Database) -> None:
        """Upserting on a live-only unique index updates the live row, never a deleted one."""
        async with db.session() as session:
            repo = MemberRepository(session)
            first = await repo.upsert(
                {"email": "m@example.com", "name": "A"}, conflict_on=["email"]
            )
            same = await repo.upsert({"email": "m@example.com", "name": "B"}, conflict_on=["email"])
            assert (same.id, same.name, same.version) == (first.id, "B", 2)
            await repo.delete(first.id)
            fresh = await repo.upsert(
                {"email": "m@example.com", "name": "C"}, conflict_on=["email"]
            )
            assert fresh.id != first.id
            assert (fresh.name, fresh.version) == ("C", 1)
            assert await repo.count(include_deleted=True) == 2

    async def test_concurrent_upserts_on_one_key(self, db: Database) -> None:
        """20 concurrent upserts of one key in separate sessions leave one row, no errors."""

        async def one(i: int) -> None:
            async with db.session() as session:
                await ArticleRepository(session).upsert(
                    {"slug": "hot", "title": f"writer {i}"}, conflict_on=["slug"]
                )

        await asyncio.gather(*(one(i) for i in range(20)))
        async with db.session() as session:
            rows = await ArticleRepository(session).list_all()
        assert len(rows) == 1
        assert rows[0].version == 20
        assert rows[0].title.startswith("writer ")


class TestInsertMany:
    async def test_values_path_counts_and_defaults(self, db: Database) -> None:
        """insert_many inserts mixed-key rows, filling Python and server defaults."""
        rows = [
            {"email": "a@example.com"},
            {"email": "b@example.com", "name": "B", "rank": 2},
            {"email": "c@example.com"},
        ]
        async with db.session() as session:
            assert await AuthorRepository(session).insert_many(rows, method="values") == 3
        async with db.session() as session:
            stored = await AuthorRepository(session).list_all(order_by="email")
        assert [(a.email, a.name, a.rank) for a in stored] == [
            ("a@example.com", "", 0),
            ("b@example.com", "B", 2),
            ("c@example.com", "", 0),
        ]
        assert all(a.created_at is not None for a in stored)

    async def test_versioned_rows_start_at_one(self, db: Database) -> None:
        """Bulk-inserted versioned rows start at version 1; a version field is refused."""
        async with db.session() as session:
            repo = ArticleRepository(session)
            await repo.insert_many([{"slug": f"s{i}", "title": "t"} for i in range(3)])
            assert {a.version for a in await repo.list_all()} == {1}
            with pytest.raises(InvalidQueryError):
                await repo.insert_many([{"slug": "x", "title": "t", "version": 3}])

    async def test_unknown_method_refused(self, db: Database) -> None:
        """An unknown method is an InvalidQueryError."""
        async with db.session() as session:
            with pytest.raises(InvalidQueryError):
                await AuthorRepository(session).insert_many(
                    [{"email": "x"}],
                    method="fast",  # type: ignore[arg-type]
                )

    async def test_accepts_schemas_and_empty(self, db: Database) -> None:
        """Pydantic rows are accepted; no rows is a no-op returning 0."""

        class AuthorIn(BaseModel):
            email: str

        async with db.session() as session:
            repo = AuthorRepository(session)
            with count_queries() as counter:
                assert await repo.insert_many([]) == 0
            assert counter.count == 0
            assert await repo.insert_many([AuthorIn(email="x@example.com")]) == 1
            assert await repo.count() == 1

    async def test_duplicate_rolls_back_whole_batch(self, db: Database) -> None:
        """A duplicate in the batch raises DuplicateError and inserts nothing."""
        with pytest.raises(DuplicateError):
            async with db.session() as session:
                await AuthorRepository(session).insert_many(
                    [{"email": "d@example.com"}, {"email": "d@example.com"}]
                )
        async with db.session() as session:
            assert await AuthorRepository(session).count() == 0

    async def test_copy_path(self, db: Database, backend: Backend) -> None:
        """method='copy' streams rows with COPY on asyncpg (defaults and types kept)."""
        taken = datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
        rows = [
            {"sensor": f"s{i}", "taken_at": taken, "amount": Decimal(f"{i}.0001")}
            for i in range(50)
        ]
        with record_transactions(db) as log:
            async with db.session() as session:
                repo = ReadingRepository(session)
                if not backend.is_postgres:
                    with pytest.raises(InvalidQueryError, match="asyncpg"):
                        await repo.insert_many(rows, method="copy")
                    return
                assert await repo.insert_many(rows, method="copy") == 50
        # COPY bypasses the session's events: the repository records it by hand
        assert [(w.model, w.ids, w.kind) for w in log.writes] == [(Reading, None, "write")]
        async with db.session() as session:
            stored = await ReadingRepository(session).list_all(order_by="amount")
        assert len(stored) == 50
        assert stored[7].amount == Decimal("7.0001")
        assert stored[7].taken_at == taken
        assert all(isinstance(r.id, uuid.UUID) for r in stored)
        assert len({r.id for r in stored}) == 50

    async def test_auto_uses_copy_for_large_batches(self, db: Database, backend: Backend) -> None:
        """method='auto' inserts a large batch (COPY on asyncpg) with server defaults applied."""
        rows = [{"email": f"u{i}@example.com", "rank": i % 5} for i in range(1500)]
        async with db.session() as session:
            with count_queries() as counter:
                assert await AuthorRepository(session).insert_many(rows) == 1500
            if backend.is_postgres:
                assert not any("INSERT" in sql for sql in counter.statements)
        async with db.session() as session:
            repo = AuthorRepository(session)
            assert await repo.count() == 1500
            assert await repo.count(Author.rank == 3) == 300
            first = await repo.one_or_none(Author.email == "u0@example.com")
            assert first is not None
            assert first.created_at is not None
            assert first.name == ""

    async def test_copy_rolls_back_with_transaction(self, db: Database) -> None:
        """Rows written by COPY belong to the session's transaction and roll back with it."""

        class BoomError(Exception):
            pass

        rows = [{"email": f"r{i}@example.com"} for i in range(1200)]
        with pytest.raises(BoomError):
            async with db.session() as session:
                await AuthorRepository(session).insert_many(rows)
                raise BoomError
        async with db.session() as session:
            assert await AuthorRepository(session).count() == 0

    async def test_bulk_duplicate_is_translated(self, db: Database, backend: Backend) -> None:
        """A unique violation in a bulk insert (COPY on asyncpg) raises DuplicateError."""
        method = "copy" if backend.is_postgres else "values"
        with pytest.raises(DuplicateError):
            async with db.session() as session:
                await AuthorRepository(session).insert_many(
                    [{"email": "same@example.com"}] * 2, method=method
                )


class TestWithoutReturning:
    async def test_update_delete_restore_without_update_returning(
        self, db: Database, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """On a backend without UPDATE ... RETURNING, the writes re-read the row instead."""
        monkeypatch.setattr(db.engine.dialect, "update_returning", False)
        async with db.session() as session:
            repo = ArticleRepository(session)
            article = await repo.save(Article(slug="a", title="one", views=1))
            updated = await repo.update(article.id, {"title": "two"}, expected_version=1)
            assert (updated.title, updated.version) == ("two", 2)
            with pytest.raises(StaleVersionError):
                await repo.update(article.id, {"title": "x"}, expected_version=1)
            await repo.delete(article.id)
            assert article.deleted_at is not None
            assert (await repo.restore(article.id)).deleted_at is None
            assert await repo.delete_where(Article.views == 1) == 1
            assert await repo.count() == 0


class TestDelete:
    async def _articles(self, db: Database, count: int) -> list[Article]:
        async with db.session() as session:
            return await ArticleRepository(session).save_all(
                Article(slug=f"s{i}", title=f"t{i}", views=i) for i in range(count)
            )

    async def test_soft_delete_is_idempotent(self, db: Database) -> None:
        """A second delete keeps the first timestamp; the row stays in the table."""
        (article,) = await self._articles(db, 1)
        async with db.session() as session:
            await ArticleRepository(session).delete(article.id)
        async with db.session() as session:
            repo = ArticleRepository(session)
            first = await repo.get_one(article.id, include_deleted=True)
            stamp = first.deleted_at
            assert stamp is not None
            await repo.delete(article.id)
            again = await repo.get_one(article.id, include_deleted=True)
            assert again.deleted_at == stamp
            total = await session.scalar(select(func.count()).select_from(Article.__table__))
            assert total == 1

    async def test_every_read_hides_soft_deleted_rows(self, db: Database) -> None:
        """Every read skips soft-deleted rows unless include_deleted=True."""
        kept, gone = await self._articles(db, 2)
        async with db.session() as session:
            await ArticleRepository(session).delete(gone.id)
        async with db.session() as session:
            repo = ArticleRepository(session)
            everything = {"include_deleted": True}
            assert await repo.get(gone.id) is None
            assert not await repo.exists(Article.id == gone.id)
            assert await repo.exists(Article.id == gone.id, **everything)
            assert await repo.one_or_none(Article.id == gone.id) is None
            assert [a.id for a in await repo.list_all()] == [kept.id]
            assert [a.id for a in (await repo.paginate()).items] == [kept.id]
            assert [a.id for a in (await repo.page()).items] == [kept.id]
            assert (await repo.page(**everything)).total == 2
            assert len((await repo.paginate(**everything)).items) == 2

    async def test_soft_deleted_entity_in_session_not_returned(self, db: Database) -> None:
        """get does not return an entity soft-deleted in this session; the entity knows."""
        (article,) = await self._articles(db, 1)
        async with db.session() as session:
            repo = ArticleRepository(session)
            loaded = await repo.get_one(article.id)
            await repo.delete(loaded)
            assert loaded.deleted_at is not None
            assert loaded.version == 2
            assert await repo.get(article.id) is None
            assert (await repo.get_one(article.id, include_deleted=True)) is loaded

    async def test_restore(self, db: Database) -> None:
        """restore clears deleted_at and the row is readable again."""
        (article,) = await self._articles(db, 1)
        async with db.session() as session:
            repo = ArticleRepository(session)
            await repo.delete(article.id)
            restored = await repo.restore(article.id)
            assert restored.deleted_at is None
            assert await repo.get(article.id) is restored
        async with db.session() as session:
            with pytest.raises(InvalidQueryError):
                await AuthorRepository(session).restore(1)
            with pytest.raises(NotFoundError):
                await ArticleRepository(session).restore(999)

    async def test_hard_delete(self, db: Database) -> None:
        """hard_delete removes the row, also a soft-deleted one, by id or entity."""
        first, second = await self._articles(db, 2)
        async with db.session() as session:
            repo = ArticleRepository(session)
            await repo.delete(first.id)
            await repo.hard_delete(first.id)
            loaded = await repo.get_one(second.id)
            await repo.hard_delete(loaded)
            total = await session.scalar(select(func.count()).select_from(Article.__table__))
            assert total == 0
            with pytest.raises(NotFoundError):
                await repo.hard_delete(first.id)

    async def test_delete_plain_model_is_hard(self, db: Database) -> None:
        """delete on a model without SoftDeleteMixin removes the row; a missing id raises."""
        async with db.session() as session:
            repo = AuthorRepository(session)
            author = await repo.save(Author(email="x@example.com"))
            await repo.delete(author)
            assert await repo.count() == 0
            with pytest.raises(NotFoundError):
                await repo.delete(author.id)

    async def test_delete_where_soft(self, db: Database) -> None:
        """delete_where soft-deletes matches in one statement and updates loaded entities."""
        articles = await self._articles(db, 5)
        async with db.session() as session:
            repo = ArticleRepository(session)
            loaded = await repo.list_all(order_by="views")
            with count_queries() as counter:
                assert await repo.delete_where(Article.views >= 3) == 2
            assert counter.count == 1
            assert [a.deleted_at is not None for a in loaded] == [False] * 3 + [True] * 2
            assert loaded[4].version == 2
            assert await repo.delete_where(Article.views >= 3) == 0
        async with db.session() as session:
            assert await ArticleRepository(session).count() == 3
            everything = await ArticleRepository(session).count(include_deleted=True)
            assert everything == len(articles)

    async def test_delete_where_hard_and_needs_criteria(self, db: Database) -> None:
        """delete_where is hard for plain models and refuses to run without criteria."""
        async with db.session() as session:
            repo = AuthorRepository(session)
            await repo.insert_many([{"email": f"{i}@example.com", "rank": i} for i in range(4)])
            with pytest.raises(InvalidQueryError):
                await repo.delete_where()
            assert await repo.delete_where(Author.rank < 2) == 2
            assert await repo.delete_where(true()) == 2
            assert await repo.count() == 0


class TestAsyncSafety:
    async def test_lazy_load_raises_instead_of_hidden_io(self, db: Database) -> None:
        """With lazy='raise', touching an unloaded relationship raises, never does IO."""
        async with db.session() as session:
            author = await AuthorRepository(session).save(Author(email="n@example.com"))
        async with db.session() as session:
            loaded = await AuthorRepository(session).get_one(author.id)
            with pytest.raises(Exception, match="lazy='raise'"):
                _ = loaded.articles

    async def test_n_plus_one_caught(self, db: Database) -> None:
        """assert_max_queries fails a per-row query loop and passes the eager version."""
        async with db.session() as session:
            authors = await AuthorRepository(session).save_all(
                Author(email=f"{i}@example.com") for i in range(5)
            )
            await ArticleRepository(session).save_all(
                Article(slug=f"s{a.id}", title="t", author_id=a.id) for a in authors
            )
        async with db.session() as session:
            repo = AuthorRepository(session)
            articles = ArticleRepository(session)
            with pytest.raises(AssertionError, match="expected at most 2 queries"):
                async with assert_max_queries(2):
                    for author in await repo.list_all():
                        await articles.list_all(Article.author_id == author.id)
        async with db.session() as session:
            async with assert_max_queries(2):
                eager = await AuthorRepository(session).list_all(
                    options=[selectinload(Author.articles)]
                )
            assert sorted(len(a.articles) for a in eager) == [1] * 5
