"""The ``underlay`` command line on PostgreSQL and SQLite: migrations and ``doctor``."""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import MetaData, inspect

from tests.conftest import Backend
from underlay import Database
from underlay.cli import main

# Nothing listens here (issue 15's port range): a Redis that is down, a database that is not.
DOWN_REDIS = "redis://127.0.0.1:8133/0"
DOWN_POSTGRES = "postgresql+asyncpg://postgres@127.0.0.1:8134/nothing"

MODELS = """
from sqlalchemy import ForeignKey, MetaData, String
from sqlalchemy.orm import Mapped, mapped_column
import underlay
from underlay.models import NAMING_CONVENTION


class Base(underlay.Base):
    __abstract__ = True
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Author(Base):
    __tablename__ = "cli_authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


class Book(Base):
    __tablename__ = "cli_books"
    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("cli_authors.id"){index})
{extra}
"""


class Project:
    """A throwaway application directory: models, pyproject.toml and migrations."""

    def __init__(self, root: Path, url: str) -> None:
        self.root = root
        self.url = url
        (root / "pyproject.toml").write_text(f'[tool.underlay]\ndatabase_url = "{url}"\n')
        self.module = ""

    def models(self, *, indexed: bool = False, extra: str = "") -> None:
        """Write a new models module and point env.py at it (modules are cached by name)."""
        self.module = f"cli_models_{uuid.uuid4().hex[:8]}"
        index = ", index=True" if indexed else ""
        source = MODELS.format(index=index, extra=textwrap.indent(extra, "    "))
        (self.root / f"{self.module}.py").write_text(source)
        env = self.root / "migrations" / "env.py"
        if env.exists():
            lines = [
                f"from {self.module} import Base"
                if line.startswith("from ") and " Base" in line
                else line
                for line in env.read_text().splitlines()
            ]
            env.write_text("\n".join(lines) + "\n")

    async def run(self, *argv: str) -> tuple[int, str]:
        """Run the command in a thread (it owns an event loop), as if from the project root."""
        out = io.StringIO()
        status = await asyncio.to_thread(main, list(argv), out=out)
        return status, out.getvalue()


@pytest.fixture
def metadata() -> MetaData:
    """The ``db`` fixture starts empty: the commands build the schema."""
    return MetaData()


@pytest.fixture
def project(tmp_path: Path, backend: Backend, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("UNDERLAY_DATABASE_URL", raising=False)
    monkeypatch.delenv("UNDERLAY_REDIS_URL", raising=False)
    created = Project(tmp_path, backend.url)
    yield created
    for name in [name for name in sys.modules if name.startswith("cli_models_")]:
        del sys.modules[name]


async def tables(db: Database) -> set[str]:
    async with db.engine.connect() as conn:
        return set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))


class TestMigrationCommands:
    async def test_the_whole_cycle(self, project: Project, db: Database) -> None:
        """init, upgrade, revision --autogenerate, check, history, stairway and downgrade."""
        status, out = await project.run("init")
        assert status == 0, out
        assert "underlay revision --autogenerate" in out
        project.models()
        assert (await project.run("upgrade"))[0] == 0

        status, out = await project.run("revision", "--autogenerate", "-m", "initial")
        assert status == 0
        assert "Detected added table 'cli_authors'" in out
        [script] = (project.root / "migrations" / "versions").glob("*_initial.py")
        assert f"Created {script}" in out

        status, out = await project.run("upgrade")
        assert status == 0
        assert "Running upgrade  -> " in out
        assert {"cli_authors", "cli_books", "alembic_version"} <= await tables(db)

        status, out = await project.run("check")
        assert status == 0
        assert "The models match the migrations." in out
        assert "warning: Foreign key cli_books(author_id) -> cli_authors has no index" in out
        status, _ = await project.run("check", "--require-fk-indexes")
        assert status == 1

        status, out = await project.run("history")
        assert status == 0
        assert "(head, current), initial" in out

        status, out = await project.run("stairway")
        assert status == 0
        assert "Stairway passed: 1 migration(s)" in out

        status, out = await project.run("downgrade", "base")
        assert status == 0
        assert "cli_books" not in await tables(db)
        status, out = await project.run("history")
        assert "(head), initial" in out
        assert "no migrations applied" in out

    async def test_check_fails_on_drift(
        self, project: Project, db: Database, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """A model change without a migration makes ``check`` exit 1 naming the change."""
        assert (await project.run("init"))[0] == 0
        project.models(indexed=True)
        assert (await project.run("revision", "--autogenerate", "-m", "initial"))[0] == 0
        assert (await project.run("upgrade"))[0] == 0
        assert (await project.run("check"))[0] == 0
        project.models(indexed=True, extra="summary: Mapped[str | None] = mapped_column(String(9))")
        capsys.readouterr()
        status, _ = await project.run("check")
        assert status == 1
        assert "Column cli_books.summary is in the models but not in the database" in (
            capsys.readouterr().err
        )

    async def test_upgrade_sql_prints_the_statements(self, project: Project, db: Database) -> None:
        """``upgrade --sql`` prints the DDL and leaves the database alone."""
        assert (await project.run("init"))[0] == 0
        project.models()
        assert (await project.run("revision", "-m", "empty"))[0] == 0
        status, out = await project.run("upgrade", "--sql")
        assert status == 0
        assert "alembic_version" in out
        assert "alembic_version" not in await tables(db)


class TestDoctor:
    async def test_healthy(
        self, project: Project, db: Database, redis_url: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Everything configured and reachable: no error, no warning, exit 0."""
        monkeypatch.setenv("UNDERLAY_REDIS_URL", redis_url)
        monkeypatch.setenv("UNDERLAY_CURSOR_SECRET", "a long and random value for the test")
        status, out = await project.run("doctor", "--strict")
        assert status == 0, out
        assert "0 error(s), 0 warning(s)" in out
        assert f"ok    database: {db.engine.dialect.name} " in out
        assert "ok    cache: Redis " in out
        assert "ok    foreign keys: every foreign key has an index" in out
        assert "info  pool: " in out

    async def test_redis_down_and_no_cursor_secret(
        self, project: Project, db: Database, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A Redis that does not answer is an error; a missing cursor secret a warning."""
        monkeypatch.setenv("UNDERLAY_REDIS_URL", DOWN_REDIS)
        monkeypatch.delenv("UNDERLAY_CURSOR_SECRET", raising=False)
        status, out = await project.run("doctor")
        assert status == 1
        assert f"error cache: Redis at {DOWN_REDIS} does not answer" in out
        assert "warn  cursor secret: UNDERLAY_CURSOR_SECRET is not set" in out
        assert "ok    database" in out

    async def test_unindexed_foreign_key(
        self, project: Project, db: Database, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A foreign key without an index is reported; ``--strict`` makes it fail."""
        monkeypatch.setenv("UNDERLAY_CURSOR_SECRET", "a long and random value for the test")
        project.models()
        module = __import__(project.module)
        await db.create_all(module.Base.metadata)
        status, out = await project.run("doctor")
        assert status == 0
        assert "warn  foreign keys: Foreign key cli_books(author_id) -> cli_authors" in out
        assert (await project.run("doctor", "--strict"))[0] == 1

    def test_wrong_url(self, project: Project, backend: Backend) -> None:
        """A database that cannot be reached is an error naming the cause, in one line."""
        wrong = (
            DOWN_POSTGRES
            if backend.is_postgres
            else f"sqlite+aiosqlite:///{project.root / 'missing' / 'dir' / 'x.db'}"
        )
        # As its own process: a failed aiosqlite connect leaves a worker thread that finishes
        # after the command's event loop has closed, which is harmless when the process exits.
        result = subprocess.run(
            [str(Path(sys.executable).parent / "underlay"), "--database-url", wrong, "doctor"],
            capture_output=True,
            text=True,
            cwd=project.root,
            check=False,
        )
        status, out = result.returncode, result.stdout
        assert status == 1
        [line] = [line for line in out.splitlines() if line.startswith("error database")]
        assert "cannot connect" in line

    async def test_pgbouncer_without_statement_cache_settings(self, project: Project) -> None:
        """A URL on PgBouncer's port without ``pgbouncer = true`` is warned about."""
        url = "postgresql+asyncpg://postgres@127.0.0.1:6432/app"
        _, out = await project.run("--database-url", url, "doctor")
        assert "warn  pgbouncer: port 6432 is PgBouncer's, but the statement caches are on" in out
        (project.root / "pyproject.toml").write_text(
            f'[tool.underlay]\ndatabase_url = "{url}"\npgbouncer = true\n'
        )
        _, out = await project.run("doctor")
        assert "ok    pgbouncer: statement caches are off" in out


class TestErrors:
    def test_missing_extra_is_one_line(self, tmp_path: Path) -> None:
        """Without Alembic, a migration command prints one line naming the extra, exit 2."""
        code = textwrap.dedent("""
            import sys
            sys.modules["alembic"] = None
            from underlay.cli import main
            sys.exit(main(["--database-url", "sqlite+aiosqlite:///x.db", "upgrade"]))
        """)
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, check=False
        )
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            "error: 'alembic' is not installed; install it with: pip install 'underlay[alembic]'"
        ]

    def test_no_url_configured(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A command that needs a database says in one line how to configure its URL."""
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("UNDERLAY_DATABASE_URL", raising=False)
        result = subprocess.run(
            [str(Path(sys.executable).parent / "underlay"), "upgrade"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 2
        [line] = result.stderr.strip().splitlines()
        assert line.startswith("error: no database URL: set UNDERLAY_DATABASE_URL")


def test_blog_readme_migration_commands_work_as_written(tmp_path: Path) -> None:
    """The blog README's migration commands, run literally in a fresh copy, all succeed."""
    blog = Path(__file__).resolve().parents[2] / "examples" / "blog"
    readme = (blog / "README.md").read_text()
    section = readme.split("## Migrate a database", 1)[1]
    script = section.split("```bash\n", 1)[1].split("```", 1)[0]
    copy = tmp_path / "blog"
    shutil.copytree(blog, copy, ignore=shutil.ignore_patterns("*.db", "__pycache__"))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("UNDERLAY_DATABASE_URL", None)
    result = subprocess.run(
        ["bash", "-e", "-c", script], cwd=copy, env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "The models match the migrations." in result.stdout
    assert len(list((copy / "migrations" / "versions").glob("*describe_the_change*.py"))) == 1
