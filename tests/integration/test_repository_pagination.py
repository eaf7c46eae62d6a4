"""Keyset and offset pagination, and caller-supplied sort and filter input, on every backend."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import MetaData, event

from tests.integration.repo_models import (
    ArticleRepository,
    Author,
    AuthorRepository,
    Reading,
    ReadingRepository,
    RepoBase,
)
from underlay import CursorPage, Database, InvalidQueryError
from underlay.repository import CURSOR_SECRET_ENV
from underlay.testing import count_queries


@pytest.fixture
def metadata() -> MetaData:
    return RepoBase.metadata


@pytest.fixture(autouse=True)
def cursor_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CURSOR_SECRET_ENV, "test secret shared by every worker")


async def _authors(db: Database, count: int, *, start: int = 0) -> list[Author]:
    async with db.session() as session:
        return await AuthorRepository(session).save_all(
            Author(email=f"a{i:03}@example.com", name=f"n{i % 5}", rank=i % 4)
            for i in range(start, start + count)
        )


async def _walk(repo: AuthorRepository, *where: Any, **kwargs: Any) -> list[list[Author]]:
    pages: list[list[Author]] = []
    cursor = None
    while True:
        page = await repo.paginate(*where, after=cursor, **kwargs)
        pages.append(page.items)
        if not page.has_more:
            assert page.next_cursor is None
            return pages
        cursor = page.next_cursor


class TestKeyset:
    @pytest.mark.parametrize(
        "order_by",
        [
            "-rank",
            "rank,-email",
            "-name,rank",
            [Author.rank.desc(), Author.email],
            "-created_at",
            "created_at,-rank",
        ],
        ids=[
            "desc-non-unique",
            "mixed",
            "two-non-unique",
            "expressions",
            "server-timestamp-desc",
            "server-timestamp-asc",
        ],
    )
    async def test_pages_match_full_ordering(self, db: Database, order_by: Any) -> None:
        """Concatenated pages equal the full ordering (primary key as the tie-breaker)."""
        await _authors(db, 23)
        async with db.session() as session:
            repo = AuthorRepository(session)
            pages = await _walk(repo, order_by=order_by, limit=5)
            keys = repo._keyset_keys(order_by)
            expected = await repo.list_all(order_by=[key.clause for key in keys])
        assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
        assert [a.id for p in pages for a in p] == [a.id for a in expected]

    async def test_every_row_once_while_rows_are_inserted(self, db: Database) -> None:
        """Over a non-unique key, each row appears exactly once despite inserts between pages."""
        originals = await _authors(db, 30)
        seen: list[int] = []
        cursor = None
        extra = 100
        while True:
            async with db.session() as session:
                page = await AuthorRepository(session).paginate(
                    order_by="rank", limit=4, after=cursor
                )
            seen.extend(a.id for a in page.items)
            if not page.has_more:
                break
            cursor = page.next_cursor
            await _authors(db, 2, start=extra)  # ranks land before and after the cursor
            extra += 2
        assert len(seen) == len(set(seen))
        assert {a.id for a in originals} <= set(seen)

    async def test_last_page_and_empty(self, db: Database) -> None:
        """An exact fit ends with has_more False; an empty table gives an empty page."""
        async with db.session() as session:
            empty = await AuthorRepository(session).paginate(limit=3)
        assert empty == CursorPage(items=[], next_cursor=None, has_more=False)
        await _authors(db, 3)
        async with db.session() as session:
            page = await AuthorRepository(session).paginate(limit=3)
        assert (len(page.items), page.has_more, page.next_cursor) == (3, False, None)

    async def test_filters_apply_and_rows_never_skipped(self, db: Database) -> None:
        """Criteria and filter_by narrow the pages; no page skips rows with an OFFSET."""
        await _authors(db, 20)
        sent: list[tuple[str, Any]] = []

        def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
            sent.append((statement, parameters))

        event.listen(db.engine.sync_engine, "before_cursor_execute", record)
        try:
            async with db.session() as session:
                pages = await _walk(
                    AuthorRepository(session), Author.rank > 0, filter_by={"name": "n1"}, limit=2
                )
        finally:
            event.remove(db.engine.sync_engine, "before_cursor_execute", record)
        rows = [a for p in pages for a in p]
        assert len(pages) > 1
        assert all(a.rank > 0 and a.name == "n1" for a in rows)
        selects = [
            (sql, params) for sql, params in sent if sql.lstrip().upper().startswith("SELECT")
        ]
        assert len(selects) == len(pages)
        # SQLite always renders an OFFSET next to LIMIT; it must stay 0
        assert all(params[-1] == 0 for sql, params in selects if "OFFSET" in sql.upper())

    async def test_exact_values_round_trip(self, db: Database) -> None:
        """Datetimes (microseconds), decimals and UUID keys survive the cursor exactly."""
        base = datetime(2024, 3, 1, tzinfo=UTC)
        async with db.session() as session:
            await ReadingRepository(session).save_all(
                Reading(
                    sensor=f"s{i % 3}",
                    taken_at=base + timedelta(microseconds=i * 7 + (i % 2)),
                    amount=Decimal("10.0001") * (i % 4),
                )
                for i in range(17)
            )
        async with db.session() as session:
            repo = ReadingRepository(session)
            for order_by in ("-taken_at", "amount,-taken_at", "sensor,amount"):
                pages: list[Reading] = []
                cursor = None
                while True:
                    page = await repo.paginate(order_by=order_by, limit=4, after=cursor)
                    pages.extend(page.items)
                    if not page.has_more:
                        break
                    cursor = page.next_cursor
                keys = repo._keyset_keys(order_by)
                expected = await repo.list_all(order_by=[key.clause for key in keys])
                assert [r.id for r in pages] == [r.id for r in expected], order_by

    async def test_nullable_sort_column_refused(self, db: Database) -> None:
        """Sorting a keyset page on a nullable column is refused (NULLs would be skipped)."""
        async with db.session() as session:
            with pytest.raises(InvalidQueryError, match="nullable"):
                await AuthorRepository(session).paginate(order_by=Author.bio)


class TestCursorTampering:
    async def _cursor(self, db: Database, order_by: str = "-rank") -> str:
        await _authors(db, 6)
        async with db.session() as session:
            page = await AuthorRepository(session).paginate(order_by=order_by, limit=2)
        assert page.next_cursor is not None
        return page.next_cursor

    @pytest.mark.parametrize(
        "mangle",
        [
            lambda c: ("A" if c[5] != "A" else "B").join([c[:5], c[6:]]),
            lambda c: c[:-3] + ("xyz" if not c.endswith("xyz") else "abc"),
            lambda c: c.split(".")[0],
            lambda c: "not a cursor",
            lambda c: c + "." + c,
            lambda c: "",
        ],
        ids=["payload-byte", "signature", "unsigned", "garbage", "extra-part", "empty"],
    )
    async def test_tampered_cursor_refused(self, db: Database, mangle: Any) -> None:
        """Any change to a cursor raises InvalidQueryError before SQL is sent."""
        cursor = await self._cursor(db)
        async with db.session() as session:
            repo = AuthorRepository(session)
            with count_queries() as counter, pytest.raises(InvalidQueryError):
                await repo.paginate(order_by="-rank", limit=2, after=mangle(cursor))
            assert counter.count == 0

    async def test_forged_payload_refused(self, db: Database) -> None:
        """A payload re-encoded with other values but the old signature is refused."""
        cursor = await self._cursor(db)
        body, _, signature = cursor.partition(".")
        payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
        payload["v"][0] = 0
        forged_body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=")
        async with db.session() as session:
            with pytest.raises(InvalidQueryError):
                await AuthorRepository(session).paginate(
                    order_by="-rank", after=f"{forged_body.decode()}.{signature}"
                )

    async def test_other_sort_order_refused(self, db: Database) -> None:
        """A cursor minted for one order_by is refused under another."""
        cursor = await self._cursor(db, "-rank")
        async with db.session() as session:
            with pytest.raises(InvalidQueryError):
                await AuthorRepository(session).paginate(order_by="rank", after=cursor)

    async def test_foreign_secret_and_table_refused(self, db: Database) -> None:
        """A cursor signed with another secret, or for another table, is refused."""
        cursor = await self._cursor(db)

        class OtherSecret(AuthorRepository):
            cursor_secret = "a different secret of enough length"  # noqa: S105 - a test key

        async with db.session() as session:
            with pytest.raises(InvalidQueryError):
                await OtherSecret(session).paginate(order_by="-rank", after=cursor)
            with pytest.raises(InvalidQueryError):
                await ArticleRepository(session).paginate(after=cursor)


class TestCallerInput:
    @pytest.mark.parametrize(
        "order_by",
        [
            "tenant",
            "bio",
            "articles",
            "__class__",
            "name; DROP TABLE authors",
            "name desc",
            "email,,rank",
            "rank,rank",
            "-",
            "created_at)--",
        ],
        ids=[
            "undeclared",
            "undeclared-nullable",
            "relationship",
            "dunder",
            "injection",
            "sql-direction",
            "empty-term",
            "duplicate",
            "bare-minus",
            "injection-paren",
        ],
    )
    async def test_bad_sort_refused_before_sql(self, db: Database, order_by: str) -> None:
        """A sort string naming anything but declared fields raises before any SQL."""
        async with db.session() as session:
            repo = AuthorRepository(session)
            with count_queries() as counter:
                for call in (repo.list_all, repo.paginate, repo.page):
                    with pytest.raises(InvalidQueryError):
                        await call(order_by=order_by)
            assert counter.count == 0

    @pytest.mark.parametrize(
        "filter_by",
        [
            {"bio": "x"},
            {"articles": 1},
            {"__dict__": 1},
            {"email = email OR 1=1 --": 1},
            {"email": ["a", "b"]},
            {"email": {"$ne": 1}},
        ],
        ids=["undeclared", "relationship", "dunder", "injection", "list-value", "operator"],
    )
    async def test_bad_filter_refused_before_sql(
        self, db: Database, filter_by: dict[str, Any]
    ) -> None:
        """A filter naming an undeclared field, or a non-scalar value, raises before SQL."""
        async with db.session() as session:
            repo = AuthorRepository(session)
            with count_queries() as counter:
                for call in (repo.list_all, repo.count, repo.exists, repo.paginate, repo.page):
                    with pytest.raises(InvalidQueryError):
                        await call(filter_by=filter_by)
            assert counter.count == 0

    async def test_filter_none_matches_null(self, db: Database) -> None:
        """A None filter value matches NULL."""

        class WithBio(AuthorRepository):
            filterable_fields = ("bio",)

        async with db.session() as session:
            repo = WithBio(session)
            await repo.save_all([Author(email="a@example.com", bio="x"), Author(email="b@x")])
            assert [a.email for a in await repo.list_all(filter_by={"bio": None})] == ["b@x"]


class TestOffsetPage:
    async def test_page_with_exact_total(self, db: Database) -> None:
        """page returns the requested slice in key order with the exact total."""
        authors = await _authors(db, 11)
        async with db.session() as session:
            page = await AuthorRepository(session).page(number=2, size=4)
        assert [a.id for a in page.items] == [a.id for a in authors[4:8]]
        assert (page.total, page.number, page.size, page.pages, page.has_next) == (
            11,
            2,
            4,
            3,
            True,
        )

    @pytest.mark.parametrize(
        ("number", "size", "queries", "total"),
        [
            (3, 4, 1, 11),  # the last page, 3 rows: the total follows from it
            (1, 20, 1, 11),  # everything on page 1
            (2, 4, 2, 11),  # a full page: counted
            (4, 4, 2, 11),  # past the end: counted
            (3, 10, 2, 11),  # empty page after the last: counted
        ],
        ids=["last-page", "one-page", "full-page", "past-the-end", "empty-after-last"],
    )
    async def test_total_of_the_last_page_needs_no_count(
        self, db: Database, number: int, size: int, queries: int, total: int
    ) -> None:
        """A short page gives the total itself; other pages send count(*)."""
        await _authors(db, 11)
        async with db.session() as session:
            repo = AuthorRepository(session)
            with count_queries() as counter:
                page = await repo.page(number=number, size=size)
            assert await repo.count() == total
        assert page.total == total
        assert counter.count == queries

    async def test_empty_first_page_total_is_zero_without_count(self, db: Database) -> None:
        """No rows at all: page 1 is empty and its total is 0, in one query."""
        async with db.session() as session:
            with count_queries() as counter:
                page = await AuthorRepository(session).page(number=1, size=5)
        assert (page.items, page.total, page.pages, page.has_next) == ([], 0, 1, False)
        assert counter.count == 1

    async def test_page_without_count(self, db: Database) -> None:
        """count='none' skips the count query and leaves total None."""
        await _authors(db, 5)
        async with db.session() as session:
            with count_queries() as counter:
                page = await AuthorRepository(session).page(
                    order_by="-rank", number=1, size=3, count="none"
                )
        assert page.total is None
        assert page.has_next
        assert counter.count == 1
        assert [a.rank for a in page.items] == [3, 2, 1]

    @pytest.mark.parametrize(
        "kwargs",
        [{"number": 0}, {"size": 0}, {"size": 10_000}, {"count": "estimate"}],
        ids=["number-zero", "size-zero", "size-too-big", "unknown-count"],
    )
    async def test_bad_arguments(self, db: Database, kwargs: dict[str, Any]) -> None:
        """Out-of-range page arguments raise InvalidQueryError."""
        async with db.session() as session:
            with pytest.raises(InvalidQueryError):
                await AuthorRepository(session).page(**kwargs)

    @pytest.mark.parametrize("limit", [0, -1, 1001], ids=["zero", "negative", "too-big"])
    async def test_bad_keyset_limit(self, db: Database, limit: int) -> None:
        """paginate limits outside 1..max_page_size raise InvalidQueryError."""
        async with db.session() as session:
            with pytest.raises(InvalidQueryError):
                await AuthorRepository(session).paginate(limit=limit)
