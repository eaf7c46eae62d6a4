"""Base and TimestampMixin behave the same on every backend."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import MetaData, select, update

from tests.integration.models import Event, PlainBase, User
from underlay import Database


class TestTimestamps:
    async def test_set_by_database_and_aware(self, db: Database) -> None:
        """created_at and updated_at come back timezone-aware UTC, close to now."""
        async with db.session() as session:
            user = User(email="a@example.com")
            session.add(user)
            await session.flush()
            assert user.created_at.tzinfo is not None
            assert user.created_at.utcoffset() == timedelta(0)
            assert abs(datetime.now(UTC) - user.created_at) < timedelta(minutes=1)
        async with db.session() as session:
            loaded = await session.get(User, user.id)
            assert loaded is not None
            assert loaded.updated_at.tzinfo is not None

    async def test_updated_at_moves_on_orm_update(self, db: Database) -> None:
        """An ORM update moves updated_at and leaves created_at alone, without a reload."""
        async with db.session() as session:
            user = User(email="a@example.com")
            session.add(user)
        created, first = user.created_at, user.updated_at
        await asyncio.sleep(0.02)
        async with db.session() as session:
            loaded = await session.get(User, user.id)
            assert loaded is not None
            loaded.name = "changed"
        assert loaded.updated_at > first
        assert loaded.created_at == created

    async def test_updated_at_moves_on_core_update(self, db: Database) -> None:
        """A bulk Core UPDATE of the table moves updated_at too."""
        async with db.session() as session:
            user = User(email="a@example.com")
            session.add(user)
        await asyncio.sleep(0.02)
        async with db.session() as session:
            await session.execute(update(User).values(name="bulk"))
        async with db.session() as session:
            stamp = await session.scalar(select(User.updated_at))
        assert stamp is not None
        assert stamp > user.updated_at

    async def test_naive_datetime_refused(self, db: Database) -> None:
        """A naive datetime is refused before it reaches the database."""
        with pytest.raises(Exception, match="naive datetime"):
            async with db.session() as session:
                session.add(User(email="a@example.com", created_at=datetime(2024, 1, 1)))


class TestOwnBase:
    @pytest.fixture
    def metadata(self) -> MetaData:
        return PlainBase.metadata

    async def test_mixin_on_users_own_base(self, db: Database) -> None:
        """TimestampMixin works on a DeclarativeBase that is not underlay's."""
        async with db.session() as session:
            event = Event(kind="signup")
            session.add(event)
        assert event.created_at.tzinfo is not None
        await asyncio.sleep(0.02)
        async with db.session() as session:
            loaded = await session.get(Event, event.id)
            assert loaded is not None
            loaded.kind = "login"
        assert loaded.updated_at > event.created_at


class TestNamingConvention:
    def test_constraint_names_are_stable(self) -> None:
        """Constraints get conventional names Alembic can rely on."""
        from tests.integration.models import Post

        assert User.__table__.primary_key.name == "pk_users"
        names = {c.name for c in User.__table__.constraints}
        assert "uq_users_email" in names
        fk_names = {fk.name for fk in Post.__table__.foreign_keys if fk.constraint is not None}
        assert fk_names == {"fk_posts_author_id_users"} or {
            fk.constraint.name for fk in Post.__table__.foreign_keys if fk.constraint
        } == {"fk_posts_author_id_users"}
