"""SQLAlchemyRepository reads, saves and updates on every backend."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import MetaData, event, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from sqlalchemy.orm import selectinload

from tests.conftest import Backend
from tests.integration.repo_models import (
    Article,
    ArticleRepository,
    Author,
    AuthorRepository,
    RepoBase,
)
from underlay import (
    Database,
    DuplicateError,
    InvalidQueryError,
    MultipleResultsError,
    NotFoundError,
    SQLAlchemyRepository,
    StaleVersionError,
    to_schema,
    to_schemas,
)
from underlay.testing import assert_max_queries, count_queries


@pytest.fixture
def metadata() -> MetaData:
    return RepoBase.metadata


async def _authors(db: Database, count: int) -> list[Author]:
    async with db.session() as session:
        return await AuthorRepository(session).save_all(
            Author(email=f"a{i}@example.com", name=f"author {i}", rank=i % 3) for i in range(count)
        )


class TestModelBinding:
    def test_model_from_generic_parameter(self) -> None:
        """The model comes from SQLAlchemyRepository[Model]."""
        assert AuthorRepository.model is Author

    def test_model_attribute(self) -> None:
        """A model class attribute works without a generic parameter."""

        class Plain(SQLAlchemyRepository[Any]):
            model = Author

        assert Plain.model is Author

    def test_mismatch_rejected(self) -> None:
        """A model attribute contradicting the generic parameter is a TypeError."""
        with pytest.raises(TypeError, match="sets model"):

            class Wrong(SQLAlchemyRepository[Author]):
                model = Article  # type: ignore[assignment]

    async def test_missing_model_rejected(self, db: Database) -> None:
        """A repository without a model cannot be constructed."""
        async with db.session() as session:
            with pytest.raises(TypeError, match="has no model"):
                SQLAlchemyRepository(session)

    async def test_undeclared_column_field_rejected(self, db: Database) -> None:
        """Declaring a relationship as sortable is refused at first use."""

        class Bad(SQLAlchemyRepository[Author]):
            sortable_fields = ("articles",)

        async with db.session() as session:
            with pytest.raises(TypeError, match="not a column attribute"):
                Bad(session)


class TestReads:
    async def test_get_and_get_one(self, db: Database) -> None:
        """get returns the entity or None; get_one raises NotFoundError naming the id."""
        (author,) = await _authors(db, 1)
        async with db.session() as session:
            repo = AuthorRepository(session)
            found = await repo.get(author.id)
            assert found is not None
            assert found.email == author.email
            assert await repo.get(author.id + 100) is None
            with pytest.raises(NotFoundError) as info:
                await repo.get_one(author.id + 100)
            assert info.value.id == author.id + 100
            assert info.value.model is Author

    async def test_get_for_update(self, db: Database) -> None:
        """get(for_update=True) reloads the row under a lock where the backend has row locks."""
        (author,) = await _authors(db, 1)
        async with db.session() as session:
            repo = AuthorRepository(session)
            with count_queries() as counter:
                locked = await repo.get_one(author.id, for_update=True)
            assert locked.id == author.id
            if db.engine.dialect.name == "postgresql":
                assert "FOR UPDATE" in counter.statements[-1]

    async def test_for_update_serialises_read_modify_write(
        self, db: Database, backend: Backend
    ) -> None:
        """Concurrent read-modify-writes through get(for_update=True) lose no increment."""
        if not backend.concurrent_writers:
            pytest.skip("needs row locks; SQLite serialises whole transactions instead")
        (author,) = await _authors(db, 1)

        async def increment() -> None:
            async with db.session() as session:
                locked = await AuthorRepository(session).get_one(author.id, for_update=True)
                await asyncio.sleep(0.02)  # hold the lock while the other tasks queue up
                locked.rank += 1

        await asyncio.gather(*(increment() for _ in range(5)))
        async with db.session() as session:
            assert (await AuthorRepository(session).get_one(author.id)).rank == 5

    async def test_get_with_loader_options(self, db: Database) -> None:
        """Loader options load relationships eagerly, so no lazy load is needed."""
        (author,) = await _authors(db, 1)
        async with db.session() as session:
            await ArticleRepository(session).save(
                Article(slug="s1", title="one", author_id=author.id)
            )
        async with db.session() as session:
            loaded = await AuthorRepository(session).get_one(
                author.id, options=[selectinload(Author.articles)]
            )
            assert [a.slug for a in loaded.articles] == ["s1"]

    async def test_one_or_none(self, db: Database) -> None:
        """one_or_none returns the single match, None, or raises MultipleResultsError."""
        await _authors(db, 3)
        async with db.session() as session:
            repo = AuthorRepository(session)
            one = await repo.one_or_none(Author.email == "a1@example.com")
            assert one is not None
            assert one.name == "author 1"
            assert await repo.one_or_none(Author.email == "nobody") is None
            with pytest.raises(MultipleResultsError):
                await repo.one_or_none(Author.rank >= 0)

    async def test_list_count_exists(self, db: Database) -> None:
        """list_all filters, orders and slices; count and exists agree with it."""
        await _authors(db, 6)
        async with db.session() as session:
            repo = AuthorRepository(session)
            rows = await repo.list_all(Author.rank == 1, order_by=Author.email.desc())
            assert [a.email for a in rows] == ["a4@example.com", "a1@example.com"]
            sliced = await repo.list_all(order_by="name", limit=2, offset=1)
            assert [a.name for a in sliced] == ["author 1", "author 2"]
            assert await repo.count() == 6
            assert await repo.count(Author.rank == 0) == 2
            assert await repo.exists(Author.rank == 2)
            assert not await repo.exists(Author.rank == 7)

    async def test_list_all_sends_select_statement(self, db: Database) -> None:
        """list_all and count execute exactly what select_statement / count_statement build."""
        await _authors(db, 2)
        seen: list[Any] = []
        async with db.session() as session:
            repo = AuthorRepository(session, where=[Author.tenant == "t1"])
            event.listen(session.sync_session, "do_orm_execute", lambda s: seen.append(s.statement))
            kwargs: dict[str, Any] = {"order_by": "-rank", "limit": 5, "filter_by": {"rank": 1}}
            await repo.list_all(Author.name != "x", **kwargs)
            await repo.count(Author.name != "x", filter_by={"rank": 1})

        def sql(statement: Any) -> str:
            # literal values, so a differing bound value shows; loader options do not render
            return str(statement.compile(compile_kwargs={"literal_binds": True}))

        assert sql(seen[0]) == sql(repo.select_statement(Author.name != "x", **kwargs))
        assert sql(seen[1]) == sql(repo.count_statement(Author.name != "x", filter_by={"rank": 1}))
        assert sql(seen[0]) != sql(repo.select_statement(Author.name != "y", **kwargs))
        assert "t1" in sql(seen[0])

    async def test_user_sort_and_filter_strings(self, db: Database) -> None:
        """order_by strings and filter_by mappings use only declared fields."""
        await _authors(db, 6)
        async with db.session() as session:
            repo = AuthorRepository(session)
            rows = await repo.list_all(order_by="-rank,email", filter_by={"rank": 2})
            assert [a.email for a in rows] == ["a2@example.com", "a5@example.com"]
            assert await repo.count(filter_by={"name": "author 3"}) == 1

    async def test_scope_applies_to_reads_and_writes(self, db: Database) -> None:
        """A repository's where= scope limits get, lists, counts, updates and deletes."""
        async with db.session() as session:
            await AuthorRepository(session).save_all(
                [
                    Author(email="t1@example.com", tenant="t1"),
                    Author(email="t2@example.com", tenant="t2"),
                ]
            )
        async with db.session() as session:
            repo = AuthorRepository(session, where=[Author.tenant == "t1"])
            other = await AuthorRepository(session).one_or_none(Author.tenant == "t2")
            assert other is not None
            assert await repo.get(other.id) is None
            assert [a.tenant for a in await repo.list_all()] == ["t1"]
            assert await repo.count() == 1
            assert "tenant" in str(repo.select_statement().compile())
            with pytest.raises(NotFoundError):
                await repo.update(other.id, {"name": "hijack"})
            with pytest.raises(NotFoundError):
                await repo.delete(other.id)
        async with db.session() as session:
            assert (await AuthorRepository(session).get_one(other.id)).name == ""
            scoped = AuthorRepository(session, where=[Author.tenant == "t2"])
            assert (await scoped.get_one(other.id, for_update=True)).tenant == "t2"

    @pytest.mark.parametrize(
        "kwargs", [{"limit": -1}, {"offset": -5}], ids=["negative-limit", "negative-offset"]
    )
    async def test_negative_slices_refused(self, db: Database, kwargs: dict[str, int]) -> None:
        """Negative limit or offset raise InvalidQueryError."""
        async with db.session() as session:
            with pytest.raises(InvalidQueryError):
                await AuthorRepository(session).list_all(**kwargs)


class TestSave:
    async def test_save_loads_server_values(self, db: Database) -> None:
        """save flushes and loads keys, defaults and timestamps without later IO."""
        async with db.session() as session:
            author = await AuthorRepository(session).save(Author(email="a@example.com"))
            with assert_max_queries(0):
                assert author.id is not None
                assert author.created_at is not None
                assert author.rank == 0

    async def test_save_from_schema(self, db: Database) -> None:
        """save accepts a Pydantic model and stores its set fields."""

        class AuthorIn(BaseModel):
            email: str
            name: str = "default name"

        async with db.session() as session:
            author = await AuthorRepository(session).save(AuthorIn(email="s@example.com"))
            assert author.id is not None
            assert author.name == ""

    async def test_save_all_and_duplicate(self, db: Database) -> None:
        """save_all flushes together; a duplicate email raises DuplicateError."""
        await _authors(db, 2)
        with pytest.raises(DuplicateError):
            async with db.session() as session:
                await AuthorRepository(session).save(Author(email="a0@example.com"))

    @pytest.mark.no_pgbouncer  # a plain engine on the URL, without Database's URL handling
    async def test_plain_async_session_errors_translated(
        self, db: Database, backend: Backend
    ) -> None:
        """On a user's own engine and AsyncSession, errors still leave as underlay errors."""
        await _authors(db, 1)
        engine = create_async_engine(backend.url)  # no underlay error hook on this engine
        try:
            async with AsyncSession(engine) as session:
                repo = AuthorRepository(session)
                with pytest.raises(DuplicateError) as info:
                    await repo.save(Author(email="a0@example.com"))
                assert info.value.model is Author
                assert isinstance(info.value.__cause__, IntegrityError)
                await session.rollback()
                with pytest.raises(DuplicateError):
                    await repo.insert_many([{"email": "a0@example.com"}], method="values")
        finally:
            await engine.dispose()


class TestSchemas:
    async def test_to_schema_reads_declared_fields_only(self, db: Database) -> None:
        """to_schema ignores unloaded lazy='raise' relationships the schema does not name."""

        class AuthorOut(BaseModel):
            id: int
            email: str

        class AuthorWithArticles(AuthorOut):
            articles: list[Any]

        (author,) = await _authors(db, 1)
        async with db.session() as session:
            loaded = await AuthorRepository(session).get_one(author.id)
            assert to_schema(loaded, AuthorOut) == AuthorOut(id=author.id, email=author.email)
            assert to_schemas([loaded], AuthorOut)[0].email == author.email
            with pytest.raises(Exception, match="lazy='raise'"):
                to_schema(loaded, AuthorWithArticles)
            eager = await AuthorRepository(session).get_one(
                author.id, options=[selectinload(Author.articles)], for_update=True
            )
            assert to_schema(eager, AuthorWithArticles).articles == []


class TestUpdate:
    async def test_partial_update_leaves_other_columns(self, db: Database) -> None:
        """Columns not given keep their database value even if changed behind the session."""
        (author,) = await _authors(db, 1)
        async with db.session() as session:
            repo = AuthorRepository(session)
            loaded = await repo.get_one(author.id)
            assert loaded.rank == 0
            await session.commit()  # the session keeps its (now stale) rank=0 instance
            async with db.engine.begin() as conn:
                await conn.execute(
                    text("UPDATE authors SET rank = 42 WHERE id = :id"), {"id": author.id}
                )
            updated = await repo.update(author.id, {"name": "renamed"})
            assert updated is loaded
            assert updated.rank == 42
            assert updated.name == "renamed"
        async with db.session() as session:
            row = (
                await session.execute(
                    select(Author.name, Author.rank).where(Author.id == author.id)
                )
            ).one()
        assert tuple(row) == ("renamed", 42)

    async def test_update_from_schema_uses_set_fields(self, db: Database) -> None:
        """A Pydantic model updates only the fields that were set on it."""

        class AuthorPatch(BaseModel):
            name: str | None = None
            rank: int | None = None

        (author,) = await _authors(db, 1)
        async with db.session() as session:
            updated = await AuthorRepository(session).update(author.id, AuthorPatch(rank=9))
        assert (updated.name, updated.rank) == ("author 0", 9)

    async def test_update_moves_updated_at(self, db: Database) -> None:
        """updated_at moves and created_at stays."""
        (author,) = await _authors(db, 1)
        await asyncio.sleep(0.01)
        async with db.session() as session:
            updated = await AuthorRepository(session).update(author.id, {"rank": 5})
        assert updated.updated_at > author.updated_at
        assert updated.created_at == author.created_at

    @pytest.mark.parametrize(
        "values",
        [{"nope": 1}, {"articles": []}, {"id": 5}, {}],
        ids=["unknown", "relationship", "primary-key", "empty"],
    )
    async def test_invalid_values_refused_before_sql(
        self, db: Database, values: dict[str, Any]
    ) -> None:
        """Unknown, relationship, key or no fields raise InvalidQueryError and send nothing."""
        (author,) = await _authors(db, 1)
        async with db.session() as session:
            repo = AuthorRepository(session)
            with count_queries() as counter, pytest.raises(InvalidQueryError):
                await repo.update(author.id, values)
            assert counter.count == 0

    async def test_update_missing_row(self, db: Database) -> None:
        """Updating an id that does not exist raises NotFoundError."""
        async with db.session() as session:
            with pytest.raises(NotFoundError):
                await AuthorRepository(session).update(123, {"name": "x"})


class TestVersionedUpdate:
    async def _article(self, db: Database) -> Article:
        async with db.session() as session:
            return await ArticleRepository(session).save(Article(slug="v", title="v1"))

    async def test_expected_version_checked_and_bumped(self, db: Database) -> None:
        """A matching version updates and increments it; a stale one changes nothing."""
        article = await self._article(db)
        assert article.version == 1
        async with db.session() as session:
            updated = await ArticleRepository(session).update(
                article.id, {"title": "v2"}, expected_version=1
            )
            assert updated.version == 2
        with pytest.raises(StaleVersionError) as info:
            async with db.session() as session:
                await ArticleRepository(session).update(
                    article.id, {"title": "stale"}, expected_version=1
                )
        assert info.value.expected_version == 1
        assert info.value.id == article.id
        async with db.session() as session:
            current = await ArticleRepository(session).get_one(article.id)
            assert (current.title, current.version) == ("v2", 2)

    async def test_version_key_in_values_is_expected_version(self, db: Database) -> None:
        """A version in the values is checked, never written as the new version."""
        article = await self._article(db)
        async with db.session() as session:
            repo = ArticleRepository(session)
            updated = await repo.update(article.id, {"title": "v2", "version": 1})
            assert updated.version == 2
            with pytest.raises(StaleVersionError):
                await repo.update(article.id, {"title": "back", "version": 1})
            with pytest.raises(StaleVersionError):
                await repo.update(article.id, {"title": "ahead", "version": 7})

    async def test_update_without_expected_version_still_bumps(self, db: Database) -> None:
        """An unchecked update still increments the version."""
        article = await self._article(db)
        async with db.session() as session:
            updated = await ArticleRepository(session).update(article.id, {"views": 3})
        assert updated.version == 2

    async def test_expected_version_on_unversioned_model(self, db: Database) -> None:
        """expected_version on a model without a version column is an InvalidQueryError."""
        (author,) = await _authors(db, 1)
        async with db.session() as session:
            with pytest.raises(InvalidQueryError):
                await AuthorRepository(session).update(author.id, {"name": "x"}, expected_version=1)

    async def test_stale_version_of_missing_row_is_not_found(self, db: Database) -> None:
        """A version check against a row that does not exist is NotFoundError."""
        async with db.session() as session:
            with pytest.raises(NotFoundError):
                await ArticleRepository(session).update(99, {"title": "x"}, expected_version=1)
