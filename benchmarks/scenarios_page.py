"""Pagination scenarios: 50-row pages at increasing depth, OFFSET against keyset."""

from __future__ import annotations

import contextlib
from typing import Any

from sqlalchemy import select

from ._env import Backend
from ._harness import Contender, Scenario
from ._stacks import UnavailableError, aa_filters, aa_repository, guarded, underlay_repository
from .models import ReadItem
from .scenarios_read import COLUMNS, _raw_fetch, _sql

PAGE = 50
DEPTHS = (0, 10_000, 50_000, 99_000)


class CursorWalk:
    """Mint underlay keyset cursors at given depths by paging there once (untimed)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.cursors: dict[int, Any] = {0: None}

    async def cursor_at(self, depth: int) -> Any:
        if depth in self.cursors:
            return self.cursors[depth]
        repo_cls = underlay_repository(ReadItem)
        start = max(d for d in self.cursors if d <= depth)
        cursor, position = self.cursors[start], start
        async with self.backend.db.session() as session:
            repo = repo_cls(session)
            step = 1_000 if (depth - start) % 1_000 == 0 else PAGE
            while position < depth:
                step = min(step, depth - position)
                try:
                    page = await repo.paginate(order_by=ReadItem.id, limit=step, after=cursor)
                except Exception:
                    if step == PAGE:
                        raise
                    step = PAGE  # the repository caps the page size: walk in small steps
                    continue
                cursor, position = page.next_cursor, position + len(page.items)
                if position in DEPTHS:
                    self.cursors[position] = cursor
        # A cursor minted by a 1,000-row page must be accepted for a 50-row page too.
        return self.cursors.setdefault(depth, cursor)


def _raw_offset(backend: Backend, depth: int, calls: int) -> Any:
    sql = _sql(
        backend,
        f"SELECT {COLUMNS} FROM {ReadItem.__tablename__} ORDER BY id LIMIT {PAGE} OFFSET $1",
    )

    async def run() -> None:
        for _ in range(calls):
            if backend.is_postgres:
                async with backend.raw.acquire() as conn:
                    rows = await conn.fetch(sql, depth)
            else:
                rows = await _raw_fetch(backend, backend.raw, sql, depth)
            assert rows[0][0] == depth + 1

    return run


def _raw_keyset(backend: Backend, depth: int, calls: int) -> Any:
    sql = _sql(
        backend,
        f"SELECT {COLUMNS} FROM {ReadItem.__tablename__} WHERE id > $1 ORDER BY id LIMIT {PAGE}",
    )
    after = depth  # ids are 1..100,000 without gaps: the last id before the page is its depth

    async def run() -> None:
        for _ in range(calls):
            if backend.is_postgres:
                async with backend.raw.acquire() as conn:
                    rows = await conn.fetch(sql, after)
            else:
                rows = await _raw_fetch(backend, backend.raw, sql, after)
            assert rows[0][0] == depth + 1

    return run


def _underlay_keyset(backend: Backend, walk: CursorWalk, depth: int, calls: int) -> Any:
    def build() -> Any:
        repo_cls = underlay_repository(ReadItem)

        async def run() -> None:
            cursor = await walk.cursor_at(depth)
            for _ in range(calls):
                async with backend.db.session(readonly=True) as session:
                    page = await repo_cls(session).paginate(
                        order_by=ReadItem.id, limit=PAGE, after=cursor
                    )
                assert page.items[0].id == depth + 1

        return run

    return build


def _underlay_offset(backend: Backend, depth: int, calls: int) -> Any:
    def build() -> Any:
        repo_cls = underlay_repository(ReadItem)

        async def run() -> None:
            for _ in range(calls):
                async with backend.db.session(readonly=True) as session:
                    page = await repo_cls(session).page(
                        order_by=ReadItem.id, number=depth // PAGE + 1, size=PAGE, count="none"
                    )
                assert page.items[0].id == depth + 1

        return run

    return build


def depth_scenario(
    backend: Backend, walk: CursorWalk, depth: int, calls: int, reps: int
) -> Scenario:
    """One 50-row page at ``depth``, a session per call, by every contender."""

    async def orm_offset() -> None:
        for _ in range(calls):
            async with backend.sessionmaker() as session:
                stmt = select(ReadItem).order_by(ReadItem.id).offset(depth).limit(PAGE)
                assert (await session.scalars(stmt)).first().id == depth + 1

    async def orm_keyset() -> None:
        for _ in range(calls):
            async with backend.sessionmaker() as session:
                stmt = select(ReadItem).where(ReadItem.id > depth).order_by(ReadItem.id).limit(PAGE)
                assert (await session.scalars(stmt)).first().id == depth + 1

    def aa() -> Any:
        repo_cls = aa_repository(ReadItem)
        filters = aa_filters()

        async def run() -> None:
            for _ in range(calls):
                async with backend.sessionmaker() as session:
                    items = await repo_cls(session=session).get_many(
                        filters.OrderBy(field_name="id", sort_order="asc"),
                        filters.LimitOffset(limit=PAGE, offset=depth),
                    )
                assert items[0].id == depth + 1

        return run

    driver = "asyncpg" if backend.is_postgres else "aiosqlite"
    contenders = [
        Contender(f"{driver} keyset", "raw", _raw_keyset(backend, depth, calls)),
        Contender(f"{driver} OFFSET", "raw", _raw_offset(backend, depth, calls)),
        Contender("SQLAlchemy ORM keyset", "orm", orm_keyset),
        Contender("SQLAlchemy ORM OFFSET", "orm", orm_offset),
        guarded("advanced-alchemy get_many OFFSET", "advanced-alchemy", aa),
        guarded("underlay page (OFFSET)", "underlay", _underlay_offset(backend, depth, calls)),
        guarded(
            "underlay paginate (keyset)", "underlay", _underlay_keyset(backend, walk, depth, calls)
        ),
    ]

    async def prepare() -> None:
        with contextlib.suppress(UnavailableError):
            await walk.cursor_at(depth)

    label = f"{depth // 1000}k" if depth else "0"
    return Scenario(
        id=f"{backend.label}.page.{label}",
        backend=backend.label,
        title=f"page of 50 at depth {depth:,}, session per call",
        ops=calls,
        unit="calls",
        reps=reps,
        contenders=contenders,
        limit=contenders[0].name,
        reference="underlay paginate (keyset)",
        prepare=prepare,
    )


def depth_cost_scenario(backend: Backend, walk: CursorWalk, calls: int, reps: int) -> Scenario:
    """underlay's keyset pages at every depth, interleaved, against its OFFSET pages."""
    contenders = [
        Contender(f"raw keyset @{d:,}", "raw", _raw_keyset(backend, d, calls)) for d in (0, 99_000)
    ]
    contenders += [
        guarded(f"underlay paginate @{d:,}", "underlay", _underlay_keyset(backend, walk, d, calls))
        for d in DEPTHS
    ]
    contenders += [
        guarded(f"underlay page OFFSET @{d:,}", "underlay", _underlay_offset(backend, d, calls))
        for d in (0, 99_000)
    ]

    async def prepare() -> None:
        for depth in DEPTHS:
            try:
                await walk.cursor_at(depth)
            except UnavailableError:
                return

    return Scenario(
        id=f"{backend.label}.page-depth",
        backend=backend.label,
        title="cost of depth: 50-row pages from depth 0 to 99,000",
        ops=calls,
        unit="calls",
        reps=reps,
        contenders=contenders,
        limit="raw keyset @0",
        reference="underlay paginate @0",
        prepare=prepare,
    )


#: The filter of the filtered-page scenario, as a client would send it in a query string.
FILTER_QUERY = "category=cat-03&price__ge=5000&name__icontains=item"


def filtered_scenario(backend: Backend, calls: int, reps: int) -> Scenario:
    """The second 50-row keyset page of a filtered query: underlay against hand-written ORM.

    underlay parses the query string, checks and coerces the values, compiles the filter and
    verifies the signed cursor on every call; the hand-written query knows its filter.
    """
    state: dict[str, Any] = {}

    async def orm() -> None:
        after = state["last_id"]
        for _ in range(calls):
            async with backend.sessionmaker() as session:
                stmt = (
                    select(ReadItem)
                    .where(
                        ReadItem.category == "cat-03",
                        ReadItem.price >= 5000,
                        ReadItem.name.ilike("%item%"),
                        ReadItem.id > after,
                    )
                    .order_by(ReadItem.id)
                    .limit(PAGE + 1)
                )
                items = (await session.scalars(stmt)).all()
            assert items[0].id == state["first_id"]

    def underlay() -> Any:
        repo_cls = underlay_repository(ReadItem)
        try:
            from underlay.query import parse_query_string
        except ImportError as exc:
            raise UnavailableError(f"underlay.query missing ({exc})") from exc

        async def run() -> None:
            for _ in range(calls):
                async with backend.db.session(readonly=True) as session:
                    page = await repo_cls(session).paginate(
                        filter_by=parse_query_string(FILTER_QUERY),
                        order_by="id",
                        limit=PAGE,
                        after=state["cursor"],
                    )
                assert page.items[0].id == state["first_id"]

        return run

    async def prepare() -> None:
        from underlay.query import parse_query_string

        repo_cls = underlay_repository(ReadItem)
        async with backend.db.session() as session:
            repo = repo_cls(session)
            first = await repo.paginate(
                filter_by=parse_query_string(FILTER_QUERY), order_by="id", limit=PAGE
            )
            second = await repo.paginate(
                filter_by=parse_query_string(FILTER_QUERY),
                order_by="id",
                limit=PAGE,
                after=first.next_cursor,
            )
        state.update(
            cursor=first.next_cursor, last_id=first.items[-1].id, first_id=second.items[0].id
        )

    contenders = [
        Contender("SQLAlchemy ORM hand-written", "orm", orm),
        guarded("underlay paginate(filter_by=query string)", "underlay", underlay),
    ]
    return Scenario(
        id=f"{backend.label}.page.filtered",
        backend=backend.label,
        title="filtered keyset page (2nd page, 3 conditions), session per call",
        ops=calls,
        unit="calls",
        reps=reps,
        contenders=contenders,
        reference="underlay paginate(filter_by=query string)",
        prepare=prepare,
    )
