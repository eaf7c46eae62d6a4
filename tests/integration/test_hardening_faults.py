"""Connection faults and pool exhaustion leave as typed underlay errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import MetaData, String, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Mapped, mapped_column

from tests.conftest import Backend
from tests.integration.models import new_base
from underlay import (
    ConnectionLostError,
    Database,
    PoolTimeoutError,
    SQLAlchemyRepository,
    UnderlayError,
)

FaultBase = new_base()


class Entry(FaultBase):
    __tablename__ = "fault_entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str] = mapped_column(String(20))


class EntryRepository(SQLAlchemyRepository[Entry]):
    pass


@pytest.fixture
def metadata() -> MetaData:
    return FaultBase.metadata


class CuttingProxy:
    """A TCP proxy to PostgreSQL that cuts the connection when the client sends COMMIT.

    The COMMIT is forwarded first, so the server may commit: exactly the case in which the
    client cannot know the outcome.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.cut_on_commit = False
        self.cut = asyncio.Event()
        self.server: asyncio.Server | None = None
        self.listen_port = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> CuttingProxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.listen_port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(self.host, self.port)

        async def pipe(
            source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, client: bool
        ) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
                    if client and self.cut_on_commit and b"COMMIT" in data.upper():
                        self.cut.set()
                        break
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                for stream in (writer, upstream_writer):
                    stream.transport.abort()

        for task in (
            asyncio.create_task(pipe(reader, upstream_writer, client=True)),
            asyncio.create_task(pipe(upstream_reader, writer, client=False)),
        ):
            self._tasks.add(task)


@pytest.fixture
async def proxy(backend: Backend) -> AsyncIterator[CuttingProxy]:
    if not backend.is_postgres:
        pytest.skip("needs a database server reached over the network")
    url = make_url(backend.url)
    async with CuttingProxy(url.host or "127.0.0.1", url.port or 5432) as running:
        yield running


def through(backend: Backend, proxy: CuttingProxy) -> str:
    url = make_url(backend.url).set(host="127.0.0.1", port=proxy.listen_port)
    return url.render_as_string(hide_password=False)


async def terminate(admin: Database, pid: int) -> None:
    """Kill backend ``pid`` and wait until the server has removed it."""
    async with admin.engine.connect() as conn:
        await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        for _ in range(500):
            gone = await conn.scalar(
                text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}
            )
            if gone == 0:
                return
            await asyncio.sleep(0.01)
    raise AssertionError(f"backend {pid} did not go away")


async def _noticed_closed(driver: Any) -> None:
    """Wait until the client has seen the server close the pooled connection.

    The server drops the backend from pg_stat_activity a moment before its socket closes, and
    the client learns of the close on a later turn of the event loop: wait for that state,
    which is the one the test is about, rather than race it.
    """
    for _ in range(500):
        if driver.is_closed():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the client never saw the pooled connection close")


class TestConnectionLost:
    async def test_killed_mid_transaction(self, backend: Backend, db: Database) -> None:
        """A backend killed mid-transaction raises ConnectionLostError; nothing committed."""
        if not backend.is_postgres:
            pytest.skip("needs a server that can terminate another session's connection")
        with pytest.raises(ConnectionLostError) as info:
            async with db.session() as session:
                repository = EntryRepository(session)
                await repository.save(Entry(id=1, body="lost"))
                pid = await session.scalar(text("SELECT pg_backend_pid()"))
                raw = await (await session.connection()).get_raw_connection()
                await terminate(db, int(pid or 0))
                # the next statement must meet a connection the client knows is dead: a
                # statement racing the close can leave asyncpg mid-operation instead
                await _noticed_closed(raw.driver_connection)
                await repository.get(1)
        assert info.value.outcome_unknown is False
        assert isinstance(info.value, UnderlayError)
        async with db.session() as session:
            assert await EntryRepository(session).get(1) is None

    async def test_lost_at_commit_says_the_outcome_is_unknown(
        self, backend: Backend, db: Database, proxy: CuttingProxy
    ) -> None:
        """A connection cut while committing raises ConnectionLostError(outcome_unknown)."""
        cut = Database(through(backend, proxy), pool_size=1, max_overflow=0)
        try:
            with pytest.raises(ConnectionLostError, match="COMMIT") as info:
                async with cut.session() as session:
                    await EntryRepository(session).save(Entry(id=1, body="maybe"))
                    proxy.cut_on_commit = True
            assert proxy.cut.is_set()
            assert info.value.outcome_unknown is True
            # the pool threw the dead connection away: the next request works
            proxy.cut_on_commit = False
            async with cut.session() as session:
                assert (await session.execute(text("SELECT 1"))).scalar_one() == 1
        finally:
            await cut.dispose()

    @pytest.mark.no_pgbouncer  # PgBouncer keeps the client side open when a backend dies
    async def test_connection_killed_while_idle_does_not_fail_the_next_request(
        self, backend: Backend, db: Database
    ) -> None:
        """A pooled connection killed right after use is replaced, even inside pre_ping_idle."""
        if not backend.is_postgres:
            pytest.skip("needs a server that can terminate another session's connection")
        small = Database(backend.url, pool_size=1, max_overflow=0, pre_ping_idle=3600)
        try:
            async with small.session() as session:
                pid = int(await session.scalar(text("SELECT pg_backend_pid()")) or 0)
                raw = await (await session.connection()).get_raw_connection()
                driver = raw.driver_connection
            await terminate(db, pid)
            await _noticed_closed(driver)
            async with small.session() as session:
                await EntryRepository(session).save(Entry(id=1, body="fine"))
                again = await session.scalar(text("SELECT pg_backend_pid()"))
            assert again != pid
        finally:
            await small.dispose()


class TestPoolTimeout:
    async def test_exhausted_pool_names_its_size(self, backend: Backend, db: Database) -> None:
        """No free connection within pool_timeout raises PoolTimeoutError naming the size."""
        small = Database(backend.url, pool_size=1, max_overflow=0, pool_timeout=0.05)
        try:
            async with small.session() as holder:
                await holder.execute(text("SELECT 1"))  # holds the only connection
                with pytest.raises(PoolTimeoutError, match="all 1 pooled") as info:
                    async with small.session() as session:
                        await EntryRepository(session).get(1)
                assert info.value.pool_size == 1
                assert isinstance(info.value, TimeoutError)
                with pytest.raises(PoolTimeoutError):
                    async with small.session() as session:
                        await session.execute(select(Entry))
        finally:
            await small.dispose()
