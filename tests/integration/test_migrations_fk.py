"""Foreign keys without an index: detection in models and databases, the opt-in indexes."""

from __future__ import annotations

import sys
from pathlib import Path
from types import ModuleType

import pytest
from sqlalchemy import (
    Column,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from underlay import Database
from underlay.migrations import (
    MigrationDriftError,
    UnindexedForeignKey,
    check,
    index_foreign_keys,
    init,
    revision,
    unindexed_foreign_keys,
    upgrade,
)
from underlay.models import NAMING_CONVENTION

MODELS_MODULE = "underlay_fk_models"


def shop() -> MetaData:
    """Tables whose foreign keys are covered in every way an index can cover them, or not."""
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    Table("users", metadata, Column("id", Integer, primary_key=True))
    Table(
        "orgs",
        metadata,
        Column("id", Integer, primary_key=True),
        Column("a", Integer),
        Column("b", Integer),
        UniqueConstraint("a", "b"),
    )
    Table(
        "orders",
        metadata,
        Column("id", Integer, primary_key=True),
        # no index at all
        Column("buyer_id", ForeignKey("users.id")),
        # the second column of an index: not usable for the lookup
        Column("seller_id", ForeignKey("users.id")),
        Column("code", String(10)),
        # a partial index does not count
        Column("courier_id", ForeignKey("users.id")),
        # a composite key covered by an index in the other column order
        Column("org_a", Integer),
        Column("org_b", Integer),
        # covered by a unique constraint
        Column("agent_id", ForeignKey("users.id")),
        ForeignKeyConstraint(["org_a", "org_b"], ["orgs.a", "orgs.b"]),
        Index(None, "code", "seller_id"),
        Index(None, "courier_id", postgresql_where=text("code IS NULL")),
        Index(None, "org_b", "org_a", "code"),
        UniqueConstraint("agent_id"),
    )
    Table(
        "lines",
        metadata,
        # the leading column of the primary key
        Column("order_id", ForeignKey("orders.id"), primary_key=True),
        Column("n", Integer, primary_key=True),
    )
    return metadata


EXPECTED = [
    ("orders", ("buyer_id",), "users", "ix_orders_buyer_id"),
    ("orders", ("courier_id",), "users", "ix_orders_courier_id_fk"),
    ("orders", ("seller_id",), "users", "ix_orders_seller_id"),
]


def summary(keys: list[UnindexedForeignKey]) -> list[tuple[str, tuple[str, ...], str, str]]:
    return [(key.table, key.columns, key.referred_table, key.index_name) for key in keys]


class TestModels:
    def test_finds_the_uncovered_keys(self) -> None:
        """Primary keys, unique constraints and leading index columns cover; the rest do not."""
        assert summary(unindexed_foreign_keys(shop())) == EXPECTED

    def test_one_table(self) -> None:
        """A single table is checked on its own."""
        metadata = shop()
        assert summary(unindexed_foreign_keys(metadata.tables["lines"])) == []
        assert len(unindexed_foreign_keys(metadata.tables["orders"])) == 3

    def test_message_is_a_sentence_naming_the_fix(self) -> None:
        """str() says what is missing, what it costs and which index to add."""
        [first, *_] = unindexed_foreign_keys(shop())
        assert str(first) == (
            "Foreign key orders(buyer_id) -> users has no index: deleting a users row scans "
            "orders. Add an index on orders(buyer_id), e.g. ix_orders_buyer_id."
        )
        assert first.constraint_name == "fk_orders_buyer_id_users"

    def test_index_foreign_keys_adds_named_indexes_once(self) -> None:
        """The opt-in indexes every uncovered key, named by the convention, and is idempotent."""
        metadata = shop()
        added = index_foreign_keys(metadata)
        assert sorted(str(index.name) for index in added) == [name for *_, name in EXPECTED]
        assert unindexed_foreign_keys(metadata) == []
        assert index_foreign_keys(metadata) == []

    def test_declarative_base_indexes_later_models(self) -> None:
        """Passing the base indexes the models mapped after the call too."""

        class Model(DeclarativeBase):
            metadata = MetaData(naming_convention=NAMING_CONVENTION)

        class Team(Model):
            __tablename__ = "teams"
            id: Mapped[int] = mapped_column(primary_key=True)

        class Member(Model):
            __tablename__ = "members"
            id: Mapped[int] = mapped_column(primary_key=True)
            team_id: Mapped[int] = mapped_column(ForeignKey(Team.id))

        assert [index.name for index in index_foreign_keys(Model)] == ["ix_members_team_id"]

        class Invite(Model):
            __tablename__ = "invites"
            id: Mapped[int] = mapped_column(primary_key=True)
            team_id: Mapped[int] = mapped_column(ForeignKey(Team.id))

        assert {index.name for index in Invite.__table__.indexes} == {"ix_invites_team_id"}
        assert unindexed_foreign_keys(Model.metadata) == []

    def test_rejects_other_objects(self) -> None:
        """Anything but MetaData, Table or a declarative base is a TypeError."""
        with pytest.raises(TypeError, match="declarative base"):
            index_foreign_keys(object)


class TestDatabase:
    @pytest.fixture
    def metadata(self) -> MetaData:
        return shop()

    async def test_reflected_schema_gives_the_same_answer(self, db: Database) -> None:
        """Reading the database finds the same keys as reading the models (partial on PG)."""
        async with db.engine.connect() as conn:
            found = summary(await conn.run_sync(unindexed_foreign_keys))
        if db.engine.dialect.name == "postgresql":
            assert found == EXPECTED
        else:
            # the index carries postgresql_where only: on SQLite it is a full index
            assert found == [key for key in EXPECTED if key[1] != ("courier_id",)]

    async def test_check_reports_and_can_require(
        self, db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """check() returns the unindexed keys; with require_foreign_key_indexes they are drift."""
        models = ModuleType(MODELS_MODULE)
        models.metadata = shop()  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, MODELS_MODULE, models)
        location = init(tmp_path / "migrations")
        (location / "env.py").write_text(
            f"from {MODELS_MODULE} import metadata\n"
            "from underlay.migrations import run_migrations\n"
            "run_migrations(metadata)\n"
        )
        async with db.engine.begin() as conn:
            await conn.run_sync(lambda sync: shop().drop_all(sync))
        await revision(db, "initial", script_location=location, rev_id="0001")
        await upgrade(db, script_location=location)
        reported = await check(db, script_location=location)
        assert ("orders", ("buyer_id",), "users", "ix_orders_buyer_id") in summary(reported)
        with pytest.raises(MigrationDriftError, match=r"orders\(buyer_id\) -> users"):
            await check(db, script_location=location, require_foreign_key_indexes=True)

        index_foreign_keys(models.metadata)  # type: ignore[attr-defined]
        script = await revision(db, "index keys", script_location=location, rev_id="0002")
        assert "ix_orders_buyer_id" in script.read_text()
        await upgrade(db, script_location=location)
        assert await check(db, script_location=location, require_foreign_key_indexes=True) == []
