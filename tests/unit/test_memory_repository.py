"""InMemoryRepository: the public test double behaves like the SQL repository (no database)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from tests.integration.repo_models import Article, Author
from underlay import (
    InMemoryRepository,
    InvalidQueryError,
    MultipleResultsError,
    NotFoundError,
    Repository,
    StaleVersionError,
)


class AuthorService:
    """A service typed against the protocol, as an application would write it."""

    def __init__(self, authors: Repository[Author, int]) -> None:
        self.authors = authors

    async def rename(self, id: int, name: str) -> Author:
        author = await self.authors.get_one(id)
        author.name = name
        return await self.authors.save(author)


class TestInMemoryRepository:
    async def test_save_assigns_keys_and_defaults(self) -> None:
        """save assigns integer keys, column defaults and timestamps."""
        repo = InMemoryRepository(Author)
        first = await repo.save(Author(email="a@example.com"))
        second = await repo.save(Author(email="b@example.com"))
        assert (first.id, second.id) == (1, 2)
        assert (first.name, first.rank, first.tenant) == ("", 0, "t1")
        assert first.created_at is not None
        assert first.updated_at is not None

    async def test_service_against_protocol(self) -> None:
        """A service typed against Repository works with the double."""
        repo = InMemoryRepository(Author, [Author(id=5, email="a@example.com")])
        renamed = await AuthorService(repo).rename(5, "Ada")
        assert (await repo.get_one(5)).name == renamed.name == "Ada"

    async def test_reads(self) -> None:
        """Predicates filter; order_by strings sort; limit/offset slice."""
        repo = InMemoryRepository(Author)
        await repo.save_all(
            Author(email=f"{i}@example.com", name=f"n{i}", rank=i % 2) for i in range(5)
        )
        assert await repo.count(lambda a: a.rank == 1) == 2
        assert await repo.exists(lambda a: a.name == "n4")
        assert not await repo.exists(lambda a: a.name == "zz")
        rows = await repo.list_all(order_by="-rank,name", limit=3, offset=1)
        assert [a.name for a in rows] == ["n3", "n0", "n2"]
        assert await repo.get(99) is None
        with pytest.raises(NotFoundError):
            await repo.get_one(99)
        one = await repo.one_or_none(lambda a: a.name == "n2")
        assert one is not None
        with pytest.raises(MultipleResultsError):
            await repo.one_or_none(lambda a: a.rank == 0)
        with pytest.raises(InvalidQueryError):
            await repo.list_all(order_by="articles")

    async def test_update_and_versions(self) -> None:
        """update sets given fields and checks and bumps versions like the SQL repository."""
        repo = InMemoryRepository(Article)
        article = await repo.save(Article(slug="s", title="t"))
        assert article.version == 1

        class Patch(BaseModel):
            title: str | None = None

        updated = await repo.update(article.id, Patch(title="u"), expected_version=1)
        assert (updated.title, updated.version) == ("u", 2)
        with pytest.raises(StaleVersionError):
            await repo.update(article.id, {"title": "stale", "version": 1})
        with pytest.raises(InvalidQueryError):
            await repo.update(article.id, {"nope": 1})
        with pytest.raises(InvalidQueryError):
            await repo.update(article.id, {"id": 3})

    async def test_soft_delete_restore_hard_delete(self) -> None:
        """Soft deletes hide rows and keep the first timestamp; hard deletes remove them."""
        repo = InMemoryRepository(Article)
        article = await repo.save(Article(slug="s", title="t"))
        await repo.delete(article.id)
        stamp = article.deleted_at
        assert stamp is not None
        await repo.delete(article)
        assert article.deleted_at == stamp
        assert await repo.get(article.id) is None
        assert await repo.count(include_deleted=True) == 1
        assert (await repo.restore(article.id)).deleted_at is None
        assert await repo.delete_where(lambda a: a.slug == "s") == 1
        await repo.hard_delete(article.id)
        assert await repo.count(include_deleted=True) == 0
        with pytest.raises(NotFoundError):
            await repo.hard_delete(article.id)
        with pytest.raises(InvalidQueryError):
            await repo.delete_where()

    async def test_plain_model_delete_is_hard(self) -> None:
        """Models without SoftDeleteMixin are removed; restore is refused."""
        repo = InMemoryRepository(Author)
        author = await repo.save(Author(email="a@example.com"))
        with pytest.raises(InvalidQueryError):
            await repo.restore(author)
        await repo.delete(author)
        assert await repo.count() == 0
        with pytest.raises(NotFoundError):
            await repo.delete(author.id)

    async def test_second_object_with_same_key_refused(self) -> None:
        """Saving a different object under a stored key is refused, like a duplicate."""
        repo = InMemoryRepository(Author, [Author(id=1, email="a@example.com")])
        with pytest.raises(InvalidQueryError):
            await repo.save(Author(id=1, email="b@example.com"))

    async def test_save_from_schema(self) -> None:
        """save builds an entity from a Pydantic model."""

        class AuthorIn(BaseModel):
            email: str

        repo = InMemoryRepository(Author)
        author = await repo.save(AuthorIn(email="s@example.com"))
        assert (author.id, author.email) == (1, "s@example.com")
        assert "1 entities" in repr(repo)
