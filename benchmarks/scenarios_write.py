"""Write scenarios: bulk insert, upsert (half new rows), updates with and without a version."""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect

from ._env import SQLITE_PRAGMAS, Backend
from ._harness import Contender, Scenario
from ._stacks import aa_repository, guarded, underlay_repository
from .models import ROW_COLUMNS, PlainUpdateItem, VersionedItem, WriteItem, as_records, make_rows

WRITE_TABLE = WriteItem.__tablename__
COLS = ", ".join(ROW_COLUMNS)
NOW = {"postgresql": "statement_timestamp()", "sqlite": "strftime('%Y-%m-%d %H:%M:%f', 'now')"}


def _placeholders(backend: Backend, count: int, start: int = 1) -> str:
    if backend.is_postgres:
        return ", ".join(f"${i}" for i in range(start, start + count))
    return ", ".join("?" for _ in range(count))


async def empty_write_table(backend: Backend, *, preload: int = 0) -> None:
    """Empty the bulk-write table, then load ``preload`` rows with the raw driver (untimed)."""
    rows = as_records(make_rows(preload))
    if backend.is_postgres:
        async with backend.raw.acquire() as conn:
            await conn.execute(f"TRUNCATE {WRITE_TABLE} RESTART IDENTITY")
            if rows:
                await conn.copy_records_to_table(WRITE_TABLE, records=rows, columns=ROW_COLUMNS)
    else:
        conn = backend.raw
        await conn.execute("BEGIN")
        await conn.execute(f"DELETE FROM {WRITE_TABLE}")
        if rows:
            sql = f"INSERT INTO {WRITE_TABLE} ({COLS}) VALUES ({_placeholders(backend, 5)})"
            await conn.executemany(sql, rows)
        await conn.execute("COMMIT")


async def count_write_table(backend: Backend) -> int:
    """Return how many rows the bulk-write table holds."""
    async with backend.engine.connect() as conn:
        return len((await conn.execute(select(WriteItem.id))).all())


def insert_scenario(backend: Backend, size: int, reps: int, label: str) -> Scenario:
    """Bulk insert ``size`` new rows given as dicts, committed."""
    rows = make_rows(size)
    insert_sql = f"INSERT INTO {WRITE_TABLE} ({COLS}) VALUES ({_placeholders(backend, 5)})"

    async def setup() -> None:
        await empty_write_table(backend)

    contenders: list[Contender] = []
    if backend.is_postgres:

        async def copy() -> None:
            async with backend.raw.acquire() as conn:
                await conn.copy_records_to_table(
                    WRITE_TABLE, records=as_records(rows), columns=ROW_COLUMNS
                )

        async def pg_executemany() -> None:
            async with backend.raw.acquire() as conn, conn.transaction():
                await conn.executemany(insert_sql, as_records(rows))

        contenders += [
            Contender("asyncpg COPY", "raw", copy, setup, "copy_records_to_table"),
            Contender("asyncpg executemany", "raw", pg_executemany, setup),
        ]
        limit = "asyncpg COPY"
    else:

        async def aiosqlite_many() -> None:
            conn = backend.raw
            await conn.execute("BEGIN")
            await conn.executemany(insert_sql, as_records(rows))
            await conn.execute("COMMIT")

        def sqlite3_many() -> None:
            conn = sqlite3.connect(str(backend.sqlite_path), isolation_level=None)
            try:
                for pragma in SQLITE_PRAGMAS:
                    conn.execute(pragma)
                conn.execute("BEGIN")
                conn.executemany(insert_sql, as_records(rows))
                conn.execute("COMMIT")
            finally:
                conn.close()

        async def sqlite3_sync() -> None:
            sqlite3_many()  # blocking on purpose: the synchronous driver's own speed

        contenders += [
            Contender("aiosqlite executemany", "raw", aiosqlite_many, setup),
            Contender("sqlite3 executemany (sync)", "raw", sqlite3_sync, setup, "blocks the loop"),
        ]
        limit = "aiosqlite executemany"

    table = WriteItem.__table__

    async def core() -> None:
        async with backend.engine.begin() as conn:
            await conn.execute(insert(table), rows)

    async def orm_add_all() -> None:
        async with backend.sessionmaker() as session, session.begin():
            session.add_all([WriteItem(**row) for row in rows])

    async def orm_bulk() -> None:
        async with backend.sessionmaker() as session, session.begin():
            await session.execute(insert(WriteItem), rows)

    def aa() -> Any:
        repo_cls = aa_repository(WriteItem)

        async def run() -> None:
            async with backend.sessionmaker() as session:
                await repo_cls(session=session).add_many([WriteItem(**row) for row in rows])
                await session.commit()

        return run

    def underlay() -> Any:
        repo_cls = underlay_repository(WriteItem)

        async def run() -> None:
            async with backend.db.session() as session:
                count = await repo_cls(session).insert_many(rows)
            assert count == size, count

        return run

    contenders.append(Contender("SQLAlchemy Core executemany", "core", core, setup))
    if size <= 10_000:
        # per row it costs what it costs at 10k; at 100k it would take most of the run's time
        contenders.append(Contender("SQLAlchemy ORM add_all", "orm", orm_add_all, setup))
    contenders += [
        Contender("SQLAlchemy ORM bulk insert (dicts)", "orm", orm_bulk, setup),
        guarded(
            "advanced-alchemy add_many",
            "advanced-alchemy",
            aa,
            setup=setup,
            # at 100k rows one run takes 10-20 s; its cost per row is the one seen at 10k
            max_reps=1 if size > 10_000 else None,
        ),
        guarded("underlay insert_many", "underlay", underlay, setup=setup),
    ]
    return Scenario(
        id=f"{backend.label}.insert.{label}",
        backend=backend.label,
        title="bulk insert rows given as dicts, committed",
        ops=size,
        unit="rows",
        reps=reps,
        contenders=contenders,
        limit=limit,
        reference="underlay insert_many",
        warmup=size <= 10_000,  # the larger run follows the smaller one: already warm
    )


def _dialect_insert(backend: Backend) -> Any:
    return pg_dialect.insert if backend.is_postgres else sqlite_dialect.insert


def upsert_scenario(backend: Backend, size: int, reps: int) -> Scenario:
    """Upsert ``size`` rows on ``sku`` into a table that already holds half of them."""
    rows = make_rows(size, salt=" v2")
    now = NOW[backend.name]
    upsert_sql = (
        f"INSERT INTO {WRITE_TABLE} ({COLS}) VALUES ({_placeholders(backend, 5)}) "
        "ON CONFLICT (sku) DO UPDATE SET name = excluded.name, category = excluded.category, "
        f"price = excluded.price, qty = excluded.qty, updated_at = {now}"
    )

    async def setup() -> None:
        await empty_write_table(backend, preload=size // 2)

    async def raw() -> None:
        if backend.is_postgres:
            async with backend.raw.acquire() as conn, conn.transaction():
                await conn.executemany(upsert_sql, as_records(rows))
        else:
            conn = backend.raw
            await conn.execute("BEGIN")
            await conn.executemany(upsert_sql, as_records(rows))
            await conn.execute("COMMIT")

    dialect_insert = _dialect_insert(backend)

    def on_conflict(stmt: Any) -> Any:
        excluded = stmt.excluded
        return stmt.on_conflict_do_update(
            index_elements=["sku"],
            set_={
                "name": excluded.name,
                "category": excluded.category,
                "price": excluded.price,
                "qty": excluded.qty,
                "updated_at": WriteItem.__table__.c.updated_at.onupdate.arg,
            },
        )

    core_stmt = on_conflict(dialect_insert(WriteItem.__table__))
    orm_stmt = on_conflict(dialect_insert(WriteItem)).returning(WriteItem)

    async def core() -> None:
        async with backend.engine.begin() as conn:
            await conn.execute(core_stmt, rows)

    async def orm() -> None:
        async with backend.sessionmaker() as session, session.begin():
            result = await session.scalars(orm_stmt.execution_options(populate_existing=True), rows)
            assert len(result.all()) == size

    def aa() -> Any:
        repo_cls = aa_repository(WriteItem)

        async def run() -> None:
            async with backend.sessionmaker() as session:
                repo = repo_cls(session=session)
                items = await repo.upsert_many(
                    [WriteItem(**row) for row in rows], match_fields=["sku"]
                )
                await session.commit()
            assert len(items) == size

        return run

    def underlay() -> Any:
        repo_cls = underlay_repository(WriteItem)

        async def run() -> None:
            async with backend.db.session() as session:
                items = await repo_cls(session).upsert_many(rows, conflict_on=["sku"])
            assert len(items) == size

        return run

    driver = "asyncpg" if backend.is_postgres else "aiosqlite"
    contenders = [
        Contender(f"{driver} executemany ON CONFLICT", "raw", raw, setup),
        Contender("SQLAlchemy Core ON CONFLICT", "core", core, setup, "no RETURNING"),
        Contender("SQLAlchemy ORM ON CONFLICT RETURNING", "orm", orm, setup),
        guarded("advanced-alchemy upsert_many", "advanced-alchemy", aa, setup=setup),
        guarded("underlay upsert_many", "underlay", underlay, setup=setup),
    ]
    return Scenario(
        id=f"{backend.label}.upsert.10k",
        backend=backend.label,
        title="upsert rows on a unique key, half of them new",
        ops=size,
        unit="rows",
        reps=reps,
        contenders=contenders,
        limit=contenders[0].name,
        reference="underlay upsert_many",
    )


async def load_update_tables(backend: Backend, count: int) -> None:
    """Fill the versioned and the plain update tables with ``count`` rows each."""
    rows = as_records(make_rows(count))
    for model in (VersionedItem, PlainUpdateItem):
        name = model.__tablename__
        if backend.is_postgres:
            async with backend.raw.acquire() as conn:
                await conn.copy_records_to_table(name, records=rows, columns=ROW_COLUMNS)
        else:
            await backend.raw.execute("BEGIN")
            sql = f"INSERT INTO {name} ({COLS}) VALUES ({_placeholders(backend, 5)})"
            await backend.raw.executemany(sql, rows)
            await backend.raw.execute("COMMIT")


def update_scenario(backend: Backend, calls: int, reps: int) -> Scenario:
    """Update one column of ``calls`` rows, one transaction per call, with and without a version."""
    ids = list(range(1, calls + 1))
    versions = dict.fromkeys(ids, 1)  # shared: every versioned contender moves the same rows
    now = NOW[backend.name]
    p = "$" if backend.is_postgres else "?"

    def ph(i: int) -> str:
        return f"${i}" if p == "$" else "?"

    plain_sql = (
        f"UPDATE {PlainUpdateItem.__tablename__} SET qty = {ph(1)}, updated_at = {now} "
        f"WHERE id = {ph(2)}"
    )
    versioned_sql = (
        f"UPDATE {VersionedItem.__tablename__} SET qty = {ph(1)}, version = version + 1, "
        f"updated_at = {now} WHERE id = {ph(2)} AND version = {ph(3)} RETURNING version"
    )

    async def raw_exec(sql: str, args: tuple[Any, ...]) -> Any:
        if backend.is_postgres:
            async with backend.raw.acquire() as conn:
                return await conn.fetchval(sql, *args)
        async with backend.raw.execute(sql, args) as cursor:
            row = await cursor.fetchone()
        return None if row is None else row[0]

    async def raw_plain() -> None:
        for i in ids:
            await raw_exec(plain_sql, (i % 50, i))

    async def raw_versioned() -> None:
        for i in ids:
            new = await raw_exec(versioned_sql, (i % 50, i, versions[i]))
            assert new == versions[i] + 1, (new, versions[i])
            versions[i] = new

    def orm(model: type[Any]) -> Any:
        async def run() -> None:
            for i in ids:
                async with backend.sessionmaker() as session:
                    item = await session.get(model, i)
                    item.qty = (item.qty + 1) % 50
                    await session.commit()
                if model is VersionedItem:
                    versions[i] = item.version

        return run

    def aa(model: type[Any]) -> Any:
        def build() -> Any:
            repo_cls = aa_repository(model)

            async def run() -> None:
                for i in ids:
                    async with backend.sessionmaker() as session:
                        repo = repo_cls(session=session)
                        item = await repo.get(i)
                        item.qty = (item.qty + 1) % 50
                        item = await repo.update(item)
                        await session.commit()
                    if model is VersionedItem:
                        versions[i] = item.version

            return run

        return build

    def underlay(model: type[Any]) -> Any:
        def build() -> Any:
            repo_cls = underlay_repository(model)
            versioned = model is VersionedItem

            async def run() -> None:
                for i in ids:
                    async with backend.db.session() as session:
                        repo = repo_cls(session)
                        if versioned:
                            item = await repo.update(
                                i, {"qty": i % 50}, expected_version=versions[i]
                            )
                            versions[i] = item.version
                        else:
                            await repo.update(i, {"qty": i % 50})

            return run

        return build

    driver = "asyncpg" if backend.is_postgres else "aiosqlite"
    contenders = [
        Contender(f"{driver} UPDATE", "raw", raw_plain),
        Contender(f"{driver} UPDATE ... AND version", "raw", raw_versioned),
        Contender("SQLAlchemy ORM get+flush", "orm", orm(PlainUpdateItem)),
        Contender("SQLAlchemy ORM get+flush (versioned)", "orm", orm(VersionedItem)),
        guarded("advanced-alchemy get+update", "advanced-alchemy", aa(PlainUpdateItem)),
        guarded("advanced-alchemy get+update (versioned)", "advanced-alchemy", aa(VersionedItem)),
        guarded("underlay update", "underlay", underlay(PlainUpdateItem)),
        guarded("underlay update (expected_version)", "underlay", underlay(VersionedItem)),
    ]
    return Scenario(
        id=f"{backend.label}.update",
        backend=backend.label,
        title="update one column, one transaction per call",
        ops=calls,
        unit="calls",
        reps=reps,
        contenders=contenders,
        limit=contenders[0].name,
        reference="underlay update",
    )
