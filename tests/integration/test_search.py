"""Search over declared fields: ILIKE, PostgreSQL full text, SQLite FTS5, ranked."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import MetaData, String, text
from sqlalchemy.orm import Mapped, mapped_column

from tests.integration.models import new_base
from underlay import (
    Database,
    InMemoryRepository,
    InvalidQueryError,
    SoftDeleteMixin,
    SQLAlchemyRepository,
)
from underlay.repository import CURSOR_SECRET_ENV
from underlay.testing import count_queries

SearchBase = new_base()


class Doc(SoftDeleteMixin, SearchBase):
    __tablename__ = "s_docs"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(String(500), default="")
    kind: Mapped[str] = mapped_column(String(20), default="note")


class DocRepository(SQLAlchemyRepository[Doc]):
    filterable_fields = ("kind",)
    sortable_fields = ("title",)
    search_fields = ("title", "body")


class FullTextDocRepository(DocRepository):
    search_mode = "fulltext"
    search_config = "english"


class PlainRepository(SQLAlchemyRepository[Doc]):
    pass


DOCS = [
    (1, "Running fast", "a note about runners and running", "note"),
    (2, "Slow cooking", "recipes for a slow cooker", "recipe"),
    (3, "100% cotton", "shirts_and more", "note"),
    (4, "Deleted running", "gone", "note"),
    (5, "Cooking with Ada", "running a kitchen, cooking fast", "recipe"),
]


@pytest.fixture
def metadata() -> MetaData:
    return SearchBase.metadata


@pytest.fixture(autouse=True)
def cursor_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CURSOR_SECRET_ENV, "test secret shared by every worker")


@pytest.fixture
async def docs(db: Database) -> Database:
    async with db.session() as session:
        for ident, title, body, kind in DOCS:
            session.add(Doc(id=ident, title=title, body=body, kind=kind))
        await session.flush()
        await DocRepository(session).delete(4)
        if db.engine.dialect.name == "sqlite":
            await session.execute(
                text(
                    "CREATE VIRTUAL TABLE s_docs_fts USING fts5("
                    "title, body, content='s_docs', content_rowid='id', tokenize='porter')"
                )
            )
            await session.execute(
                text(
                    "INSERT INTO s_docs_fts(rowid, title, body) SELECT id, title, body FROM s_docs"
                )
            )
    return db


async def _search(db: Database, repo: type[DocRepository], query: str, **kw: Any) -> list[int]:
    async with db.session() as session:
        return [doc.id for doc in await repo(session).search(query, **kw)]


class TestIlikeSearch:
    async def test_words_in_any_field_ranked(self, docs: Database) -> None:
        """Every word must appear in some field; more matches rank first; deleted rows never."""
        assert await _search(docs, DocRepository, "running") == [1, 5]
        assert await _search(docs, DocRepository, "COOKING fast") == [5]
        assert await _search(docs, DocRepository, "cooking") == [5, 2]

    async def test_wildcards_are_literal(self, docs: Database) -> None:
        """% and _ in search text match only themselves."""
        assert await _search(docs, DocRepository, "100%") == [3]
        assert await _search(docs, DocRepository, "s_a") == [3]
        assert await _search(docs, DocRepository, "%") == [3]

    async def test_composes_with_filters_and_reads(self, docs: Database) -> None:
        """search= narrows list_all, count, page and paginate; filters apply too."""
        async with docs.session() as session:
            repo = DocRepository(session)
            assert await _search(docs, DocRepository, "running", filter_by={"kind": "recipe"}) == [
                5
            ]
            found = await repo.list_all(search="cooking", order_by="title")
            assert [d.id for d in found] == [5, 2]
            assert await repo.count(search="running") == 2
            assert await repo.exists(search="cotton")
            page = await repo.page(search="cooking", size=1)
            assert page.total == 2
            first = await repo.paginate(search="cooking", order_by="title", limit=1)
            following = await repo.paginate(
                search="cooking", order_by="title", limit=1, after=first.next_cursor
            )
            assert [d.id for d in first.items + following.items] == [5, 2]
            with pytest.raises(InvalidQueryError, match="same order_by and filters"):
                await repo.paginate(
                    search="running", order_by="title", limit=1, after=first.next_cursor
                )

    async def test_in_memory_agrees(self, docs: Database) -> None:
        """The in-memory repository's search= picks the same rows as ILIKE search in SQL."""
        async with docs.session() as session:
            repo = DocRepository(session)
            memory = InMemoryRepository.for_repository(DocRepository, await repo.list_all())
            for query in ("running", "COOKING fast", "100%", "s_a", "nothing"):
                in_sql = [d.id for d in await repo.list_all(search=query, order_by="title")]
                in_memory = await memory.list_all(search=query, order_by="title")
                assert [d.id for d in in_memory] == in_sql, query

    async def test_refused_before_sql(self, docs: Database) -> None:
        """Bad search text, or a repository without search fields, is refused with no SQL."""
        async with docs.session() as session:
            with count_queries() as counter:
                for bad in ("x" * 5000, "a\x00b", 5):
                    with pytest.raises(InvalidQueryError):
                        await DocRepository(session).search(bad)  # type: ignore[arg-type]
                with pytest.raises(InvalidQueryError, match="no search_fields"):
                    await PlainRepository(session).list_all(search="x")
            assert counter.count == 0
            assert await DocRepository(session).search("   ") == []


class TestFullTextSearch:
    async def test_stemmed_and_ranked(self, docs: Database) -> None:
        """Full-text search stems words (runners, running -> run) and ranks matches."""
        found = await _search(docs, FullTextDocRepository, "run")
        assert sorted(found) == [1, 5]
        assert found[0] == 1  # "running" in the title and twice in the body

    async def test_operator_characters_are_words(self, docs: Database) -> None:
        """Quotes, minus signs and FTS operators in user text never raise SQL errors."""
        for query in ('"cooking', "cooking -slow", "NEAR(cooking", "title:cooking", "*", "AND"):
            await _search(docs, FullTextDocRepository, query)
        assert await _search(docs, FullTextDocRepository, "slow cooker") == [2]
