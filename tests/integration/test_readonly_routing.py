"""Read-only sessions without replicas: the primary, with writes refused."""

from __future__ import annotations

import pytest
from sqlalchemy import event, func, select, text, update

from tests.conftest import Backend
from tests.integration.models import User
from underlay import Database, InvalidQueryError, ReadOnlySessionError


class TestReadOnlySession:
    async def test_reads_work(self, db: Database) -> None:
        """A read-only session reads what a writing session committed."""
        async with db.session() as session:
            session.add(User(email="a@x.io"))
        async with db.session(readonly=True) as session:
            assert await session.scalar(select(func.count()).select_from(User)) == 1

    async def test_orm_writes_are_refused_before_sql(self, db: Database) -> None:
        """ORM flushes and ORM DML in a read-only session raise ReadOnlySessionError."""
        with pytest.raises(ReadOnlySessionError, match="readonly=True"):
            async with db.session(readonly=True) as session:
                session.add(User(email="no@x.io"))
        with pytest.raises(ReadOnlySessionError):
            async with db.session(readonly=True) as session:
                await session.execute(update(User).values(name="no"))
        async with db.session() as session:
            assert await session.scalar(select(func.count()).select_from(User)) == 0

    async def test_changes_left_pending_are_refused_at_the_end(self, db: Database) -> None:
        """A read-only session ends without a commit, unless changes are pending: refused."""
        async with db.session() as session:
            session.add(User(email="a@x.io", name="before"))
        with pytest.raises(ReadOnlySessionError):
            async with db.session(readonly=True) as session:
                user = await session.scalar(select(User))
                assert user is not None
                user.name = "changed"
        with pytest.raises(ReadOnlySessionError):
            async with db.session(readonly=True) as session:
                user = await session.scalar(select(User))
                await session.delete(user)
        commits: list[object] = []
        async with db.session(readonly=True) as session:
            event.listen(session.sync_session, "after_commit", commits.append)
            assert await session.scalar(select(User.name)) == "before"
        assert commits == []

    async def test_raw_sql_writes_refused_on_postgres(self, db: Database) -> None:
        """On PostgreSQL the read-only transaction refuses raw SQL writes too."""
        if db.engine.dialect.name != "postgresql":
            pytest.skip("SQLite has no read-only transactions; only ORM writes are refused")
        with pytest.raises(ReadOnlySessionError):
            async with db.session(readonly=True) as session:
                await session.execute(
                    text("INSERT INTO users (email, name) VALUES ('raw@x.io', '')")
                )

    async def test_snapshot_or_each_statement_on_its_own(
        self, db: Database, backend: Backend
    ) -> None:
        """Without snapshot a later statement sees a commit made meanwhile; with it, not."""
        # PostgreSQL's default READ COMMITTED gives no snapshot across statements either way
        reader = (
            Database(backend.url, isolation_level="REPEATABLE READ")
            if backend.name == "postgresql"
            else db
        )
        count = select(func.count()).select_from(User)
        seen = {}
        try:
            for snapshot in (False, True):
                async with reader.session(readonly=True, snapshot=snapshot) as session:
                    before = await session.scalar(count)
                    async with db.session() as writer:
                        writer.add(User(email=f"{snapshot}@x.io"))
                    seen[snapshot] = (before, await session.scalar(count))
        finally:
            if reader is not db:
                await reader.dispose()
        # behind PgBouncer a read-only session stays one transaction (documented): the
        # per-statement mode needs a read-only pool that PgBouncer cannot give
        each_statement = (0, 0) if reader.pgbouncer else (0, 1)
        assert seen == {False: each_statement, True: (1, 1)}

    async def test_no_begin_without_snapshot(self, db: Database, backend: Backend) -> None:
        """SQLite sends no BEGIN for a read-only session unless a snapshot is asked for."""
        if backend.name != "sqlite":
            pytest.skip("asyncpg starts transactions outside the cursor; see the test above")
        sent: list[str] = []

        def record(_conn: object, _cursor: object, statement: str, *_: object) -> None:
            sent.append(statement.split(maxsplit=1)[0].upper())

        event.listen(db.engine.sync_engine, "before_cursor_execute", record)
        for snapshot in (False, True):
            async with db.session(readonly=True, snapshot=snapshot) as session:
                await session.scalar(select(func.count()).select_from(User))
        assert sent == ["SELECT", "BEGIN", "SELECT"]

    async def test_no_token_without_replicas(self, db: Database) -> None:
        """Without replicas commits record no position; tokens are still validated."""
        async with db.session() as session:
            session.add(User(email="a@x.io"))
        assert db.consistency_token() is None
        with pytest.raises(InvalidQueryError):
            db.read_after("zz/zz").__enter__()

    def test_replicas_refused_for_sqlite(self, tmp_path: object) -> None:
        """replicas= is a PostgreSQL feature."""
        with pytest.raises(ValueError, match="PostgreSQL"):
            Database("sqlite+aiosqlite:///x.db", replicas=["sqlite+aiosqlite:///y.db"])
