"""Database: sessions, transactions, pool hygiene and dialect set-up on every backend."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select, text

from tests.conftest import Backend
from tests.integration.models import Post, User
from underlay import ConnectionLostError, Database, DatabaseSession, call_after_commit


class TestSessionScope:
    async def test_commit_on_success(self, db: Database) -> None:
        """A session block that returns commits its work."""
        async with db.session() as session:
            session.add(User(email="a@example.com"))
        async with db.session() as session:
            assert await session.scalar(select(func.count()).select_from(User)) == 1

    async def test_rollback_on_error(self, db: Database) -> None:
        """A session block that raises rolls its work back and re-raises."""
        with pytest.raises(RuntimeError, match="boom"):
            async with db.session() as session:
                session.add(User(email="a@example.com"))
                await session.flush()
                raise RuntimeError("boom")
        async with db.session() as session:
            assert await session.scalar(select(func.count()).select_from(User)) == 0

    async def test_expire_on_commit_is_off(self, db: Database) -> None:
        """Entities stay readable after the block commits, with no implicit IO."""
        async with db.session() as session:
            user = User(email="a@example.com", name="Ada")
            session.add(user)
        assert user.name == "Ada"
        assert user.created_at is not None

    async def test_sessions_are_database_sessions(self, db: Database) -> None:
        """The factory makes DatabaseSession instances that never expire on commit."""
        async with db.session() as session:
            assert isinstance(session, DatabaseSession)
            assert session.sync_session.expire_on_commit is False

    async def test_get_session_dependency(self, db: Database) -> None:
        """get_session yields one session and commits when the generator finishes."""
        dependency = db.get_session()
        session = await anext(dependency)
        session.add(User(email="dep@example.com"))
        with pytest.raises(StopAsyncIteration):
            await anext(dependency)
        async with db.session() as check:
            assert await check.scalar(select(User.email)) == "dep@example.com"

    async def test_get_session_dependency_rolls_back(self, db: Database) -> None:
        """An error thrown into the dependency rolls the request's work back."""
        dependency = db.get_session()
        session = await anext(dependency)
        session.add(User(email="dep@example.com"))
        await session.flush()
        with pytest.raises(ValueError, match="handler failed"):
            await dependency.athrow(ValueError("handler failed"))
        async with db.session() as check:
            assert await check.scalar(select(func.count()).select_from(User)) == 0

    async def test_savepoint_rollback_keeps_outer_work(self, db: Database) -> None:
        """A rolled-back savepoint undoes only its own work (SQLite has real transactions)."""
        async with db.session() as session:
            session.add(User(email="outer@example.com"))
            await session.flush()
            nested = await session.begin_nested()
            session.add(User(email="inner@example.com"))
            await session.flush()
            await nested.rollback()
        async with db.session() as session:
            emails = (await session.scalars(select(User.email))).all()
        assert emails == ["outer@example.com"]


class TestPool:
    async def test_connections_returned_after_errors(self, backend: Backend, db: Database) -> None:
        """A pool of one serves 20 sessions whose bodies fail: every connection came back."""
        small = Database(backend.url, pool_size=1, max_overflow=0, pool_timeout=2)
        try:
            for _ in range(20):
                with pytest.raises(ZeroDivisionError):
                    async with small.session() as session:
                        await session.execute(text("SELECT 1"))
                        _ = 1 / 0
            async with small.session() as session:
                assert (await session.execute(text("SELECT 1"))).scalar_one() == 1
            assert small.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        finally:
            await small.dispose()

    async def test_connections_returned_after_cancellation(
        self, backend: Backend, db: Database
    ) -> None:
        """Tasks cancelled while holding a connection give it back to a pool of one."""
        small = Database(backend.url, pool_size=1, max_overflow=0, pool_timeout=2)
        holding = asyncio.Event()

        async def hold() -> None:
            async with small.session() as session:
                await session.execute(text("SELECT 1"))
                holding.set()
                await asyncio.sleep(3600)

        try:
            for _ in range(10):
                holding.clear()
                task = asyncio.create_task(hold())
                await holding.wait()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            async with small.session() as session:
                assert (await session.execute(text("SELECT 1"))).scalar_one() == 1
            assert small.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        finally:
            await small.dispose()


@pytest.mark.no_pgbouncer  # terminates its own server backend, which PgBouncer hides
class TestPrePing:
    async def _kill_pooled_connection(self, database: Database, admin: Database) -> int:
        async with database.session() as session:
            pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        async with admin.engine.begin() as conn:
            await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        await asyncio.sleep(0.2)  # let the pooled connection sit idle past the window
        return int(pid)

    async def test_dead_idle_connection_is_replaced(self, backend: Backend, db: Database) -> None:
        """A pooled connection killed by the server is pinged, dropped and replaced unseen."""
        if not backend.is_postgres:
            pytest.skip("needs a server that can terminate another session's connection")
        small = Database(backend.url, pool_size=1, max_overflow=0, pre_ping_idle=0.1)
        try:
            killed = await self._kill_pooled_connection(small, db)
            async with small.session() as session:
                pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
            assert pid != killed
        finally:
            await small.dispose()

    async def test_without_pre_ping_the_dead_connection_fails(
        self, backend: Backend, db: Database
    ) -> None:
        """The control: with pre-ping off, the first use of the killed connection fails (typed)."""
        if not backend.is_postgres:
            pytest.skip("needs a server that can terminate another session's connection")
        small = Database(backend.url, pool_size=1, max_overflow=0, pool_pre_ping=False)
        try:
            await self._kill_pooled_connection(small, db)
            with pytest.raises(ConnectionLostError):
                async with small.session() as session:
                    await session.execute(text("SELECT 1"))
        finally:
            await small.dispose()


class TestAfterCommit:
    async def test_callback_runs_after_commit_before_block_returns(self, db: Database) -> None:
        """A callback scheduled in a transaction is awaited once the commit succeeded."""
        seen: list[int] = []

        async with db.session() as session:
            session.add(User(email="a@example.com"))

            async def callback() -> None:
                async with db.session() as other:
                    seen.append(await other.scalar(select(func.count()).select_from(User)) or 0)

            call_after_commit(session, callback)
            assert seen == []
        assert seen == [1]

    async def test_callback_discarded_on_rollback(self, db: Database) -> None:
        """A rollback drops the callbacks its transaction scheduled."""
        seen: list[str] = []

        async def callback() -> None:
            seen.append("ran")

        async with db.session() as session:
            session.add(User(email="a@example.com"))
            await session.flush()
            call_after_commit(session, callback)
            await session.rollback()
            await session.commit()
        assert seen == []

    async def test_callback_failure_never_fails_commit(self, db: Database) -> None:
        """A failing callback is logged; the committed work stands."""

        async def callback() -> None:
            raise RuntimeError("cache down")

        async with db.session() as session:
            session.add(User(email="a@example.com"))
            call_after_commit(session, callback)
        async with db.session() as session:
            assert await session.scalar(select(func.count()).select_from(User)) == 1

    async def test_callback_after_begin_block_runs_at_close(self, db: Database) -> None:
        """Work committed by an ``async with session.begin()`` block runs its callbacks too."""
        seen: list[str] = []

        async def callback() -> None:
            seen.append("ran")

        session = db.sessionmaker()
        async with session.begin():
            session.add(User(email="a@example.com"))
            call_after_commit(session, callback)
        await session.close()
        assert seen == ["ran"]


class TestDialectSetup:
    async def test_sqlite_foreign_keys_enforced(self, db: Database) -> None:
        """A post pointing at a missing user is refused on every backend."""
        from underlay import ForeignKeyError

        with pytest.raises(ForeignKeyError):
            async with db.session() as session:
                session.add(Post(title="orphan", author_id=12345))

    async def test_ping(self, db: Database) -> None:
        """ping answers True for a live database."""
        assert await db.ping() is True

    async def test_ping_false_when_unreachable(self) -> None:
        """ping answers False, quickly, when nothing listens."""
        dead = Database("postgresql+asyncpg://postgres@127.0.0.1:1/none", pool_pre_ping=False)
        try:
            assert await dead.ping(timeout=2) is False
        finally:
            await dead.dispose()

    async def test_pgbouncer_option_disables_statement_cache(self, backend: Backend) -> None:
        """pgbouncer=True works on asyncpg and is refused for other drivers."""
        if not backend.is_postgres:
            with pytest.raises(ValueError, match="asyncpg"):
                Database(backend.url, pgbouncer=True)
            return
        database = Database(backend.url, pgbouncer=True)
        try:
            async with database.session() as session:
                for _ in range(3):
                    assert (await session.execute(text("SELECT 2"))).scalar_one() == 2
        finally:
            await database.dispose()

    def test_repr_hides_password(self) -> None:
        """The repr never shows a password."""
        database = Database("postgresql+asyncpg://u:secret@127.0.0.1/x")
        assert "secret" not in repr(database)
