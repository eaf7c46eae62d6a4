"""Autogenerate without hand edits: rename decisions, drift in sentences, enum columns."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate.api import AutogenContext
from alembic.runtime.migration import MigrationContext
from sqlalchemy import (
    JSON,
    Column,
    Computed,
    Enum,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    inspect,
    text,
)
from sqlalchemy.dialects import postgresql

from underlay import Database
from underlay.migrations import (
    MigrationDriftError,
    PossibleRenameError,
    check,
    downgrade,
    init,
    make_config,
    render_item,
    revision,
    stairway,
    upgrade,
)
from underlay.migrations._sqlite import generated_expression
from underlay.models import NAMING_CONVENTION

MODELS_MODULE = "underlay_autogen_models"
ENV_PY = f"""\
from {MODELS_MODULE} import current

from underlay.migrations import run_migrations

run_migrations(current.metadata)
"""


def items(**changes: Any) -> MetaData:
    """An ``items`` table; keyword arguments change one aspect of it."""
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    columns = [
        Column("id", Integer, primary_key=True),
        Column(changes.get("title", "title"), String(40)),
        Column("role", String(20), server_default=changes.get("role", "member"), nullable=False),
        Column("deleted_at", Integer),
    ]
    if "kind" in changes:
        columns.append(Column("kind", Enum(*changes["kind"], name="item_kind")))
    if "status" in changes:
        columns.append(Column("status", Enum(*changes["status"], name="item_status")))
    live = changes.get("live", "deleted_at IS NULL")
    Table(
        "items",
        metadata,
        *columns,
        Index(
            "ix_items_role_live",
            "role",
            postgresql_where=text(live),
            sqlite_where=text(live),
        ),
    )
    return metadata


class Models:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.module = ModuleType(MODELS_MODULE)
        self.module.current = self  # type: ignore[attr-defined]
        self.metadata = items()
        monkeypatch.setitem(sys.modules, MODELS_MODULE, self.module)


@pytest.fixture
def metadata() -> MetaData:
    """The ``db`` fixture starts empty: the migrations build the schema."""
    return MetaData()


@pytest.fixture
def models(monkeypatch: pytest.MonkeyPatch) -> Models:
    return Models(monkeypatch)


@pytest.fixture
def migrations(tmp_path: Path, models: Models) -> Path:
    location = init(tmp_path / "migrations")
    (location / "env.py").write_text(ENV_PY)
    return location


async def initial(db: Database, migrations: Path) -> None:
    await revision(db, "initial", script_location=migrations, rev_id="0001")
    await upgrade(db, script_location=migrations)
    async with db.engine.begin() as conn:
        await conn.execute(text("INSERT INTO items (id, title) VALUES (1, 'a'), (2, 'b')"))


class TestRenames:
    async def test_undecided_pair_writes_nothing_and_says_how_to_decide(
        self, db: Database, migrations: Path, models: Models
    ) -> None:
        """A column dropped and another added: PossibleRenameError, no script written."""
        await initial(db, migrations)
        models.metadata = items(title="name")
        with pytest.raises(PossibleRenameError) as info:
            await revision(db, "rename", script_location=migrations, rev_id="0002")
        assert info.value.candidates == [("items", "title", "name")]
        message = str(info.value)
        assert "items: drop title (VARCHAR(40)), add name (VARCHAR(40))" in message
        assert "renames={'items.title': 'name'}" in message
        assert "-x rename=items.title:name" in message
        assert "drops={'items.title'}" in message
        assert "No script was written" in message
        assert [path.name for path in (migrations / "versions").glob("*.py")] == [
            next((migrations / "versions").glob("*0001*")).name
        ]

    async def test_confirmed_rename_keeps_the_data_both_ways(
        self, db: Database, migrations: Path, models: Models
    ) -> None:
        """renames= writes alter_column(new_column_name=...): rows survive up and down."""
        await initial(db, migrations)
        models.metadata = items(title="name")
        script = await revision(
            db,
            "rename",
            script_location=migrations,
            rev_id="0002",
            renames={"items.title": "name"},
        )
        source = script.read_text()
        upgrade_body, downgrade_body = source.split("def downgrade")
        assert "alter_column('title'," in upgrade_body
        assert "new_column_name='name'" in upgrade_body
        assert "alter_column('name'," in downgrade_body
        assert "new_column_name='title'" in downgrade_body
        assert "drop_column" not in source
        await upgrade(db, script_location=migrations)
        await check(db, script_location=migrations)
        async with db.engine.connect() as conn:
            names = await conn.execute(text("SELECT name FROM items ORDER BY id"))
            assert names.scalars().all() == ["a", "b"]
        await downgrade(db, "0001", script_location=migrations)
        async with db.engine.connect() as conn:
            titles = await conn.execute(text("SELECT title FROM items ORDER BY id"))
            assert titles.scalars().all() == ["a", "b"]

    async def test_confirmed_drop_writes_the_drop(
        self, db: Database, migrations: Path, models: Models
    ) -> None:
        """drops= keeps Alembic's drop and add, as the user decided."""
        await initial(db, migrations)
        models.metadata = items(title="name")
        script = await revision(
            db, "replace", script_location=migrations, rev_id="0002", drops={"items.title"}
        )
        source = script.read_text()
        assert "drop_column('title')" in source
        assert "add_column(sa.Column('name'" in source

    async def test_a_rename_that_matches_nothing_is_refused(
        self, db: Database, migrations: Path, models: Models
    ) -> None:
        """A typo in renames= is an error, not silently ignored."""
        await initial(db, migrations)
        models.metadata = items(title="name")
        with pytest.raises(ValueError, match=r"items\.titel"):
            await revision(
                db,
                "rename",
                script_location=migrations,
                rev_id="0002",
                renames={"items.titel": "name"},
            )

    def test_alembic_command_line_x_arguments(
        self, tmp_path: Path, migrations: Path, models: Models
    ) -> None:
        """alembic revision --autogenerate -x rename=table.old:new decides on the command line."""
        config = make_config(migrations)
        config.set_main_option("sqlalchemy.url", f"sqlite+pysqlite:///{tmp_path / 'x.db'}")
        command.revision(config, message="initial", autogenerate=True, rev_id="0001")
        command.upgrade(config, "head")
        models.metadata = items(title="name")
        config.cmd_opts = argparse.Namespace(x=["rename=items.title:name"])
        script = command.revision(config, message="rename", autogenerate=True, rev_id="0002")
        assert script is not None
        assert not isinstance(script, list)
        assert "new_column_name='name'" in Path(script.path).read_text()


class TestDrift:
    async def test_changed_server_default_is_a_sentence(
        self, db: Database, migrations: Path, models: Models
    ) -> None:
        """A changed server default is drift, written as values, not DefaultClause objects."""
        await initial(db, migrations)
        models.metadata = items(role="viewer")
        with pytest.raises(MigrationDriftError) as info:
            await check(db, script_location=migrations)
        assert info.value.differences == [
            "Column items.role has server default 'member' in the database and 'viewer' in "
            "the models."
        ]
        script = await revision(db, "viewer", script_location=migrations, rev_id="0002")
        assert "server_default='viewer'" in script.read_text()
        await upgrade(db, script_location=migrations)
        await check(db, script_location=migrations)

    async def test_changed_index_predicate_is_drift(
        self, db: Database, migrations: Path, models: Models
    ) -> None:
        """A partial index whose WHERE changed is found and recreated, and back."""
        await initial(db, migrations)
        models.metadata = items(live="deleted_at IS NULL AND id > 0")
        with pytest.raises(MigrationDriftError) as info:
            await check(db, script_location=migrations)
        [sentence] = info.value.differences
        assert sentence.startswith("Index ix_items_role_live on items has WHERE ")
        assert sentence.endswith("in the models.")
        assert "id > 0" in sentence
        await revision(db, "predicate", script_location=migrations, rev_id="0002")
        await upgrade(db, script_location=migrations)
        await check(db, script_location=migrations)
        await downgrade(db, "0001", script_location=migrations)
        async with db.engine.connect() as conn:
            indexes = await conn.run_sync(lambda sync: inspect(sync).get_indexes("items"))
        [index] = indexes
        where = index["dialect_options"][f"{db.engine.dialect.name}_where"]
        assert "id > 0" not in str(getattr(where, "text", where))
        await upgrade(db, script_location=migrations)
        await check(db, script_location=migrations)

    async def test_new_enum_value_is_drift_and_migrates(
        self, db: Database, migrations: Path, models: Models
    ) -> None:
        """A new enum value: drift on native enums, op.alter_enum adds it and takes it back."""
        models.metadata = items(kind=["a", "b"])
        await initial(db, migrations)
        models.metadata = items(kind=["a", "b", "c"])
        if not db.engine.dialect.supports_native_enum:
            await check(db, script_location=migrations)  # nothing to compare on SQLite
            return
        with pytest.raises(MigrationDriftError) as info:
            await check(db, script_location=migrations)
        assert info.value.differences == [
            "Enum type item_kind has the values a, b in the database and a, b, c in the models."
        ]
        script = await revision(db, "c", script_location=migrations, rev_id="0002")
        source = script.read_text()
        assert "op.alter_enum('item_kind', ['a', 'b', 'c'], existing_values=['a', 'b'])" in source
        await upgrade(db, script_location=migrations)
        await check(db, script_location=migrations)
        async with db.engine.begin() as conn:
            await conn.execute(text("UPDATE items SET kind = 'b'"))
        await downgrade(db, "0001", script_location=migrations)
        async with db.engine.connect() as conn:
            kinds = await conn.execute(text("SELECT kind FROM items"))
            assert set(kinds.scalars()) == {"b"}
            labels = await conn.scalar(text("SELECT enum_range(NULL::item_kind)::text"))
            assert labels == "{a,b}"


class TestEnumColumns:
    async def test_enum_column_on_an_existing_table(
        self, db: Database, migrations: Path, models: Models
    ) -> None:
        """A new enum column gets its type created first and dropped after; stairway passes."""
        await revision(db, "initial", script_location=migrations, rev_id="0001")
        await upgrade(db, script_location=migrations)
        models.metadata = items(status=["open", "closed"])
        script = await revision(db, "status", script_location=migrations, rev_id="0002")
        source = script.read_text()
        upgrade_body, downgrade_body = source.split("def downgrade")
        assert "op.create_enum('item_status', ['open', 'closed'])" in upgrade_body
        assert "op.drop_enum('item_status')" in downgrade_body
        await downgrade(db, "base", script_location=migrations)
        assert await stairway(db, script_location=migrations) == ["0001", "0002"]
        await check(db, script_location=migrations)


class TestRendering:
    def render(self, type_: Any) -> tuple[str | bool, set[str]]:
        migration_context = MigrationContext.configure(dialect_name="sqlite")
        context = AutogenContext(migration_context, autogenerate=False)
        return render_item("type", type_, context), context.imports

    def test_variants_are_qualified(self) -> None:
        """Nested types inside a variant are written as sa.X, with the dialect imported."""
        source, imports = self.render(
            JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql")
        )
        assert (
            source
            == "sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')"
        )
        assert "from sqlalchemy.dialects import postgresql" in imports
        source, _ = self.render(JSON().with_variant(postgresql.ARRAY(String(40)), "postgresql"))
        assert source == (
            "sa.JSON().with_variant(postgresql.ARRAY(sa.String(length=40)), 'postgresql')"
        )

    def test_reflected_postgresql_types_become_portable(self) -> None:
        """A reflected JSONB or ENUM in a downgrade is written so that SQLite runs it too."""
        source, _ = self.render(postgresql.JSONB(astext_type=Text()))
        assert source == (
            "sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')"
        )
        source, _ = self.render(postgresql.ENUM("a", "b", name="kind"))
        assert source == "sa.Enum('a', 'b', name='kind')"
        source, _ = self.render(postgresql.TIMESTAMP(timezone=True))
        assert source == "sa.DateTime(timezone=True)"
        assert self.render(String(40))[0] is False

    def test_generated_expression_with_commas(self) -> None:
        """The generated column's expression is found past NUMERIC(6, 2) and nested calls."""
        metadata = MetaData()
        Table(
            "invoices",
            metadata,
            Column("amount", Numeric(6, 2)),
            Column("tax", Numeric(6, 2), Computed("round(amount * 0.19, 2)")),
        )
        from sqlalchemy.dialects import sqlite
        from sqlalchemy.schema import CreateTable

        sql = str(CreateTable(metadata.tables["invoices"]).compile(dialect=sqlite.dialect()))
        assert generated_expression(sql, "tax") == "round(amount * 0.19, 2)"
        assert generated_expression(sql, "missing") is None
