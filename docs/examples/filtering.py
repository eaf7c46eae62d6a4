"""Filters from query strings, relationship paths, search and the no-hidden-IO mode."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import ClassVar

from sqlalchemy import ForeignKey, MetaData, String
from sqlalchemy.orm import Mapped, mapped_column, relationship, selectinload

from underlay import (
    Base,
    Database,
    InMemoryRepository,
    InvalidQueryError,
    LazyLoadError,
    SoftDeleteMixin,
    SQLAlchemyRepository,
)
from underlay.query import parse_query_string, to_query_string
from underlay.repository import set_cursor_secret


class Model(Base):
    __abstract__ = True
    metadata = MetaData()


class Author(SoftDeleteMixin, Model):
    __tablename__ = "authors"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(200), unique=True)
    posts: Mapped[list[Post]] = relationship(back_populates="author")


class Post(SoftDeleteMixin, Model):
    __tablename__ = "posts"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    views: Mapped[int] = mapped_column(default=0)
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"))
    author: Mapped[Author] = relationship(back_populates="posts")


class PostRepository(SQLAlchemyRepository[Post]):
    sortable_fields = ("views", "title")
    # Columns and relationship paths callers may filter on.
    filterable_fields = ("title", "views", "author.email")
    # Narrow a field's operators (the default depends on the column type).
    filter_operators: ClassVar = {"author.email": {"eq", "icontains"}}
    search_fields = ("title",)


class AuthorRepository(SQLAlchemyRepository[Author]):
    filterable_fields = ("email", "posts.title")
    # Loader options every list_all of this repository uses.
    loader_options: ClassVar = {"list_all": [selectinload(Author.posts)]}


async def main() -> None:
    set_cursor_secret("load this from your secret store, not from source code")
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'filtering.db'}"
        async with Database(url, raise_on_lazy_load=True) as db:
            await db.create_all(Model.metadata)
            async with db.session() as session:
                ada, bob = Author(email="ada@example.com"), Author(email="bob@example.com")
                session.add_all([ada, bob])
                session.add_all(
                    [
                        Post(title="Notes on 100% of the engine", views=40, author=ada),
                        Post(title="On analytical engines", views=12, author=ada),
                        Post(title="Gardening", views=3, author=bob),
                    ]
                )

            async with db.session() as session:
                posts = PostRepository(session)

                # The mapping form, from code.
                popular = await posts.list_all(filter_by={"views__ge": 10}, order_by="-views")
                assert [p.views for p in popular] == [40, 12]

                # The query-string form, from a request; values are coerced to column types.
                query = "views__between=1,20&author.email__icontains=ADA&order_by=title"
                tree = parse_query_string(query, ignore={"order_by"})
                found = await posts.list_all(filter_by=tree, order_by="title")
                assert [p.title for p in found] == ["On analytical engines"]
                assert parse_query_string(to_query_string(tree)) == tree

                # Groups: OR and NOT.
                either = {"or": [{"views__lt": 5}, {"title__contains": "100%"}]}
                assert await posts.count(filter_by=either) == 2
                assert await posts.count(filter_by={"not": either}) == 1

                # like is the whole value, literally: % is not a wildcard.
                assert await posts.count(filter_by={"title__like": "%"}) == 0

                # Refused before any SQL, naming the field.
                for bad in ({"views": "many"}, {"author.email__startswith": "a"}, {"id": 1}):
                    try:
                        await posts.list_all(filter_by=bad)
                    except InvalidQueryError as exc:
                        print("refused:", exc)
                    else:
                        raise AssertionError(bad)

                # Search, best match first.
                ranked = await posts.search("engine")
                assert {p.title for p in ranked} == {
                    "Notes on 100% of the engine",
                    "On analytical engines",
                }

                # A cursor only continues the query it came from.
                first = await posts.paginate(filter_by={"views__ge": 1}, order_by="views", limit=2)
                try:
                    await posts.paginate(
                        filter_by={"views__ge": 5}, order_by="views", after=first.next_cursor
                    )
                except InvalidQueryError:
                    print("a cursor for other filters is refused")

                # To-many path: authors with any live post matching.
                authors = AuthorRepository(session)
                gardeners = await authors.list_all(filter_by={"posts.title__icontains": "garden"})
                assert [a.email for a in gardeners] == ["bob@example.com"]
                assert [p.title for p in gardeners[0].posts] == ["Gardening"]  # preloaded

                # No hidden IO: an unloaded relationship raises at once, naming the fix.
                post = popular[0]
                try:
                    print(post.author.email)
                except LazyLoadError as exc:
                    print("lazy load refused:", exc)

                # The in-memory double takes the same filters.
                memory = InMemoryRepository.for_repository(PostRepository, found)
                assert await memory.count(filter_by={"views__le": 20}) == 1
    print("filtering example ok")


if __name__ == "__main__":
    asyncio.run(main())
