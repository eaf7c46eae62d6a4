"""Deletes and restores of versioned models check the version: a stale one changes nothing."""

from __future__ import annotations

import pytest
from sqlalchemy import MetaData, select

from tests.integration.repo_models import (
    Article,
    ArticleRepository,
    Author,
    AuthorRepository,
    Member,
    MemberRepository,
    RepoBase,
)
from underlay import Database, InvalidQueryError, NotFoundError, StaleVersionError


@pytest.fixture
def metadata() -> MetaData:
    return RepoBase.metadata


async def _raw(db: Database, id: int) -> tuple[int, bool] | None:
    """The row's (version, deleted) as the database holds it, bypassing every filter."""
    async with db.session() as session:
        row = (
            await session.execute(
                select(Article.version, Article.deleted_at)
                .where(Article.id == id)
                .execution_options(include_deleted=True)
            )
        ).first()
    return None if row is None else (row[0], row[1] is not None)


@pytest.fixture
async def article(db: Database) -> Database:
    """Article 1 at version 1."""
    async with db.session() as session:
        await ArticleRepository(session).save(Article(id=1, slug="a", title="A"))
    return db


async def _bump_elsewhere(db: Database) -> None:
    """Another request updates article 1 (to version 2)."""
    async with db.session() as session:
        await ArticleRepository(session).update(1, {"title": "B"})


class TestStaleEntity:
    async def test_stale_soft_delete_of_entity_conflicts(self, article: Database) -> None:
        """delete(entity) with an entity loaded before someone else's write raises, row kept."""
        async with article.session() as session:
            loaded = await ArticleRepository(session).get_one(1)
        await _bump_elsewhere(article)
        async with article.session() as session:
            repo = ArticleRepository(session)
            session.add(loaded)
            with pytest.raises(StaleVersionError) as info:
                await repo.delete(loaded)
            assert (info.value.id, info.value.expected_version) == (1, 1)
        assert await _raw(article, 1) == (2, False)

    async def test_fresh_entity_deletes(self, article: Database) -> None:
        """delete(entity) of an entity at the row's version soft-deletes and bumps it."""
        async with article.session() as session:
            repo = ArticleRepository(session)
            loaded = await repo.get_one(1)
            await repo.delete(loaded)
            assert loaded.version == 2
        assert await _raw(article, 1) == (2, True)

    async def test_stale_delete_of_deleted_row_conflicts(self, article: Database) -> None:
        """A row deleted by someone else meanwhile is a conflict for a stale entity too."""
        async with article.session() as session:
            loaded = await ArticleRepository(session).get_one(1)
        async with article.session() as session:
            await ArticleRepository(session).delete(1)
        async with article.session() as session:
            session.add(loaded)
            with pytest.raises(StaleVersionError):
                await ArticleRepository(session).delete(loaded)
        assert await _raw(article, 1) == (2, True)

    async def test_stale_hard_delete_of_entity_in_scoped_repository(
        self, article: Database
    ) -> None:
        """A scoped repository's hard_delete(entity) checks the entity's version as well."""
        async with article.session() as session:
            loaded = await ArticleRepository(session).get_one(1)
        await _bump_elsewhere(article)
        async with article.session() as session:
            session.add(loaded)
            repo = ArticleRepository(session, where=[Article.views >= 0])
            with pytest.raises(StaleVersionError):
                await repo.hard_delete(loaded)
        assert await _raw(article, 1) == (2, False)


class TestExpectedVersion:
    @pytest.mark.parametrize("method", ["delete", "hard_delete"])
    async def test_stale_expected_version(self, article: Database, method: str) -> None:
        """delete / hard_delete(id, expected_version=stale) raise and change nothing."""
        await _bump_elsewhere(article)
        async with article.session() as session:
            with pytest.raises(StaleVersionError):
                await getattr(ArticleRepository(session), method)(1, expected_version=1)
        assert await _raw(article, 1) == (2, False)

    async def test_delete_with_current_version(self, article: Database) -> None:
        """delete(id, expected_version=current) soft-deletes."""
        async with article.session() as session:
            await ArticleRepository(session).delete(1, expected_version=1)
        assert await _raw(article, 1) == (2, True)

    async def test_hard_delete_with_current_version(self, article: Database) -> None:
        """hard_delete(id, expected_version=current) removes the row."""
        async with article.session() as session:
            await ArticleRepository(session).hard_delete(1, expected_version=1)
        assert await _raw(article, 1) is None

    async def test_explicit_version_wins_over_entity(self, article: Database) -> None:
        """An If-Match version older than the freshly loaded entity's is still a conflict."""
        await _bump_elsewhere(article)
        async with article.session() as session:
            repo = ArticleRepository(session)
            loaded = await repo.get_one(1)
            with pytest.raises(StaleVersionError):
                await repo.delete(loaded, expected_version=1)
        assert await _raw(article, 1) == (2, False)

    async def test_restore(self, article: Database) -> None:
        """restore checks expected_version: stale raises and keeps the row deleted."""
        async with article.session() as session:
            await ArticleRepository(session).delete(1)
        async with article.session() as session:
            with pytest.raises(StaleVersionError):
                await ArticleRepository(session).restore(1, expected_version=1)
        assert await _raw(article, 1) == (2, True)
        async with article.session() as session:
            restored = await ArticleRepository(session).restore(1, expected_version=2)
            assert (restored.version, restored.deleted_at) == (3, None)
        assert await _raw(article, 1) == (3, False)

    async def test_missing_row_is_not_found(self, article: Database) -> None:
        """A version check on an id that does not exist is NotFoundError, not a conflict."""
        async with article.session() as session:
            repo = ArticleRepository(session)
            for call in (repo.delete, repo.hard_delete, repo.restore):
                with pytest.raises(NotFoundError):
                    await call(99, expected_version=1)

    async def test_unversioned_model_refuses(self, db: Database) -> None:
        """expected_version on a model without a version column is refused before SQL."""
        async with db.session() as session:
            await AuthorRepository(session).save(Author(id=1, email="a@x.io"))
        async with db.session() as session:
            with pytest.raises(InvalidQueryError):
                await AuthorRepository(session).delete(1, expected_version=1)
            with pytest.raises(InvalidQueryError):
                await ArticleRepository(session).delete(1, expected_version="1")  # type: ignore[arg-type]

    async def test_idempotent_delete_with_current_version(self, db: Database) -> None:
        """Deleting an already deleted row with its current version is a no-op, not a conflict."""
        async with db.session() as session:
            await MemberRepository(session).save(Member(id=1, email="m@x.io"))
        async with db.session() as session:
            await MemberRepository(session).delete(1, expected_version=1)
        async with db.session() as session:
            await MemberRepository(session).delete(1, expected_version=2)
            member = await MemberRepository(session).get(1, include_deleted=True)
            assert member is not None
            assert member.version == 2
