"""Driver and ORM errors leave as underlay errors on every backend."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from tests.conftest import Backend
from tests.integration.models import User
from underlay import (
    ConflictError,
    ConstraintError,
    Database,
    DuplicateError,
    SerializationError,
    UnderlayError,
)


class TestTranslation:
    async def test_unique_violation_at_commit(self, db: Database) -> None:
        """A duplicate raises DuplicateError from the session block's commit."""
        async with db.session() as session:
            session.add(User(email="a@example.com"))
        with pytest.raises(DuplicateError) as info:
            async with db.session() as session:
                session.add(User(email="a@example.com"))
        assert isinstance(info.value, ConflictError)
        assert info.value.__cause__ is not None

    async def test_unique_violation_at_flush(self, db: Database) -> None:
        """A duplicate raises DuplicateError from an explicit flush."""
        async with db.session() as session:
            session.add(User(email="a@example.com"))
        async with db.session() as session:
            session.add(User(email="a@example.com"))
            with pytest.raises(DuplicateError):
                await session.flush()
            await session.rollback()

    async def test_unique_violation_from_core_statement(self, db: Database) -> None:
        """A Core INSERT on a raw connection is translated too, with the driver error chained."""
        async with db.engine.begin() as conn:
            await conn.execute(text("INSERT INTO users (email, name) VALUES ('x@y.z', '')"))
        with pytest.raises(DuplicateError) as info:
            async with db.engine.begin() as conn:
                await conn.execute(text("INSERT INTO users (email, name) VALUES ('x@y.z', '')"))
        assert not isinstance(info.value, IntegrityError)
        assert info.value.__cause__ is not None

    async def test_constraint_name_reported_on_postgres(
        self, backend: Backend, db: Database
    ) -> None:
        """PostgreSQL reports which constraint a duplicate violated."""
        if not backend.is_postgres:
            pytest.skip("SQLite does not name the violated constraint")
        async with db.session() as session:
            session.add(User(email="a@example.com"))
        with pytest.raises(DuplicateError) as info:
            async with db.session() as session:
                session.add(User(email="a@example.com"))
        assert info.value.constraint == "uq_users_email"

    async def test_not_null_violation(self, db: Database) -> None:
        """A NULL in a NOT NULL column raises ConstraintError, a ValueError."""
        with pytest.raises(ConstraintError) as info:
            async with db.engine.begin() as conn:
                await conn.execute(text("INSERT INTO users (email, name) VALUES (NULL, '')"))
        assert isinstance(info.value, ValueError)

    async def test_other_errors_pass_through(self, db: Database) -> None:
        """A syntax error is not dressed up as an underlay error."""
        with pytest.raises(Exception) as info:  # noqa: PT011 - the type is the point
            async with db.session() as session:
                await session.execute(text("SELEKT 1"))
        assert not isinstance(info.value, UnderlayError)


class TestConcurrentWriters:
    async def test_sqlite_lost_write_race_is_a_conflict(self, backend: Backend) -> None:
        """Two SQLite transactions that read then write: the loser gets SerializationError."""
        if backend.concurrent_writers:
            pytest.skip("row-locking backends serialise these writes instead of failing one")
        database = Database(backend.url, sqlite_busy_timeout=100)
        try:
            async with database.engine.begin() as conn:
                await conn.execute(text("CREATE TABLE counters (id INTEGER PRIMARY KEY, n INT)"))
                await conn.execute(text("INSERT INTO counters VALUES (1, 0)"))
            first = database.sessionmaker()
            second = database.sessionmaker()
            try:
                await first.execute(text("SELECT n FROM counters"))
                await second.execute(text("SELECT n FROM counters"))
                await first.execute(text("UPDATE counters SET n = n + 1"))
                await first.commit()
                with pytest.raises(SerializationError):
                    await second.execute(text("UPDATE counters SET n = n + 1"))
            finally:
                await first.close()
                await second.close()
        finally:
            await database.dispose()
