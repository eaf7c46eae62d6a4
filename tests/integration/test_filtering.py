"""Operator filters, relationship paths, bounds and escaping on every backend."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict
from sqlalchemy import MetaData, select

from tests.integration.query_models import (
    Color,
    Post,
    PostRepository,
    QueryBase,
    Writer,
    WriterRepository,
)
from tests.unit.test_query_parse import hostile_strings
from underlay import Database, InMemoryRepository, InvalidQueryError
from underlay.cache import CachedRepository, MemoryCache
from underlay.query import FilterLimits, parse_query_string
from underlay.repository import CURSOR_SECRET_ENV
from underlay.testing import count_queries

REF = [uuid.UUID(int=i + 1) for i in range(3)]


@pytest.fixture
def metadata() -> MetaData:
    return QueryBase.metadata


@pytest.fixture(autouse=True)
def cursor_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CURSOR_SECRET_ENV, "test secret shared by every worker")


def _at(hour: int) -> datetime:
    return datetime(2026, 1, 1, hour, tzinfo=UTC)


@pytest.fixture
async def seeded(db: Database) -> Database:
    """Writers (one soft-deleted) and posts of every column type (one soft-deleted)."""
    async with db.session() as session:
        ada = Writer(email="ada@x.io", name="Ada")
        bob = Writer(email="bob@x.io", name="Bob")
        gone = Writer(email="gone@x.io", name="Gone", deleted_at=_at(0))
        session.add_all([ada, bob, gone])
        await session.flush()
        session.add_all(
            [
                Post(id=1, title="Ada Lovelace", body="hello", views=1, big=2**40, score=0.5,
                     price=Decimal("1.5"), published=True, day=date(2026, 1, 1), at=_at(1),
                     ref=REF[0], color=Color.red, writer_id=ada.id),
                Post(id=2, title="100%", body=None, views=2, big=-5, score=None,
                     price=Decimal("2.25"), published=False, day=date(2026, 1, 2), at=_at(2),
                     ref=REF[1], color=Color.green, writer_id=ada.id),
                Post(id=3, title="a_b", body="x%y", views=3, big=0, score=1.5,
                     price=Decimal(0), published=True, day=None, at=None,
                     ref=REF[2], color=Color.blue, writer_id=bob.id),
                Post(id=4, title="a\\b", body="HELLO", views=4, big=7, score=-2.0,
                     price=Decimal("9.5"), published=False, day=date(2026, 1, 4), at=_at(4),
                     ref=REF[0], color=Color.red, writer_id=gone.id),
                Post(id=5, title="axb", body="", views=5, big=8, score=0.5,
                     price=Decimal("1.5"), published=True, day=date(2026, 1, 5), at=_at(5),
                     ref=REF[1], color=Color.green, writer_id=None),
                Post(id=6, title="ada", body="deleted", views=1, published=True,
                     deleted_at=_at(0), writer_id=bob.id),
            ]
        )  # fmt: skip
    return db


async def _ids(db: Database, filter_by: Any, **kwargs: Any) -> list[int]:
    async with db.session() as session:
        rows = await PostRepository(session).list_all(filter_by=filter_by, order_by="id", **kwargs)
        return [row.id for row in rows]


OPERATOR_CASES: list[tuple[str, dict[str, Any], list[int]]] = [
    ("int-eq", {"views": 3}, [3]),
    ("int-eq-text", {"views": "3"}, [3]),
    ("int-ne", {"views__ne": 3}, [1, 2, 4, 5]),
    ("int-lt", {"views__lt": 3}, [1, 2]),
    ("int-le", {"views__le": 3}, [1, 2, 3]),
    ("int-gt", {"views__gt": 3}, [4, 5]),
    ("int-ge", {"views__ge": "3"}, [3, 4, 5]),
    ("int-in", {"views__in": [1, 5, 9]}, [1, 5]),
    ("int-in-text", {"views__in": "1,5"}, [1, 5]),
    ("int-not-in", {"views__not_in": [1, 5]}, [2, 3, 4]),
    ("int-between", {"views__between": [2, 4]}, [2, 3, 4]),
    ("bigint-gt", {"big__gt": 2**39}, [1]),
    ("float-eq", {"score": 0.5}, [1, 5]),
    ("float-ne-null", {"score__ne": 0.5}, [2, 3, 4]),
    ("float-lt-text", {"score__lt": "1"}, [1, 4, 5]),
    ("float-is-null", {"score__is_null": True}, [2]),
    ("decimal-eq", {"price": "1.50"}, [1, 5]),
    ("decimal-between", {"price__between": ["1", "3"]}, [1, 2, 5]),
    ("bool-eq", {"published": True}, [1, 3, 5]),
    ("bool-eq-text", {"published": "false"}, [2, 4]),
    ("bool-ne", {"published__ne": True}, [2, 4]),
    ("date-ge", {"day__ge": "2026-01-02"}, [2, 4, 5]),
    ("date-null", {"day": None}, [3]),
    ("date-not-null", {"day__is_null": "false"}, [1, 2, 4, 5]),
    ("datetime-lt", {"at__lt": "2026-01-01T03:00:00+00:00"}, [1, 2]),
    ("datetime-zone", {"at__ge": "2026-01-01T05:00:00+01:00"}, [4, 5]),
    ("datetime-date-only", {"at__gt": "2026-01-01"}, [1, 2, 4, 5]),
    ("datetime-object", {"at": _at(4)}, [4]),
    ("uuid-eq", {"ref": str(REF[0]).upper()}, [1, 4]),
    ("uuid-in", {"ref__in": [REF[1], str(REF[2])]}, [2, 3, 5]),
    ("enum-name", {"color": "green"}, [2, 5]),
    ("enum-member", {"color__ne": Color.red}, [2, 3, 5]),
    ("enum-in", {"color__in": ["red", "b"]}, [1, 3, 4]),
    ("text-eq", {"title": "axb"}, [5]),
    ("text-like-whole", {"title__like": "Ada Lovelace"}, [1]),
    ("text-like-case", {"title__like": "ada lovelace"}, []),
    ("text-ilike", {"title__ilike": "ada LOVELACE"}, [1]),
    ("text-startswith", {"title__startswith": "a"}, [3, 4, 5]),
    ("text-istartswith", {"title__istartswith": "a"}, [1, 3, 4, 5]),
    ("text-contains-case", {"title__contains": "Ada"}, [1]),
    ("text-icontains", {"title__icontains": "LOVE"}, [1]),
    ("text-endswith", {"title__endswith": "b"}, [3, 4, 5]),
    ("text-iendswith", {"title__iendswith": "LACE"}, [1]),
    ("text-in", {"title__in": ["axb", "a_b"]}, [3, 5]),
    ("text-null-body", {"body__is_null": True}, [2]),
    ("text-ne-null-body", {"body__ne": "hello"}, [2, 3, 4, 5]),
    ("text-icontains-null", {"body__icontains": "hello"}, [1, 4]),
    ("text-empty-contains", {"body__contains": ""}, [1, 3, 4, 5]),
    ("fk-null", {"writer_id": None}, [5]),
    ("or", {"or": [{"views": 1}, {"title__endswith": "b"}]}, [1, 3, 4, 5]),
    ("not", {"not": {"views__in": [1, 2]}}, [3, 4, 5]),
    ("not-contains", {"not": {"title__contains": "a"}}, [2]),
    ("not-ilike", {"not": {"title__ilike": "AXB"}}, [1, 2, 3, 4]),
    ("not-of-nullable", {"not": {"score__gt": 0}}, [2, 4]),
    ("and-or-not", {"published": True, "or": [{"not": {"views": 1}}, {"score": 0.5}]}, [1, 3, 5]),
    ("empty-or-member", {"or": [{}, {"views": 99}]}, [1, 2, 3, 4, 5]),
]


class TestOperators:
    async def test_every_operator_and_type(self, seeded: Database) -> None:
        """Each operator and value type selects the rows it means (soft-deleted rows never)."""
        wrong = {}
        for name, filter_by, expected in OPERATOR_CASES:
            found = await _ids(seeded, filter_by)
            if found != expected:
                wrong[name] = (found, expected)
        assert wrong == {}

    async def test_in_memory_agrees(self, seeded: Database) -> None:
        """The in-memory repository gives the same rows for the same filters."""
        async with seeded.session() as session:
            posts = list((await session.execute(select(Post))).scalars())
        memory = InMemoryRepository.for_repository(PostRepository, posts)
        wrong = {}
        for name, filter_by, expected in OPERATOR_CASES:
            found = [post.id for post in await memory.list_all(filter_by=filter_by, order_by="id")]
            if found != expected:
                wrong[name] = (found, expected)
        assert wrong == {}

    async def test_query_string_filters(self, seeded: Database) -> None:
        """A parsed query string filters like the mapping form."""
        tree = parse_query_string(
            "views__ge=2&color__in=red,green&or=%5B%7B%22published%22%3Atrue%7D%2C"
            "%7B%22day__is_null%22%3Atrue%7D%5D&order_by=id",
            ignore={"order_by"},
        )
        assert await _ids(seeded, tree) == [5]


ESCAPE_CASES: list[tuple[dict[str, Any], list[int]]] = [
    ({"title__like": "100%"}, [2]),
    ({"title__like": "a_b"}, [3]),
    ({"title__ilike": "A_B"}, [3]),
    ({"title__like": "a\\b"}, [4]),
    ({"title__contains": "%"}, [2]),
    ({"title__contains": "_"}, [3]),
    ({"title__icontains": "\\"}, [4]),
    ({"title__startswith": "a_"}, [3]),
    ({"title__endswith": "\\b"}, [4]),
    ({"title__like": "a%"}, []),
    ({"title__like": "a*b"}, []),
    ({"title__contains": "*"}, []),
    ({"title__startswith": "[a]"}, []),
    ({"title__contains": "?"}, []),
    ({"body__contains": "%"}, [3]),
]


class TestEscaping:
    async def test_wildcards_are_literal(self, seeded: Database) -> None:
        """%, _ and \\ (and GLOB's *, ? and [) in values match only themselves."""
        wrong = []
        for filter_by, expected in ESCAPE_CASES:
            found = await _ids(seeded, filter_by)
            if found != expected:
                wrong.append((filter_by, found, expected))
        assert wrong == []


REFUSED_CASES: list[tuple[dict[str, Any], str]] = [
    ({"views": "abc"}, "'views'"),
    ({"views": 2**31}, "32-bit"),
    ({"big": 2**70}, "64-bit"),
    ({"views": 1.5}, "'views'"),
    ({"views": True}, "'views'"),
    ({"score": "nan"}, "finite"),
    ({"price": "1e99999"}, "finite"),
    ({"published": "maybe"}, "true or false"),
    ({"day": "2026-13-01"}, "'day'"),
    ({"at": "2026-01-01T10:00:00"}, "no time zone"),
    ({"at": "yesterday"}, "'at'"),
    ({"ref": "not-a-uuid"}, "UUID"),
    ({"color": "purple"}, "one of red, green, blue"),
    ({"title": 5}, "text"),
    ({"title__lt": "a"}, "does not allow 'lt'"),
    ({"published__in": [True]}, "does not allow 'in'"),
    ({"views__contains": "1"}, "does not allow 'contains'"),
    ({"deleted_at": None}, "Cannot filter by 'deleted_at'"),
    ({"writer.id": 1}, "Cannot filter by 'writer.id'"),
    ({"writer.email__lt": "a"}, "does not allow"),
    ({"views__in": ["1", "x"]}, "'views'"),
]


class TestRefusedBeforeSql:
    async def test_refused(self, seeded: Database) -> None:
        """Bad values and undeclared fields or operators are refused, naming the field, no SQL."""
        async with seeded.session() as session:
            repo = PostRepository(session)
            with count_queries() as counter:
                for filter_by, message in REFUSED_CASES:
                    for call in (repo.list_all, repo.count, repo.exists, repo.paginate, repo.page):
                        with pytest.raises(InvalidQueryError, match=message):
                            await call(filter_by=filter_by)
                    with pytest.raises(InvalidQueryError, match=message):
                        await repo.delete_where(filter_by=filter_by)
            assert counter.count == 0

    async def test_bounds(self, seeded: Database) -> None:
        """A repository's declared bounds are enforced before SQL."""

        class Tight(PostRepository):
            filter_limits = FilterLimits(max_clauses=2, max_in=2, max_depth=1, max_string=4)

        async with seeded.session() as session:
            repo = Tight(session)
            with count_queries() as counter:
                for filter_by in (
                    {"views": 1, "title": "a", "body": "b"},
                    {"views__in": [1, 2, 3]},
                    {"not": {"not": {"views": 1}}},
                    {"title": "toolong"},
                ):
                    with pytest.raises(InvalidQueryError):
                        await repo.list_all(filter_by=filter_by)
            assert counter.count == 0
            assert [p.id for p in await repo.list_all(filter_by={"views__in": [1, 2]})] == [1, 2]

    async def test_hostile_query_strings_send_no_sql(self, seeded: Database) -> None:
        """Hostile query strings either filter or are refused with no statement sent."""
        refused = 0
        async with seeded.session() as session:
            repo = PostRepository(session)
            for text in hostile_strings(300, seed=99):
                with count_queries() as counter:
                    try:
                        await repo.count(filter_by=parse_query_string(text))
                    except InvalidQueryError:
                        refused += 1
                        assert counter.count == 0, text
        assert refused > 0


class TestRelationships:
    async def test_to_one_path(self, seeded: Database) -> None:
        """``writer.email`` matches posts whose live writer matches; deleted writers never."""
        assert await _ids(seeded, {"writer.email__icontains": "ADA"}) == [1, 2]
        assert await _ids(seeded, {"writer.email": "gone@x.io"}) == []
        assert await _ids(seeded, {"not": {"writer.name__startswith": "A"}}) == [3, 4, 5]

    async def test_to_many_path_without_duplicates(self, seeded: Database) -> None:
        """``posts.title`` matches writers with any live matching post, each writer once."""
        async with seeded.session() as session:
            repo = WriterRepository(session)
            found = await repo.list_all(filter_by={"posts.title__icontains": "a"}, order_by="name")
            assert [w.name for w in found] == ["Ada", "Bob"]
            assert await repo.count(filter_by={"posts.title__icontains": "a"}) == 2
            # Bob's only post titled "ada" is soft-deleted: it does not count.
            assert [w.name for w in await repo.list_all(filter_by={"posts.title": "ada"})] == []
            assert [w.name for w in await repo.list_all(filter_by={"posts.views__ge": 4})] == []
            no_posts = await repo.list_all(filter_by={"not": {"posts.views__ge": 0}})
            assert no_posts == []

    async def test_include_deleted_reaches_both_sides(self, seeded: Database) -> None:
        """include_deleted lets soft-deleted parents and children match too."""
        async with seeded.session() as session:
            writers = WriterRepository(session)
            found = await writers.list_all(
                filter_by={"posts.title": "ada"}, include_deleted=True, order_by="name"
            )
            assert [w.name for w in found] == ["Bob"]
            posts = PostRepository(session)
            found_posts = await posts.list_all(
                filter_by={"writer.email": "gone@x.io"}, include_deleted=True
            )
            assert [p.id for p in found_posts] == [4]

    def test_undeclared_relationship_is_a_type_error(self) -> None:
        """Declaring a path through a missing relationship fails at first use."""
        from underlay.query import check_filterable

        with pytest.raises(TypeError, match="no relationship 'author'"):
            check_filterable(Post, ("author.email",))
        with pytest.raises(TypeError, match="not a column attribute"):
            check_filterable(Post, ("writer.nope",))


class TestComposition:
    async def test_paginate_with_filters(self, seeded: Database) -> None:
        """Keyset pages follow the filter; a cursor replayed with other filters is refused."""
        async with seeded.session() as session:
            repo = PostRepository(session)
            wanted = {"views__ge": 2}
            first = await repo.paginate(filter_by=wanted, order_by="views", limit=2)
            assert [p.id for p in first.items] == [2, 3]
            rest = await repo.paginate(
                filter_by={"views__ge": "2"}, order_by="views", limit=2, after=first.next_cursor
            )
            assert [p.id for p in rest.items] == [4, 5]
            with count_queries() as counter:
                for other in ({"views__ge": 3}, None, {"views__gt": 2}):
                    with pytest.raises(InvalidQueryError, match="same order_by and filters"):
                        await repo.paginate(
                            filter_by=other, order_by="views", limit=2, after=first.next_cursor
                        )
            assert counter.count == 0

    async def test_page_count_exists_delete_where(self, seeded: Database) -> None:
        """page, count, exists and delete_where all take the same filters."""
        async with seeded.session() as session:
            repo = PostRepository(session)
            page = await repo.page(filter_by={"published": True}, size=2, number=2)
            assert ([p.id for p in page.items], page.total) == ([5], 3)
            assert await repo.count(filter_by={"title__icontains": "a"}) == 4
            assert await repo.exists(filter_by={"writer.name": "Bob"})
            assert not await repo.exists(filter_by={"writer.name": "Gone"})
            assert await repo.delete_where(filter_by={"writer.name": "Ada"}) == 2
            assert await _ids(seeded, None) == [1, 2, 3, 4, 5]  # other session: uncommitted
        assert await _ids(seeded, None) == [3, 4, 5]

    async def test_cached_repository_keys_follow_filters(self, backend: Any) -> None:
        """CachedRepository keeps a separate entry per filter."""

        class PostOut(BaseModel):
            model_config = ConfigDict(from_attributes=True)
            id: int

        cache = MemoryCache()
        database = Database(backend.url, cache=cache)
        try:
            from tests.conftest import reset_schema

            await reset_schema(database)
            await database.create_all(QueryBase.metadata)
            async with database.session() as session:
                session.add(Writer(id=1, email="ada@x.io"))
                session.add_all(
                    [Post(id=1, title="a", views=1, writer_id=1), Post(id=2, title="b", views=2)]
                )
            by_writer = {"writer.email": "ada@x.io"}
            for _ in range(2):
                async with database.session() as session:
                    cached = CachedRepository(PostRepository(session), cache, schema=PostOut)
                    low = await cached.list_all(filter_by={"views__lt": 2})
                    high = await cached.list_all(filter_by={"views__ge": "2"})
                    assert ([p.id for p in low], [p.id for p in high]) == ([1], [2])
                    assert [p.id for p in await cached.list_all(filter_by=by_writer)] == [1]
            async with database.session() as session:
                (await session.get_one(Writer, 1)).email = "other@x.io"
            async with database.session() as session:
                cached = CachedRepository(PostRepository(session), cache, schema=PostOut)
                # a write to the related table invalidates lists filtered through it
                assert await cached.list_all(filter_by=by_writer) == []
        finally:
            await database.dispose()
            await cache.aclose()
