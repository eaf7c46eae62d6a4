"""Offline sync cost: ``python -m benchmarks.sync [--rows N] [--sizes 10000,100000,1000000]``.

Measures, on the benchmark PostgreSQL database and SQLite files in a temporary directory:

* push: N rows created offline on a client, then one `sync()` (rows/s);
* pull: a fresh client pulls those N rows (rows/s);
* pull cost as the synced table grows to each of ``--sizes`` rows (bulk-inserted in SQL, so
  through the stamping trigger): the server time of the first page of an initial pull, of
  the last page of the feed (a client that is one page behind), of an empty pull (a client
  that is up to date) and of a first page for a user whose scope holds no row (the index is
  walked to the end of the feed); all pages are ``--page`` rows. If the pull is driven by the
  ``(sync_xid, sync_seq)`` index these stay flat as the table grows, except the empty-scope
  page, which reads every index entry after the cursor;
* at the largest size: ``EXPLAIN (ANALYZE, BUFFERS)`` of the page query, and a full initial
  pull of every row by a fresh SQLite client (the cost of a first sync, or of catching up
  after a resync), unless ``--no-full-pull``.

Timings on a shared machine vary; medians of a few repetitions are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import String, event, text
from sqlalchemy.orm import Mapped, mapped_column

from underlay import Base, Database, SoftDeleteMixin, TimestampMixin, VersionedMixin
from underlay.sync import InProcessTransport, PullRequest, SyncClient, SyncRegistry, SyncServer

from ._env import POSTGRES_URL, drop_postgres_database, ensure_postgres_database

REPEAT = 7


class BenchNote(SoftDeleteMixin, VersionedMixin, TimestampMixin, Base):
    __tablename__ = "bench_sync_note"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    owner: Mapped[int] = mapped_column(index=True)
    body: Mapped[str] = mapped_column(String(200), default="")


def registry() -> SyncRegistry:
    reg = SyncRegistry(schema_version=1)
    reg.register(BenchNote, scope=lambda user: BenchNote.owner == user)
    return reg


async def new_client(path: Path, server: SyncServer, batch: int) -> tuple[Database, SyncClient]:
    database = Database(f"sqlite+aiosqlite:///{path}")
    await database.create_all(BenchNote.metadata)
    client = SyncClient(
        database, server.registry, transport=InProcessTransport(server, 1), batch_size=batch
    )
    await client.install()
    return database, client


async def wait_for_horizon(database: Database) -> None:
    """Wait until everything committed so far is below every new snapshot's xmin."""
    async with database.engine.connect() as conn:
        target = (
            await conn.execute(text("SELECT pg_snapshot_xmax(pg_current_snapshot())::text"))
        ).scalar_one()
        await conn.rollback()
        while True:
            passed = (
                await conn.execute(
                    text(
                        "SELECT pg_snapshot_xmin(pg_current_snapshot())"
                        " >= CAST(CAST(:x AS text) AS xid8)"
                    ),
                    {"x": target},
                )
            ).scalar_one()
            await conn.rollback()
            if passed:
                return
            await asyncio.sleep(0.01)


async def median_ms(call: Callable[[], Awaitable[Any]]) -> float:
    times = []
    for _ in range(REPEAT):
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


async def throughput(server: SyncServer, rows: int, batch: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        a_db, a = await new_client(Path(tmp) / "a.db", server, batch)
        async with a_db.session() as session:
            session.add_all(BenchNote(owner=1, body=f"note {i}") for i in range(rows))
        started = time.perf_counter()
        report = await a.sync()
        push = time.perf_counter() - started
        print(f"push: {report.pushed} rows in {push:.2f} s = {report.pushed / push:,.0f} rows/s")
        await wait_for_horizon(server.database)
        b_db, b = await new_client(Path(tmp) / "b.db", server, batch)
        started = time.perf_counter()
        report = await b.sync()
        pull = time.perf_counter() - started
        print(f"pull: {report.pulled} rows in {pull:.2f} s = {report.pulled / pull:,.0f} rows/s")
        for database in (a_db, b_db):
            await database.dispose()


async def grow_to(server_db: Database, size: int) -> None:
    async with server_db.engine.begin() as conn:
        have = (await conn.execute(text("SELECT count(*) FROM bench_sync_note"))).scalar_one()
        if size > have:
            await conn.execute(
                text(
                    "INSERT INTO bench_sync_note (id, owner, body, version)"
                    " SELECT gen_random_uuid(), 1, 'bulk ' || i, 1"
                    " FROM generate_series(1, :m) AS i"
                ),
                {"m": size - have},
            )
    async with server_db.engine.connect() as plain:
        conn = await plain.execution_options(isolation_level="AUTOCOMMIT")
        await conn.execute(text("VACUUM ANALYZE bench_sync_note"))
    await wait_for_horizon(server_db)


async def cursor_before_last(server_db: Database, size: int, page: int) -> str:
    """The cursor of a client that has everything but the last ``page`` rows."""
    async with server_db.engine.connect() as conn:
        xid, seq = (
            await conn.execute(
                text(
                    "SELECT sync_xid::text, sync_seq FROM bench_sync_note"
                    " ORDER BY sync_xid, sync_seq OFFSET :o LIMIT 1"
                ),
                {"o": size - page - 1},
            )
        ).one()
        epoch = (
            await conn.execute(
                text("SELECT value FROM underlay_sync_meta WHERE key = 'server_epoch'")
            )
        ).scalar_one()
    return f"1.{epoch}.{xid}.{seq}"


async def page_costs(server: SyncServer, size: int, page: int) -> None:
    client_id = uuid.uuid4()

    def pull(cursor: str | None, user: int = 1) -> Awaitable[Any]:
        request = PullRequest(client_id=client_id, schema_version=1, cursor=cursor, limit=page)
        return server.pull(request, user=user)

    tail = await cursor_before_last(server.database, size, page)
    last = await pull(tail)
    assert len(last.changes) == page
    assert not last.has_more
    first = await pull(None)
    assert len(first.changes) == page
    assert first.has_more
    empty = await pull(last.cursor)
    assert not empty.changes
    nobody = await pull(None, user=2)
    assert not nobody.changes
    print(
        f"{size:>9,} rows: first page {await median_ms(lambda: pull(None)):6.1f} ms,"
        f" last page {await median_ms(lambda: pull(tail)):6.1f} ms,"
        f" empty pull {await median_ms(lambda: pull(last.cursor)):5.1f} ms,"
        f" empty scope (user 2) {await median_ms(lambda: pull(None, user=2)):7.1f} ms"
    )


async def explain(server: SyncServer, page: int, *, user: int = 1) -> None:
    """Print the plan of the page query a pull runs (captured as the driver sent it)."""
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "sync_xid < pg_snapshot_xmin" in statement and "LIMIT" in statement:
            captured.append((statement, parameters))

    engine = server.database.engine.sync_engine
    event.listen(engine, "before_cursor_execute", capture)
    try:
        await server.pull(
            PullRequest(client_id=uuid.uuid4(), schema_version=1, cursor=None, limit=page),
            user=user,
        )
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    statement, parameters = captured[-1]
    async with server.database.engine.connect() as conn:
        plan = await conn.exec_driver_sql(
            "EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + statement, parameters
        )
        print(f"plan of the first page for user {user}:")
        for (line,) in plan:
            print("    " + line)
        await conn.rollback()


async def full_pull(server: SyncServer, size: int, batch: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        database, client = await new_client(Path(tmp) / "full.db", server, batch)
        started = time.perf_counter()
        report = await client.sync()
        took = time.perf_counter() - started
        print(
            f"full initial pull of {report.pulled:,} rows (pages of {batch}):"
            f" {took:.1f} s = {report.pulled / took:,.0f} rows/s"
        )
        assert report.pulled >= size
        await database.dispose()


async def main(args: argparse.Namespace) -> None:
    await ensure_postgres_database()
    server_db = Database(POSTGRES_URL)
    try:
        await server_db.create_all(BenchNote.metadata)
        server = SyncServer(server_db, registry())
        await server.install()
        await throughput(server, args.rows, args.batch)
        sizes = sorted(int(s) for s in args.sizes.split(","))
        for size in sizes:
            await grow_to(server_db, size)
            await page_costs(server, size, args.page)
        await explain(server, args.page)
        await explain(server, args.page, user=2)
        if not args.no_full_pull:
            await full_pull(server, sizes[-1], args.batch)
    finally:
        await server_db.dispose()
        await drop_postgres_database()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=5000, help="rows pushed and pulled")
    parser.add_argument("--sizes", default="10000,100000,1000000", help="table sizes")
    parser.add_argument("--page", type=int, default=1000, help="rows per measured page")
    parser.add_argument("--batch", type=int, default=500, help="the clients' batch_size")
    parser.add_argument("--no-full-pull", action="store_true")
    asyncio.run(main(parser.parse_args()))
