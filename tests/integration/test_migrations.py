"""underlay.migrations: the env helper, programmatic commands, drift check and stairway."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import pytest
from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import ForeignKey, Index, MetaData, String, inspect, select, text
from sqlalchemy.exc import DatabaseError
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from tests.conftest import Backend
from underlay import Database, SoftDeleteMixin, TimestampMixin, UTCDateTime, VersionedMixin
from underlay.migrations import (
    MigrationDriftError,
    StairwayError,
    check,
    downgrade,
    init,
    make_config,
    revision,
    stairway,
    upgrade,
    upgrade_sql,
)
from underlay.models import NAMING_CONVENTION

MODELS_MODULE = "underlay_drift_models"

ENV_PY = f"""\
from {MODELS_MODULE} import current

from underlay.migrations import run_migrations

run_migrations(current.metadata)
"""


@pytest.fixture
def metadata() -> MetaData:
    """The ``db`` fixture starts empty: the migrations build the schema."""
    return MetaData()


def build_models(*, with_summary: bool) -> MetaData:
    """Declare the ``items`` model on a fresh registry; optionally with a new column."""

    class Model(DeclarativeBase):
        metadata = MetaData(naming_convention=NAMING_CONVENTION)
        type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}

    class Item(TimestampMixin, SoftDeleteMixin, VersionedMixin, Model):
        __tablename__ = "items"
        __table_args__ = (
            Index(
                "uq_items_code_live",
                "code",
                unique=True,
                postgresql_where=text("deleted_at IS NULL"),
                sqlite_where=text("deleted_at IS NULL"),
            ),
        )

        id: Mapped[int] = mapped_column(primary_key=True)
        code: Mapped[str] = mapped_column(String(40))
        if with_summary:
            summary: Mapped[str | None] = mapped_column(String(200))

    return Model.metadata


def build_family(*, name_length: int) -> MetaData:
    """A parent table referenced by a child table; the parent's ``name`` length varies."""

    class Model(DeclarativeBase):
        metadata = MetaData(naming_convention=NAMING_CONVENTION)

    class Parent(Model):
        __tablename__ = "parents"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str] = mapped_column(String(name_length))

    class Child(Model):
        __tablename__ = "children"
        id: Mapped[int] = mapped_column(primary_key=True)
        parent_id: Mapped[int] = mapped_column(ForeignKey(Parent.id))

    return Model.metadata


class Models:
    """What ``env.py`` imports: tests swap ``current.metadata`` to change the models."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.module = ModuleType(MODELS_MODULE)
        self.module.current = self  # type: ignore[attr-defined]
        self.metadata = build_models(with_summary=False)
        monkeypatch.setitem(sys.modules, MODELS_MODULE, self.module)


@pytest.fixture
def models(monkeypatch: pytest.MonkeyPatch) -> Models:
    return Models(monkeypatch)


@pytest.fixture
def migrations(tmp_path: Path, models: Models) -> Path:
    """A migrations directory from underlay's template whose env.py reads ``models``."""
    location = init(tmp_path / "migrations")
    (location / "env.py").write_text(ENV_PY)
    return location


def revision_ids(location: Path) -> list[str]:
    scripts = ScriptDirectory.from_config(make_config(location))
    return [script.revision for script in reversed(list(scripts.walk_revisions()))]


async def table_names(db: Database) -> set[str]:
    async with db.engine.connect() as conn:
        return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))


async def columns(conn: AsyncConnection, table: str) -> set[str]:
    names = await conn.run_sync(lambda sync: inspect(sync).get_columns(table))
    return {column["name"] for column in names}


class TestAutogenerate:
    async def test_initial_revision_renders_underlay_columns(
        self, db: Database, migrations: Path
    ) -> None:
        """Autogenerate writes portable utcnow() defaults, UTCDateTime and the partial index."""
        script = await revision(db, "initial", script_location=migrations, rev_id="0001")
        source = script.read_text()
        assert "server_default=underlay.models.utcnow()" in source
        assert "underlay.UTCDateTime()" in source
        assert "import underlay.models" in source
        assert "postgresql_where=sa.text('deleted_at IS NULL')" in source
        assert "sqlite_where=sa.text('deleted_at IS NULL')" in source
        assert "server_default=sa.text('1')" in source

    async def test_migrated_schema_behaves_like_the_models(
        self, db: Database, migrations: Path
    ) -> None:
        """After upgrading, the database sets timestamps and versions and enforces the index."""
        await revision(db, "initial", script_location=migrations, rev_id="0001")
        await upgrade(db, "head", script_location=migrations)
        async with db.engine.begin() as conn:
            await conn.execute(text("INSERT INTO items (code) VALUES ('a')"))
            row = (await conn.execute(text("SELECT version, created_at FROM items"))).one()
            assert row.version == 1
            assert row.created_at is not None
            await conn.execute(text("UPDATE items SET deleted_at = created_at"))
            await conn.execute(text("INSERT INTO items (code) VALUES ('a')"))
        async with db.engine.connect() as conn:
            count = await conn.scalar(select(text("count(*)")).select_from(text("items")))
        assert count == 2


class TestCheck:
    async def test_added_column_is_drift_until_a_migration_exists(
        self, db: Database, migrations: Path, models: Models
    ) -> None:
        """check() fails naming a column added without a migration, and passes after one."""
        await revision(db, "initial", script_location=migrations, rev_id="0001")
        await upgrade(db, "head", script_location=migrations)
        await check(db, script_location=migrations)

        models.metadata = build_models(with_summary=True)
        with pytest.raises(MigrationDriftError) as info:
            await check(db, script_location=migrations)
        assert info.value.differences == [
            "Column items.summary is in the models but not in the database."
        ]
        assert "items.summary" in str(info.value)

        script = await revision(db, "add summary", script_location=migrations, rev_id="0002")
        assert "add_column" in script.read_text()
        await upgrade(db, "head", script_location=migrations)
        await check(db, script_location=migrations)
        async with db.engine.connect() as conn:
            assert "summary" in await columns(conn, "items")

    async def test_removed_model_table_is_drift(
        self, db: Database, migrations: Path, models: Models
    ) -> None:
        """A table the migrations create but the models no longer declare is reported."""
        await revision(db, "initial", script_location=migrations, rev_id="0001")
        await upgrade(db, "head", script_location=migrations)
        models.metadata = MetaData(naming_convention=NAMING_CONVENTION)
        with pytest.raises(MigrationDriftError) as info:
            await check(db, script_location=migrations)
        assert "Table items is in the database but not in the models." in info.value.differences

    async def test_type_change_is_drift(
        self, db: Database, migrations: Path, models: Models
    ) -> None:
        """compare_type is on: a longer VARCHAR in the models is reported."""
        models.metadata = build_family(name_length=40)
        await revision(db, "initial", script_location=migrations, rev_id="0001")
        await upgrade(db, "head", script_location=migrations)
        models.metadata = build_family(name_length=80)
        with pytest.raises(MigrationDriftError) as info:
            await check(db, script_location=migrations)
        assert info.value.differences == [
            "Column parents.name has type VARCHAR(40) in the database and VARCHAR(80) in the "
            "models."
        ]


class TestReferencedTables:
    async def test_altering_a_referenced_table_keeps_its_rows(
        self, db: Database, migrations: Path, models: Models
    ) -> None:
        """A parent table with referencing rows can be altered (SQLite recreates it in batch)."""
        models.metadata = build_family(name_length=40)
        await revision(db, "initial", script_location=migrations, rev_id="0001")
        await upgrade(db, "head", script_location=migrations)
        async with db.engine.begin() as conn:
            await conn.execute(text("INSERT INTO parents (id, name) VALUES (1, 'ada')"))
            await conn.execute(text("INSERT INTO children (id, parent_id) VALUES (1, 1)"))

        models.metadata = build_family(name_length=80)
        script = await revision(db, "longer names", script_location=migrations, rev_id="0002")
        # batch mode on every backend: the same script recreates the table on SQLite
        assert "batch_alter_table('parents'" in script.read_text()
        await upgrade(db, "head", script_location=migrations)
        await check(db, script_location=migrations)
        async with db.engine.connect() as conn:
            joined = await conn.execute(
                text("SELECT p.name FROM children c JOIN parents p ON p.id = c.parent_id")
            )
            assert joined.scalars().all() == ["ada"]
            if db.engine.dialect.name == "sqlite":
                # enforcement is back on for the application's connections
                assert await conn.scalar(text("PRAGMA foreign_keys")) == 1


class TestStairway:
    async def test_every_revision_goes_up_down_and_up(
        self, db: Database, migrations: Path, models: Models
    ) -> None:
        """The stairway walks both revisions (batch mode drops a column on SQLite)."""
        await revision(db, "initial", script_location=migrations, rev_id="0001")
        await upgrade(db, "head", script_location=migrations)
        models.metadata = build_models(with_summary=True)
        await revision(db, "add summary", script_location=migrations, rev_id="0002")
        await downgrade(db, "base", script_location=migrations)
        assert await table_names(db) == {"alembic_version"}

        assert await stairway(db, script_location=migrations) == ["0001", "0002"]
        assert revision_ids(migrations) == ["0001", "0002"]
        assert {"items", "alembic_version"} <= await table_names(db)
        await check(db, script_location=migrations)

    async def test_a_downgrade_that_does_not_undo_fails(
        self, db: Database, migrations: Path
    ) -> None:
        """A revision whose downgrade forgets its table makes the stairway fail."""
        script = await revision(db, "initial", script_location=migrations, rev_id="0001")
        source = script.read_text()
        broken = source.replace("op.drop_table('items')", "pass")
        assert broken != source
        script.write_text(broken)
        with pytest.raises(StairwayError, match="items") as info:
            await stairway(db, script_location=migrations)
        assert (info.value.revision, info.value.step) == ("0001", "upgrade again")
        assert isinstance(info.value.__cause__, DatabaseError)


class TestRunningLoop:
    async def test_alembic_command_inside_running_loop(
        self, backend: Backend, db: Database, migrations: Path
    ) -> None:
        """env.py opens its own engine in a thread when a loop is already running here."""
        await revision(db, "initial", script_location=migrations, rev_id="0001")
        config = make_config(migrations)
        config.set_main_option("sqlalchemy.url", backend.url.replace("%", "%%"))
        command.upgrade(config, "head")
        assert "items" in await table_names(db)

    async def test_upgrade_from_url(self, backend: Backend, db: Database, migrations: Path) -> None:
        """The commands accept a URL and dispose of the engine they made."""
        await revision(db, "initial", script_location=migrations, rev_id="0001")
        await upgrade(backend.url, script_location=migrations)
        assert "items" in await table_names(db)
        await downgrade(backend.url, "base", script_location=migrations)
        assert "items" not in await table_names(db)

    async def test_default_location(
        self, db: Database, migrations: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without script_location the commands use ./migrations, as init-migrations makes it."""
        await revision(db, "initial", script_location=migrations, rev_id="0001")
        monkeypatch.chdir(migrations.parent)
        await upgrade(db)
        await check(db)
        assert "items" in await table_names(db)

    def test_sync_driver_url(self, tmp_path: Path, migrations: Path) -> None:
        """A URL naming a sync driver (pysqlite) migrates without an event loop."""
        path = tmp_path / "sync.db"
        config = make_config(migrations)
        config.set_main_option("sqlalchemy.url", f"sqlite+pysqlite:///{path}")
        command.revision(config, message="initial", autogenerate=True, rev_id="0001")
        command.upgrade(config, "head")
        command.check(config)
        # sqlite3's own context manager only commits; closing() closes the connection.
        with closing(sqlite3.connect(path)) as conn:
            tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master")}
        assert {"items", "alembic_version"} <= tables

    async def test_env_without_url_explains(self, migrations: Path) -> None:
        """Online mode without a connection or a URL raises a ValueError saying what to set."""
        with pytest.raises(ValueError, match=r"sqlalchemy\.url"):
            command.upgrade(make_config(migrations), "head")


class TestOffline:
    @pytest.mark.parametrize(
        ("url", "expected"),
        [
            ("postgresql+asyncpg://", "statement_timestamp()"),
            ("sqlite+aiosqlite://", "strftime"),
        ],
        ids=["postgresql", "sqlite"],
    )
    async def test_upgrade_sql_renders_for_the_dialect(
        self, db: Database, migrations: Path, url: str, expected: str
    ) -> None:
        """Offline mode renders one script to each dialect's SQL, without connecting."""
        await revision(db, "initial", script_location=migrations, rev_id="0001")
        sql = upgrade_sql(url, script_location=migrations)
        assert "CREATE TABLE items" in sql
        assert expected in sql
        assert "WHERE deleted_at IS NULL" in sql


class TestScaffold:
    def test_init_writes_the_template(self, tmp_path: Path) -> None:
        """init() writes alembic.ini, an env.py using run_migrations, the script template."""
        location = init(tmp_path / "m")
        assert sorted(p.name for p in location.iterdir()) == [
            "alembic.ini",
            "env.py",
            "script.py.mako",
            "versions",
        ]
        assert "run_migrations(" in (location / "env.py").read_text()
        with pytest.raises(FileExistsError):
            init(location)

    @pytest.mark.parametrize(
        "argv",
        [
            [sys.executable, "-m", "underlay.migrations", "init"],
            [str(Path(sys.executable).parent / "underlay"), "init-migrations"],
        ],
        ids=["python-m", "console-script"],
    )
    def test_command_line(self, tmp_path: Path, argv: list[str]) -> None:
        """Both command lines create the directory and say what to do next."""
        result = subprocess.run(
            [*argv, str(tmp_path / "m")], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stderr
        assert "revision --autogenerate" in result.stdout
        assert (tmp_path / "m" / "env.py").is_file()
        again = subprocess.run(
            [*argv, str(tmp_path / "m")], capture_output=True, text=True, check=False
        )
        assert again.returncode == 1
        assert "not empty" in again.stderr

    @pytest.mark.parametrize(
        ("module", "blocked", "extra"),
        [("underlay.migrations", "alembic", "alembic"), ("underlay.testing", "pytest", "testing")],
        ids=["migrations", "testing"],
    )
    def test_missing_dependency_names_the_extra(
        self, module: str, blocked: str, extra: str
    ) -> None:
        """Importing the subpackage without its dependency raises MissingDependencyError."""
        code = textwrap.dedent(f"""
            import sys
            sys.modules[{blocked!r}] = None
            from underlay import MissingDependencyError
            try:
                import {module}
            except MissingDependencyError as exc:
                print(exc.extra, exc)
        """)
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert result.stdout.startswith(f"{extra} ")
        assert f"underlay[{extra}]" in result.stdout
