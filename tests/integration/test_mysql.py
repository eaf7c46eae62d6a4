"""MySQL / MariaDB: sessions work and driver errors leave as underlay errors.

Runs against the server in ``UNDERLAY_TEST_MYSQL_URL`` (default: MariaDB on 127.0.0.1:3306,
user root), in a database of each test's own, created for it and dropped afterwards.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import CheckConstraint, ForeignKey, MetaData, String, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from tests.services import _reachable, unavailable
from underlay import (
    ConstraintError,
    Database,
    DuplicateError,
    ForeignKeyError,
    SerializationError,
    SQLAlchemyRepository,
)
from underlay.models import Base

DEFAULT_MYSQL_URL = "mysql+aiomysql://root@127.0.0.1:3306/test"


class MyBase(DeclarativeBase):
    metadata = MetaData(naming_convention=Base.metadata.naming_convention)


class Author(MyBase):
    __tablename__ = "authors"
    __table_args__ = (CheckConstraint("length(name) > 0", name="name_not_empty"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(100))


class Book(MyBase):
    __tablename__ = "books"
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"), index=True)


class Authors(SQLAlchemyRepository[Author]):
    pass


@pytest.fixture
async def mysql() -> AsyncIterator[Database]:
    """A database of the test's own on the MySQL / MariaDB server, with the tables."""
    pytest.importorskip("aiomysql")
    url = make_url(os.environ.get("UNDERLAY_TEST_MYSQL_URL", DEFAULT_MYSQL_URL))
    if not _reachable(url.host or "127.0.0.1", url.port or 3306):
        unavailable("MySQL / MariaDB", url.render_as_string(hide_password=True))
    name = f"underlay_{uuid.uuid4().hex[:12]}"
    async with Database(url) as server, server.engine.begin() as conn:
        await conn.execute(text(f"CREATE DATABASE {name}"))
    try:
        async with Database(url.set(database=name)) as db:
            await db.create_all(MyBase.metadata)
            yield db
    finally:
        async with Database(url) as server, server.engine.begin() as conn:
            await conn.execute(text(f"DROP DATABASE {name}"))


@pytest.fixture
async def author(mysql: Database) -> Author:
    """One committed author."""
    async with mysql.session() as session:
        return await Authors(session).save(Author(email="a@x.org", name="A"))


class TestMySQLErrors:
    async def test_session_commits_and_reads_back(self, mysql: Database, author: Author) -> None:
        """A committed row is read back by a new session."""
        async with mysql.session() as session:
            found = await Authors(session).get(author.id)
        assert found is not None
        assert found.email == author.email

    async def test_duplicate_key_is_a_duplicate_error(
        self, mysql: Database, author: Author
    ) -> None:
        """A unique violation leaves as `DuplicateError`, the driver's error chained."""
        with pytest.raises(DuplicateError) as caught:
            async with mysql.session() as session:
                await Authors(session).save(Author(email=author.email, name="B"))
        assert "Duplicate entry" in str(caught.value)
        assert caught.value.__cause__ is not None

    async def test_missing_parent_is_a_foreign_key_error(self, mysql: Database) -> None:
        """A foreign key to a missing row leaves as `ForeignKeyError`."""
        with pytest.raises(ForeignKeyError):
            async with mysql.session() as session:
                session.add(Book(author_id=999_999))

    async def test_deleting_a_referenced_parent_is_a_foreign_key_error(
        self, mysql: Database, author: Author
    ) -> None:
        """Deleting a row that others reference leaves as `ForeignKeyError`."""
        async with mysql.session() as session:
            session.add(Book(author_id=author.id))
        with pytest.raises(ForeignKeyError):
            async with mysql.session() as session:
                await session.execute(text("DELETE FROM authors WHERE id = :id"), {"id": author.id})

    async def test_not_null_and_check_are_constraint_errors(self, mysql: Database) -> None:
        """NOT NULL and CHECK violations leave as `ConstraintError`."""
        with pytest.raises(ConstraintError):
            async with mysql.session() as session:
                await session.execute(
                    text("INSERT INTO authors (email, name) VALUES ('n@x.org', NULL)")
                )
        with pytest.raises(ConstraintError):
            async with mysql.session() as session:
                await session.execute(
                    text("INSERT INTO authors (email, name) VALUES ('c@x.org', '')")
                )

    async def test_deadlock_is_a_serialization_error(self, mysql: Database, author: Author) -> None:
        """Two transactions lock two rows in opposite order: one gets `SerializationError`."""
        async with mysql.session() as session:
            other = await Authors(session).save(Author(email="b@x.org", name="B"))
        first_locked = [asyncio.Event(), asyncio.Event()]
        ids = [author.id, other.id]

        async def lock_both(me: int) -> None:
            async with mysql.session() as session:
                lock = "SELECT id FROM authors WHERE id = :id FOR UPDATE"
                await session.execute(text(lock), {"id": ids[me]})
                first_locked[me].set()
                await first_locked[1 - me].wait()
                await session.execute(text(lock), {"id": ids[1 - me]})

        results = await asyncio.gather(lock_both(0), lock_both(1), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        assert len(errors) == 1, results
        assert isinstance(errors[0], SerializationError)
