"""Read scenarios: get by primary key, a filtered list, pagination, counts, soft delete."""

from __future__ import annotations

import random
import sqlite3
from functools import partial
from typing import Any

from sqlalchemy import func, select

from ._env import SQLITE_PRAGMAS, Backend
from ._harness import Contender, Scenario
from ._stacks import aa_filters, aa_repository, guarded, soft_delete_active, underlay_repository
from .models import CATEGORIES, ROW_COLUMNS, ReadItem, SoftItem, as_records, make_rows

READ_ROWS = 100_000
COLUMNS = "id, sku, name, category, price, qty, created_at, updated_at"
SOFT_COLUMNS = COLUMNS + ", deleted_at"


async def load_read_tables(backend: Backend) -> None:
    """Fill the read and soft-delete tables with 100,000 rows each.

    Every eleventh soft-delete row is deleted: 11 and the 20 categories share no factor, so
    each category keeps the same share of live rows.
    """
    rows = as_records(make_rows(READ_ROWS))
    now = "now()" if backend.is_postgres else "strftime('%Y-%m-%d %H:%M:%f', 'now')"
    soft_update = f"UPDATE {SoftItem.__tablename__} SET deleted_at = {now} WHERE id % 11 = 0"
    tables = (ReadItem.__tablename__, SoftItem.__tablename__)
    if backend.is_postgres:
        async with backend.raw.acquire() as conn:
            for name in tables:
                await conn.copy_records_to_table(name, records=rows, columns=ROW_COLUMNS)
            await conn.execute(soft_update)
            for name in tables:
                await conn.execute(f"VACUUM ANALYZE {name}")
    else:
        conn = backend.raw
        await conn.execute("BEGIN")
        for name in tables:
            await conn.executemany(
                f"INSERT INTO {name} ({', '.join(ROW_COLUMNS)}) VALUES (?, ?, ?, ?, ?)", rows
            )
        await conn.execute(soft_update)
        await conn.execute("COMMIT")
        await conn.execute("ANALYZE")


def _sql(backend: Backend, sql: str) -> str:
    """Turn ``$n`` placeholders into ``?`` for SQLite."""
    if backend.is_postgres:
        return sql
    for i in range(9, 0, -1):
        sql = sql.replace(f"${i}", "?")
    return sql


async def _raw_fetch(backend: Backend, conn: Any, sql: str, *args: Any) -> list[Any]:
    if backend.is_postgres:
        return list(await conn.fetch(sql, *args))
    async with conn.execute(sql, args) as cursor:
        return list(await cursor.fetchall())


def get_scenario(backend: Backend, calls: int, reps: int, *, one_session: bool) -> Scenario:
    """Read ``calls`` rows by primary key, in a session per call or all in one session."""
    ids = random.Random(7).sample(range(1, READ_ROWS + 1), calls)
    sql = _sql(backend, f"SELECT {COLUMNS} FROM {ReadItem.__tablename__} WHERE id = $1")
    table = ReadItem.__table__
    driver = "asyncpg" if backend.is_postgres else "aiosqlite"

    async def raw() -> None:
        if backend.is_postgres:
            if one_session:
                async with backend.raw.acquire() as conn:
                    for i in ids:
                        assert (await conn.fetchrow(sql, i))[0] == i
            else:
                for i in ids:
                    async with backend.raw.acquire() as conn:
                        assert (await conn.fetchrow(sql, i))[0] == i
        else:
            for i in ids:
                async with backend.raw.execute(sql, (i,)) as cursor:
                    assert (await cursor.fetchone())[0] == i

    async def sqlite3_sync() -> None:
        conn = sqlite3.connect(str(backend.sqlite_path))
        try:
            for pragma in SQLITE_PRAGMAS:
                conn.execute(pragma)
            for i in ids:
                assert conn.execute(sql, (i,)).fetchone()[0] == i
        finally:
            conn.close()

    async def core() -> None:
        if one_session:
            async with backend.engine.connect() as conn:
                for i in ids:
                    (await conn.execute(select(table).where(table.c.id == i))).one()
        else:
            for i in ids:
                async with backend.engine.connect() as conn:
                    (await conn.execute(select(table).where(table.c.id == i))).one()

    async def orm() -> None:
        if one_session:
            async with backend.sessionmaker() as session:
                for i in ids:
                    assert (await session.get(ReadItem, i)).id == i
        else:
            for i in ids:
                async with backend.sessionmaker() as session:
                    assert (await session.get(ReadItem, i)).id == i

    def aa() -> Any:
        repo_cls = aa_repository(ReadItem)

        async def run() -> None:
            if one_session:
                async with backend.sessionmaker() as session:
                    repo = repo_cls(session=session)
                    for i in ids:
                        assert (await repo.get(i)).id == i
            else:
                for i in ids:
                    async with backend.sessionmaker() as session:
                        assert (await repo_cls(session=session).get(i)).id == i

        return run

    async def underlay_session_get() -> None:
        if one_session:
            async with backend.db.session(readonly=True) as session:
                for i in ids:
                    assert (await session.get(ReadItem, i)).id == i
        else:
            for i in ids:
                async with backend.db.session(readonly=True) as session:
                    assert (await session.get(ReadItem, i)).id == i

    def underlay(*, ping: bool = True, plain: bool = False, readonly: bool = True) -> Any:
        def build() -> Any:
            repo_cls = underlay_repository(ReadItem)
            db = backend.db if ping else backend.db_no_ping
            # plain=True: the repository in a plain SQLAlchemy session, to tell the cost of
            # the repository from the cost of Database's session
            opener = backend.sessionmaker if plain else partial(db.session, readonly=readonly)

            async def run() -> None:
                if one_session:
                    async with opener() as session:
                        repo = repo_cls(session)
                        for i in ids:
                            assert (await repo.get(i)).id == i
                else:
                    for i in ids:
                        async with opener() as session:
                            assert (await repo_cls(session).get(i)).id == i

            return run

        return build

    mode = "one session" if one_session else "session per call"
    contenders = [Contender(f"{driver} fetch by id", "raw", raw, note=mode)]
    if not backend.is_postgres:
        contenders.append(Contender("sqlite3 (sync)", "raw", sqlite3_sync, note="blocks the loop"))
    contenders += [
        Contender("SQLAlchemy Core select", "core", core),
        Contender("SQLAlchemy ORM session.get", "orm", orm),
        guarded("advanced-alchemy get", "advanced-alchemy", aa),
        Contender(
            "underlay session.get", "underlay", underlay_session_get, note="Database, readonly"
        ),
        guarded("underlay repo.get", "underlay", underlay(), note="readonly session"),
        guarded(
            "underlay repo.get, read-write session",
            "underlay",
            underlay(readonly=False),
            note="diagnostic: db.session()",
        ),
    ]
    if not one_session:
        contenders.append(
            guarded(
                "underlay repo.get, pool_pre_ping=False",
                "underlay",
                underlay(ping=False),
                note="diagnostic",
            )
        )
        contenders.append(
            guarded(
                "underlay repo.get, plain session",
                "underlay",
                underlay(plain=True),
                note="diagnostic: SQLAlchemy's sessionmaker",
            )
        )
    slug = "one-session" if one_session else "per-call"
    return Scenario(
        id=f"{backend.label}.get.{slug}",
        backend=backend.label,
        title=f"get by primary key, {mode}",
        ops=calls,
        unit="calls",
        reps=reps,
        contenders=contenders,
        limit=contenders[0].name,
        reference="underlay repo.get",
    )


def list_scenario(backend: Backend, calls: int, reps: int) -> Scenario:
    """List 50 rows of one category ordered by id, a session per call."""
    cats = [f"cat-{i % CATEGORIES:02d}" for i in range(calls)]
    sql = _sql(
        backend,
        f"SELECT {COLUMNS} FROM {ReadItem.__tablename__} WHERE category = $1 ORDER BY id LIMIT 50",
    )

    async def raw() -> None:
        if backend.is_postgres:
            for cat in cats:
                async with backend.raw.acquire() as conn:
                    assert len(await conn.fetch(sql, cat)) == 50
        else:
            for cat in cats:
                assert len(await _raw_fetch(backend, backend.raw, sql, cat)) == 50

    table = ReadItem.__table__

    async def core() -> None:
        for cat in cats:
            async with backend.engine.connect() as conn:
                stmt = select(table).where(table.c.category == cat).order_by(table.c.id).limit(50)
                assert len((await conn.execute(stmt)).all()) == 50

    async def orm() -> None:
        for cat in cats:
            async with backend.sessionmaker() as session:
                stmt = (
                    select(ReadItem).where(ReadItem.category == cat).order_by(ReadItem.id).limit(50)
                )
                assert len((await session.scalars(stmt)).all()) == 50

    def aa() -> Any:
        repo_cls = aa_repository(ReadItem)
        filters = aa_filters()

        async def run() -> None:
            for cat in cats:
                async with backend.sessionmaker() as session:
                    items = await repo_cls(session=session).get_many(
                        ReadItem.category == cat,
                        filters.OrderBy(field_name="id", sort_order="asc"),
                        filters.LimitOffset(limit=50, offset=0),
                    )
                    assert len(items) == 50

        return run

    def underlay(*, plain: bool = False, readonly: bool = True) -> Any:
        def build() -> Any:
            repo_cls = underlay_repository(ReadItem)
            opener = (
                backend.sessionmaker if plain else partial(backend.db.session, readonly=readonly)
            )

            async def run() -> None:
                for cat in cats:
                    async with opener() as session:
                        items = await repo_cls(session).list_all(
                            ReadItem.category == cat, order_by=ReadItem.id, limit=50
                        )
                        assert len(items) == 50

            return run

        return build

    driver = "asyncpg" if backend.is_postgres else "aiosqlite"
    contenders = [
        Contender(f"{driver} fetch", "raw", raw),
        Contender("SQLAlchemy Core select", "core", core),
        Contender("SQLAlchemy ORM select", "orm", orm),
        guarded("advanced-alchemy get_many", "advanced-alchemy", aa),
        guarded("underlay list_all", "underlay", underlay(), note="readonly session"),
        guarded(
            "underlay list_all, read-write session",
            "underlay",
            underlay(readonly=False),
            note="diagnostic: db.session()",
        ),
        guarded(
            "underlay list_all, plain session",
            "underlay",
            underlay(plain=True),
            note="diagnostic: SQLAlchemy's sessionmaker",
        ),
    ]
    return Scenario(
        id=f"{backend.label}.list50",
        backend=backend.label,
        title="list 50 rows with a filter, session per call",
        ops=calls,
        unit="calls",
        reps=reps,
        contenders=contenders,
        limit=contenders[0].name,
        reference="underlay list_all",
    )


def soft_delete_scenario(backend: Backend, calls: int, reps: int) -> Scenario:
    """List 50 live rows of a soft-delete model vs the same list with deleted rows included."""
    cats = [f"cat-{i % CATEGORIES:02d}" for i in range(calls)]
    base = f"SELECT {SOFT_COLUMNS} FROM {SoftItem.__tablename__} WHERE category = $1"
    filtered_sql = _sql(backend, base + " AND deleted_at IS NULL ORDER BY id LIMIT 50")
    unfiltered_sql = _sql(backend, base + " ORDER BY id LIMIT 50")

    def raw(sql: str) -> Any:
        async def run() -> None:
            for cat in cats:
                if backend.is_postgres:
                    async with backend.raw.acquire() as conn:
                        assert len(await conn.fetch(sql, cat)) == 50
                else:
                    assert len(await _raw_fetch(backend, backend.raw, sql, cat)) == 50

        return run

    async def orm_explicit() -> None:
        for cat in cats:
            async with backend.sessionmaker() as session:
                stmt = (
                    select(SoftItem)
                    .where(SoftItem.category == cat, SoftItem.deleted_at.is_(None))
                    .order_by(SoftItem.id)
                    .limit(50)
                )
                assert len((await session.scalars(stmt)).all()) == 50

    def underlay(*, include_deleted: bool) -> Any:
        def build() -> Any:
            repo_cls = underlay_repository(SoftItem)

            async def run() -> None:
                for cat in cats:
                    async with backend.db.session() as session:
                        items = await repo_cls(session).list_all(
                            SoftItem.category == cat,
                            order_by=SoftItem.id,
                            limit=50,
                            include_deleted=include_deleted,
                        )
                    assert len(items) == 50
                    if not include_deleted:
                        for item in items:
                            soft_delete_active(item)

            return run

        return build

    driver = "asyncpg" if backend.is_postgres else "aiosqlite"
    contenders = [
        Contender(f"{driver} live rows", "raw", raw(filtered_sql), note="deleted_at IS NULL"),
        Contender(f"{driver} all rows", "raw", raw(unfiltered_sql)),
        Contender("SQLAlchemy ORM explicit filter", "orm", orm_explicit),
        guarded("underlay list_all (filtered)", "underlay", underlay(include_deleted=False)),
        guarded("underlay list_all include_deleted", "underlay", underlay(include_deleted=True)),
    ]
    return Scenario(
        id=f"{backend.label}.soft-delete",
        backend=backend.label,
        title="soft-delete filtered list of 50 vs unfiltered, session per call",
        ops=calls,
        unit="calls",
        reps=reps,
        contenders=contenders,
        limit=contenders[0].name,
        reference="underlay list_all include_deleted",
    )


def count_scenario(backend: Backend, calls: int, reps: int) -> Scenario:
    """First page of 50 with the total over all 100,000 rows, by several count strategies."""
    name = ReadItem.__tablename__
    page_sql = f"SELECT {COLUMNS} FROM {name} ORDER BY id LIMIT 50"
    count_sql = f"SELECT count(*) FROM {name}"
    window_sql = f"SELECT {COLUMNS}, count(*) OVER () FROM {name} ORDER BY id LIMIT 50"

    async def raw_two() -> None:
        for _ in range(calls):
            if backend.is_postgres:
                async with backend.raw.acquire() as conn:
                    await conn.fetch(page_sql)
                    assert await conn.fetchval(count_sql) == READ_ROWS
            else:
                await _raw_fetch(backend, backend.raw, page_sql)
                assert (await _raw_fetch(backend, backend.raw, count_sql))[0][0] == READ_ROWS

    async def raw_window() -> None:
        for _ in range(calls):
            if backend.is_postgres:
                async with backend.raw.acquire() as conn:
                    rows = await conn.fetch(window_sql)
            else:
                rows = await _raw_fetch(backend, backend.raw, window_sql)
            assert rows[0][-1] == READ_ROWS

    async def orm_two() -> None:
        for _ in range(calls):
            async with backend.sessionmaker() as session:
                await session.scalars(select(ReadItem).order_by(ReadItem.id).limit(50))
                total = await session.scalar(select(func.count()).select_from(ReadItem))
                assert total == READ_ROWS

    def aa(*, window: bool) -> Any:
        def build() -> Any:
            repo_cls = aa_repository(ReadItem)
            filters = aa_filters()

            async def run() -> None:
                for _ in range(calls):
                    async with backend.sessionmaker() as session:
                        _, total = await repo_cls(session=session).get_many_and_count(
                            filters.OrderBy(field_name="id", sort_order="asc"),
                            filters.LimitOffset(limit=50, offset=0),
                            count_with_window_function=window,
                        )
                    assert total == READ_ROWS

            return run

        return build

    def underlay(count: str) -> Any:
        def build() -> Any:
            repo_cls = underlay_repository(ReadItem)

            async def run() -> None:
                for _ in range(calls):
                    async with backend.db.session(readonly=True) as session:
                        page = await repo_cls(session).page(
                            order_by=ReadItem.id, number=1, size=50, count=count
                        )
                    assert len(page.items) == 50
                    assert page.total == (READ_ROWS if count == "exact" else None)

            return run

        return build

    driver = "asyncpg" if backend.is_postgres else "aiosqlite"
    contenders = [
        Contender(f"{driver} page + count(*)", "raw", raw_two),
        Contender(f"{driver} count(*) OVER ()", "raw", raw_window),
        Contender("SQLAlchemy ORM page + count", "orm", orm_two),
        guarded("advanced-alchemy (window count)", "advanced-alchemy", aa(window=True)),
        guarded("advanced-alchemy (count query)", "advanced-alchemy", aa(window=False)),
        guarded('underlay page count="exact"', "underlay", underlay("exact")),
        guarded('underlay page count="none"', "underlay", underlay("none")),
    ]
    return Scenario(
        id=f"{backend.label}.count",
        backend=backend.label,
        title="first page of 50 with the total of 100k rows",
        ops=calls,
        unit="calls",
        reps=reps,
        contenders=contenders,
        limit=contenders[0].name,
        reference='underlay page count="exact"',
    )
