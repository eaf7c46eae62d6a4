"""Read-only sessions without replicas: the primary, with writes refused."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text, update

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

    async def test_raw_sql_writes_refused_on_postgres(self, db: Database) -> None:
        """On PostgreSQL the read-only transaction refuses raw SQL writes too."""
        if db.engine.dialect.name != "postgresql":
            pytest.skip("SQLite has no read-only transactions; only ORM writes are refused")
        with pytest.raises(ReadOnlySessionError):
            async with db.session(readonly=True) as session:
                await session.execute(
                    text("INSERT INTO users (email, name) VALUES ('raw@x.io', '')")
                )

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
