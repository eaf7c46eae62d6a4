"""Keyset pagination with signed cursors, offset pages, and sorting from user input."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from sqlalchemy import MetaData, String
from sqlalchemy.orm import Mapped, mapped_column

from underlay import Base, Database, InvalidQueryError, SQLAlchemyRepository, TimestampMixin
from underlay.models import NAMING_CONVENTION
from underlay.repository import set_cursor_secret


class Model(Base):
    __abstract__ = True
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Article(TimestampMixin, Model):
    __tablename__ = "articles"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    score: Mapped[int]


class ArticleRepository(SQLAlchemyRepository[Article]):
    # What API callers may sort and filter on; anything else is an InvalidQueryError.
    sortable_fields = ("score", "created_at", "title")
    filterable_fields = ("score",)


async def main() -> None:
    # Every worker that may receive a cursor needs the same secret (or UNDERLAY_CURSOR_SECRET).
    set_cursor_secret("load this from your secret store, not from source code")
    with tempfile.TemporaryDirectory() as tmp:
        async with Database(f"sqlite+aiosqlite:///{Path(tmp) / 'pages.db'}") as db:
            await db.create_all(Model.metadata)
            async with db.session() as session:
                await ArticleRepository(session).insert_many(
                    {"title": f"Article {i:02}", "score": i % 4} for i in range(22)
                )

            # Keyset pagination: the score is not unique, the primary key breaks ties.
            seen: list[int] = []
            cursor: str | None = None
            pages = 0
            while True:
                async with db.session() as session:
                    page = await ArticleRepository(session).paginate(
                        order_by="-score,title", limit=5, after=cursor
                    )
                seen.extend(article.id for article in page.items)
                pages += 1
                if pages == 2:
                    # rows added meanwhile never shift later pages or repeat earlier rows
                    async with db.session() as session:
                        await ArticleRepository(session).save(Article(title="Late", score=0))
                if not page.has_more:
                    break
                cursor = page.next_cursor
            assert len(seen) == len(set(seen)) == 23
            print(f"keyset: {pages} pages, {len(seen)} distinct rows, none repeated")

            # A cursor that was edited, or is replayed with another order, is refused.
            assert cursor is not None
            edited = cursor[:-2] + ("xx" if not cursor.endswith("xx") else "yy")
            refused = 0
            for bad, order_by in ((edited, "-score,title"), (cursor, "title")):
                try:
                    async with db.session() as session:
                        await ArticleRepository(session).paginate(order_by=order_by, after=bad)
                except InvalidQueryError as exc:
                    refused += 1
                    print(f"refused cursor: {exc}")
            assert refused == 2

            # Offset pages with a total, for UIs that show page numbers.
            async with db.session() as session:
                numbered = await ArticleRepository(session).page(
                    order_by="title", number=3, size=5, filter_by={"score": 1}
                )
            assert numbered.total == 6
            assert numbered.pages == 2
            assert numbered.items == []
            async with db.session() as session:
                first = await ArticleRepository(session).page(
                    order_by="title", size=5, filter_by={"score": 1}
                )
            assert [a.title for a in first.items][:2] == ["Article 01", "Article 05"]
            print(f"page 1 of {first.pages}: {[a.title for a in first.items]}")

            # Sorting on anything not declared is refused before any SQL is sent.
            try:
                async with db.session() as session:
                    await ArticleRepository(session).list_all(order_by="title; DROP TABLE x")
            except InvalidQueryError as exc:
                print(f"refused sort: {exc}")
    set_cursor_secret(None)


if __name__ == "__main__":
    asyncio.run(main())
