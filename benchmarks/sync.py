"""Offline sync throughput: ``python -m benchmarks.sync [--rows N] [--large M]``.

Measures, on the benchmark PostgreSQL database and SQLite files in a temporary directory:

* push: N rows created offline on a client, then one `sync()` (rows/s);
* pull: a fresh client pulls those N rows (rows/s);
* large table: M rows in the synced table (bulk-inserted in SQL), then the time of one
  incremental pull of a 1,000-row page at the end of the feed and of an empty pull. Both read
  the (sync_xid, sync_seq) index, so they should not grow with M.

Timings on a shared machine vary; the medians of a few repetitions are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import String, text
from sqlalchemy.orm import Mapped, mapped_column

from underlay import Base, Database, SoftDeleteMixin, TimestampMixin, VersionedMixin
from underlay.sync import InProcessTransport, PullRequest, SyncClient, SyncRegistry, SyncServer

from ._env import POSTGRES_URL, drop_postgres_database, ensure_postgres_database


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


async def main(rows: int, large: int, batch: int) -> None:
    await ensure_postgres_database()
    server_db = Database(POSTGRES_URL)
    try:
        await server_db.create_all(BenchNote.metadata)
        server = SyncServer(server_db, registry())
        await server.install()
        with tempfile.TemporaryDirectory() as tmp:
            a_db, a = await new_client(Path(tmp) / "a.db", server, batch)
            async with a_db.session() as session:
                session.add_all(BenchNote(owner=1, body=f"note {i}") for i in range(rows))
            started = time.perf_counter()
            report = await a.sync()
            push = time.perf_counter() - started
            print(
                f"push: {report.pushed} rows in {push:.2f} s = {report.pushed / push:,.0f} rows/s"
            )
            await wait_for_horizon(server_db)
            b_db, b = await new_client(Path(tmp) / "b.db", server, batch)
            started = time.perf_counter()
            report = await b.sync()
            pull = time.perf_counter() - started
            print(
                f"pull: {report.pulled} rows in {pull:.2f} s = {report.pulled / pull:,.0f} rows/s"
            )
            for database in (a_db, b_db):
                await database.dispose()

        async with server_db.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO bench_sync_note (id, owner, body, version)"
                    " SELECT gen_random_uuid(), 1, 'bulk ' || i, 1"
                    " FROM generate_series(1, :m) AS i"
                ),
                {"m": large},
            )
        await wait_for_horizon(server_db)
        # the cursor of a client that has everything but the last 1,000 rows
        async with server_db.engine.connect() as conn:
            xid, seq = (
                await conn.execute(
                    text(
                        "SELECT sync_xid::text, sync_seq FROM bench_sync_note"
                        " ORDER BY sync_xid, sync_seq OFFSET :o LIMIT 1"
                    ),
                    {"o": large + rows - 1001},
                )
            ).one()
            epoch = (
                await conn.execute(
                    text("SELECT value FROM underlay_sync_meta WHERE key = 'server_epoch'")
                )
            ).scalar_one()
        cursor = f"1.{epoch}.{xid}.{seq}"
        client_id = uuid.uuid4()
        page_times, empty_times = [], []
        for _ in range(7):
            started = time.perf_counter()
            page = await server.pull(
                PullRequest(client_id=client_id, schema_version=1, cursor=cursor, limit=1000),
                user=1,
            )
            page_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            empty = await server.pull(
                PullRequest(client_id=client_id, schema_version=1, cursor=page.cursor),
                user=1,
            )
            empty_times.append(time.perf_counter() - started)
            assert not empty.changes
        print(
            f"large table ({large + rows:,} rows): last 1,000-row page"
            f" {statistics.median(page_times) * 1000:.1f} ms (median of 7),"
            f" {len(page.changes)} rows; empty pull {statistics.median(empty_times) * 1000:.1f} ms"
        )
    finally:
        await server_db.dispose()
        await drop_postgres_database()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    asyncio.run(main(args.rows, args.large, args.batch))
