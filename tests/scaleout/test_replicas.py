"""Read replicas on a real streaming pair: routing, read-your-writes, fallback, read-only."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import String, select, text, update
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from tests.scaleout.conftest import scaleout
from underlay import Database, InvalidQueryError, ReadOnlySessionError

pytestmark = pytest.mark.scaleout


class PairBase(DeclarativeBase):
    pass


class Note(PairBase):
    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str] = mapped_column(String(100))


@pytest.fixture
async def db(pair_database: tuple[str, str]) -> AsyncIterator[Database]:
    """A Database on the private primary with its replica, the notes table replicated."""
    primary, replica = pair_database
    database = Database(primary, replicas=[replica], replica_wait=0.5)
    await database.create_all(PairBase.metadata)
    try:
        yield database
    finally:
        await database.dispose()


async def _replica_sql(replica_url: str, sql: str) -> None:
    engine = create_async_engine(replica_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            await conn.execute(text(sql))
    finally:
        await engine.dispose()


class TestReadYourWrites:
    async def test_commit_then_read_never_misses(self, db: Database) -> None:
        """1,000 commit-then-read cycles through read-only sessions see every row."""
        misses = 0
        for number in range(1000):
            async with db.session() as session:
                session.add(Note(id=number, body=f"n{number}"))
            async with db.session(readonly=True) as session:
                if await session.get(Note, number) is None:
                    misses += 1
        assert misses == 0
        assert db.replica_stats.replica > 0, "no read was served by the replica"

    async def test_paused_replay_falls_back_to_primary(
        self, db: Database, pair_database: tuple[str, str]
    ) -> None:
        """A replica that has not replayed the commit is skipped; a naive replica read misses."""
        _, replica_url = pair_database
        async with db.session() as session:
            session.add(Note(id=1, body="before"))
        async with db.session(readonly=True) as session:
            assert await session.get(Note, 1) is not None  # the replica has caught up
        await _replica_sql(replica_url, "SELECT pg_wal_replay_pause()")
        try:
            async with db.session() as session:
                session.add(Note(id=2, body="while paused"))
            # The control: reading the replica directly, without the barrier, misses the row.
            naive = create_async_engine(replica_url)
            try:
                async with naive.connect() as conn:
                    found = await conn.scalar(select(Note.id).where(Note.id == 2))
                assert found is None
            finally:
                await naive.dispose()
            fallbacks = db.replica_stats.primary_fallback["not_replayed"]
            async with db.session(readonly=True) as session:
                assert (await session.get(Note, 2)) is not None
            assert db.replica_stats.primary_fallback["not_replayed"] == fallbacks + 1
        finally:
            await _replica_sql(replica_url, "SELECT pg_wal_replay_resume()")

    async def test_token_carries_reads_across_contexts(self, db: Database) -> None:
        """A consistency token from one request makes another context wait for that commit."""

        async def write() -> str | None:
            async with db.session() as session:
                session.add(Note(id=7, body="carried"))
            return db.consistency_token()

        token = await asyncio.create_task(write())
        assert token is not None
        assert db.consistency_token() is None  # this context has not written

        async def read() -> Note | None:
            with db.read_after(token):
                async with db.session(readonly=True) as session:
                    return await session.get(Note, 7)

        assert await asyncio.create_task(read()) is not None

    def test_forged_token_is_refused(self, db: Database) -> None:
        """A token that is not an LSN is an InvalidQueryError, before any SQL."""
        with pytest.raises(InvalidQueryError), db.read_after("'; drop table notes; --"):
            pass


class TestFallback:
    async def test_replica_stopped_mid_run(self, db: Database) -> None:
        """Stopping the replica between reads: every read still answers, from the primary."""
        errors = 0
        try:
            for number in range(60):
                if number == 20:
                    await asyncio.to_thread(scaleout, "stop", "replica")
                async with db.session() as session:
                    session.add(Note(id=number, body="x"))
                try:
                    async with db.session(readonly=True) as session:
                        assert await session.get(Note, number) is not None
                except Exception:
                    errors += 1
        finally:
            await asyncio.to_thread(scaleout, "start", "replica")
        assert errors == 0
        assert db.replica_stats.primary_fallback["down"] >= 1


class TestReadOnly:
    async def test_orm_writes_are_refused(self, db: Database) -> None:
        """A read-only session refuses ORM adds and ORM UPDATE statements."""
        with pytest.raises(ReadOnlySessionError):
            async with db.session(readonly=True) as session:
                session.add(Note(id=1, body="no"))
        with pytest.raises(ReadOnlySessionError):
            async with db.session(readonly=True) as session:
                await session.execute(update(Note).values(body="no"))
        async with db.session() as session:
            assert (await session.execute(select(Note))).first() is None

    async def test_raw_sql_writes_are_refused(self, db: Database) -> None:
        """Raw SQL in a read-only session fails in the server: the transaction is READ ONLY."""
        with pytest.raises(ReadOnlySessionError):
            async with db.session(readonly=True) as session:
                await session.execute(text("INSERT INTO notes (id, body) VALUES (1, 'raw')"))
