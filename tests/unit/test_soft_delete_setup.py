"""Setting up soft delete without a database: live-row indexes and listener targets."""

from __future__ import annotations

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.schema import CreateIndex

from underlay import enable_soft_delete, enable_versioning, live_unique_index
from underlay.models import NAMING_CONVENTION


def _table(metadata: MetaData, *indexes: object) -> Table:
    return Table(
        "people",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("tenant", Integer),
        Column("email", String(100)),
        Column("deleted_at", String(30)),
        *indexes,
    )


class TestLiveUniqueIndex:
    @pytest.mark.parametrize(
        "dialect", [postgresql.dialect(), sqlite.dialect()], ids=["postgresql", "sqlite"]
    )
    def test_partial_unique_index(self, dialect: object) -> None:
        """The index is unique and partial on live rows on PostgreSQL and SQLite."""
        table = _table(MetaData(), live_unique_index("email"))
        (index,) = table.indexes
        ddl = str(CreateIndex(index).compile(dialect=dialect))  # type: ignore[arg-type]
        assert ddl == (
            "CREATE UNIQUE INDEX uq_people_email_live ON people (email) WHERE deleted_at IS NULL"
        )

    @pytest.mark.parametrize(
        "metadata",
        [MetaData(), MetaData(naming_convention=NAMING_CONVENTION)],
        ids=["no-convention", "naming-convention"],
    )
    def test_default_name_survives_naming_convention(self, metadata: MetaData) -> None:
        """The default name names table and columns, with or without a naming convention."""
        table = _table(metadata, live_unique_index("tenant", "email"))
        assert [index.name for index in table.indexes] == ["uq_people_tenant_email_live"]

    def test_explicit_name(self) -> None:
        """name= chooses the index name."""
        table = _table(MetaData(), live_unique_index("email", name="one_live_email"))
        assert [index.name for index in table.indexes] == ["one_live_email"]

    def test_needs_columns(self) -> None:
        """An index over nothing is refused."""
        with pytest.raises(ValueError, match="column"):
            live_unique_index()


class TestTargets:
    @pytest.mark.parametrize(
        "target", [Session, AsyncSession], ids=["sync-session-class", "async-session-class"]
    )
    @pytest.mark.parametrize(
        "enable", [enable_soft_delete, enable_versioning], ids=["soft-delete", "versioning"]
    )
    def test_refuses_global_session_class(self, enable: object, target: type) -> None:
        """The global Session class is refused: it would change every session in the process."""
        with pytest.raises(ValueError, match="Session"):
            enable(target)  # type: ignore[operator]

    def test_async_sessionmaker_gets_own_session_class(self) -> None:
        """An async_sessionmaker without a sync class of its own is given one, not Session."""
        maker = async_sessionmaker()
        enable_soft_delete(maker)
        sync_class = maker.kw["sync_session_class"]
        assert sync_class is not Session
        assert issubclass(sync_class, Session)

    def test_sessionmaker_class_is_scoped(self) -> None:
        """Enabling one sessionmaker leaves the sessions of another one alone."""
        filtered, plain = sessionmaker(), sessionmaker()
        enable_soft_delete(filtered)
        enable_soft_delete(filtered)
        assert getattr(filtered.class_, "_underlay_installed", None) == {"underlay.soft_delete"}
        assert getattr(plain.class_, "_underlay_installed", None) is None
