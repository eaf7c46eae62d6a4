"""The underlay.testing pytest plugin, run on real users' suites with pytester."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

# Imported before any test: pytester restores sys.modules after each test, and importing a C
# extension (asyncpg, hiredis) a second time in one process crashes it.
import asyncpg  # noqa: F401
import pytest
import redis.asyncio
from sqlalchemy import text
from sqlalchemy.engine import make_url

from tests.conftest import Backend
from underlay import Database
from underlay.testing._plugin import _docker_available

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parents[2]

CONFTEST = """
pytest_plugins = ["underlay.testing"]

import models  # noqa: F401  (declares the tables on underlay.Base.metadata)
"""

MODELS = """
from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from underlay import Base, TimestampMixin


class Note(TimestampMixin, Base):
    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    body: Mapped[str] = mapped_column(String(100), unique=True)
"""

HELPERS = """
import json
import os
from pathlib import Path

from sqlalchemy import func, select

from models import Note


async def count(session):
    return await session.scalar(select(func.count()).select_from(Note))


def record(name, value):
    Path(os.environ["RECORD_DIR"], name).write_text(json.dumps(value))
"""

ISOLATION_TESTS = """
import pytest

from helpers import count
from models import Note
from underlay import DuplicateError
from underlay.testing import assert_max_queries


async def test_commit_is_visible_inside_the_test(underlay_session):
    underlay_session.add_all([Note(body="a"), Note(body="b")])
    await underlay_session.commit()
    assert await count(underlay_session) == 2


async def test_next_test_starts_empty(underlay_session):
    assert await count(underlay_session) == 0


async def test_failed_commit_rolls_back_to_the_last_commit(underlay_session):
    underlay_session.add(Note(body="kept"))
    await underlay_session.commit()
    underlay_session.add(Note(body="kept"))
    with pytest.raises(DuplicateError):
        await underlay_session.commit()
    await underlay_session.rollback()
    assert await count(underlay_session) == 1


async def test_database_sessions_join_the_test_transaction(underlay_db, underlay_session):
    async with underlay_db.session() as session:
        session.add(Note(body="through the database"))
    assert await count(underlay_session) == 1


async def test_database_alone_sees_nothing_left(underlay_db):
    async with underlay_db.session() as session:
        assert await count(session) == 0


async def test_savepoints_are_not_counted(underlay_session):
    async with assert_max_queries(1):
        underlay_session.add(Note(body="one insert"))
        await underlay_session.commit()
"""

XDIST_TESTS = """
import os

import pytest

from helpers import count, record
from models import Note


@pytest.mark.parametrize("n", range(8))
async def test_same_row_in_every_test(underlay_session, underlay_database_url, n):
    underlay_session.add(Note(body="same"))
    await underlay_session.commit()
    assert await count(underlay_session) == 1
    record(os.environ.get("PYTEST_XDIST_WORKER", "main"), underlay_database_url)
"""

INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = {loop_scope}
asyncio_default_test_loop_scope = {loop_scope}
filterwarnings = error
{extra}
"""


def make_suite(pytester: pytest.Pytester, *, loop_scope: str = "function", extra: str = "") -> None:
    pytester.makeini(INI.format(loop_scope=loop_scope, extra=extra))
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(models=MODELS, helpers=HELPERS)


@pytest.fixture
def record_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the user's tests write what they saw (read back by our assertions)."""
    directory = tmp_path / "records"
    directory.mkdir()
    monkeypatch.setenv("RECORD_DIR", str(directory))
    return directory


@pytest.fixture
def database_env(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> Backend:
    """Point the plugin at the backend's server and clear what could change its choices."""
    monkeypatch.setenv("UNDERLAY_TEST_DATABASE_URL", backend.url)
    for name in ("UNDERLAY_TEST_REDIS_URL", "PYTEST_XDIST_WORKER", "PYTEST_ADDOPTS"):
        monkeypatch.delenv(name, raising=False)
    return backend


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *args, timeout=300)


def read_records(directory: Path) -> dict[str, str]:
    return {path.name: json.loads(path.read_text()) for path in directory.iterdir()}


async def postgres_databases(backend: Backend) -> set[str]:
    async with Database(backend.url) as database, database.engine.connect() as conn:
        rows = await conn.execute(text("SELECT datname FROM pg_database"))
        return {name for (name,) in rows}


class TestIsolation:
    @pytest.mark.parametrize(
        "loop_scope", ["function", "session"], ids=["loop-per-test", "one-loop"]
    )
    def test_commits_leave_nothing_behind(
        self, pytester: pytest.Pytester, database_env: Backend, loop_scope: str
    ) -> None:
        """Commits inside underlay_session are rolled back after each test, in any loop scope."""
        make_suite(pytester, loop_scope=loop_scope)
        pytester.makepyfile(test_isolation=ISOLATION_TESTS)
        result = run(pytester)
        result.assert_outcomes(passed=6)

    def test_pytest_asyncio_defaults(
        self, pytester: pytest.Pytester, database_env: Backend
    ) -> None:
        """With no pytest-asyncio settings at all (strict mode), marked async tests work."""
        pytester.makeini("[pytest]\n")
        pytester.makeconftest(CONFTEST)
        pytester.makepyfile(models=MODELS, helpers=HELPERS)
        pytester.makepyfile(
            test_isolation="import pytest\n\npytestmark = pytest.mark.asyncio\n" + ISOLATION_TESTS
        )
        run(pytester).assert_outcomes(passed=6)


class TestXdist:
    async def test_workers_get_private_databases(
        self, pytester: pytest.Pytester, database_env: Backend, record_dir: Path
    ) -> None:
        """Two xdist workers each build and use their own database, dropped afterwards."""
        make_suite(pytester)
        pytester.makepyfile(test_xdist=XDIST_TESTS)
        result = run(pytester, "-p", "xdist", "-n", "2")
        result.assert_outcomes(passed=8)
        seen = await asyncio.to_thread(read_records, record_dir)
        assert sorted(seen) == ["gw0", "gw1"]
        assert seen["gw0"] != seen["gw1"]
        if database_env.is_postgres:
            names = {make_url(url).database for url in seen.values()}
            assert not names & await postgres_databases(database_env)


MIGRATION = """
import sqlalchemy as sa
from alembic import op

import underlay
import underlay.models

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "notes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("body", sa.String(length=100), nullable=False),
        sa.Column(
            "created_at",
            underlay.UTCDateTime(),
            server_default=underlay.models.utcnow(),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            underlay.UTCDateTime(),
            server_default=underlay.models.utcnow(),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name="pk_notes"),
        sa.UniqueConstraint("body", name="uq_notes_body"),
    )


def downgrade():
    op.drop_table("notes")
"""

MIGRATIONS_TESTS = """
from pathlib import Path

from sqlalchemy import text

from underlay.migrations import check, stairway

MIGRATIONS = Path(__file__).parent / "migrations"


async def test_schema_comes_from_the_migrations(underlay_session):
    version = await underlay_session.scalar(text("SELECT version_num FROM alembic_version"))
    assert version == "0001"


async def test_models_match_the_migrations(underlay_database_url):
    await check(underlay_database_url, script_location=MIGRATIONS)


async def test_stairway(underlay_empty_database_url):
    assert await stairway(underlay_empty_database_url, script_location=MIGRATIONS) == ["0001"]
"""


class TestMigrations:
    def test_schema_from_migrations_to_head(
        self, pytester: pytest.Pytester, database_env: Backend
    ) -> None:
        """With the underlay_migrations ini option the schema is the migrations' head."""
        from underlay.migrations import init

        make_suite(pytester, extra="underlay_migrations = migrations")
        location = init(pytester.path / "migrations")
        env = (location / "env.py").read_text()
        (location / "env.py").write_text(
            env.replace("from underlay import Base", "import models\nfrom underlay import Base")
        )
        (location / "versions" / "0001_notes.py").write_text(MIGRATION)
        pytester.makepyfile(test_migrations=MIGRATIONS_TESTS)
        result = run(pytester)
        result.assert_outcomes(passed=3)


class TestExample:
    def test_blog_suite_passes(self, database_env: Backend, tmp_path: Path) -> None:
        """examples/blog's own test suite, which uses only the plugin, passes on the backend."""
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                "--basetemp",
                str(tmp_path / "t"),
            ],
            cwd=ROOT / "examples" / "blog",
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert " passed" in result.stdout
        assert "skipped" not in result.stdout


NO_DATABASE_TESTS = """
async def test_needs_a_database(underlay_db):
    pass
"""


class TestNoDatabase:
    @pytest.fixture
    def no_services(self, monkeypatch: pytest.MonkeyPatch) -> None:
        if _docker_available():
            pytest.skip("Docker runs here: the plugin would start a PostgreSQL container")
        for name in (
            "UNDERLAY_TEST_DATABASE_URL",
            "CI",
            "UNDERLAY_REQUIRE_SERVICES",
            "PYTEST_XDIST_WORKER",
        ):
            monkeypatch.delenv(name, raising=False)

    def test_skips_with_a_reason(self, pytester: pytest.Pytester, no_services: None) -> None:
        """Without a database and without Docker the tests are skipped, saying what to set."""
        make_suite(pytester)
        pytester.makepyfile(test_plain=NO_DATABASE_TESTS)
        result = run(pytester, "-rs")
        result.assert_outcomes(skipped=1)
        result.stdout.fnmatch_lines(["*UNDERLAY_TEST_DATABASE_URL*"])

    def test_fails_when_services_are_required(
        self, pytester: pytest.Pytester, no_services: None, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With UNDERLAY_REQUIRE_SERVICES set, a missing database fails the run."""
        monkeypatch.setenv("UNDERLAY_REQUIRE_SERVICES", "1")
        make_suite(pytester)
        pytester.makepyfile(test_plain=NO_DATABASE_TESTS)
        result = run(pytester)
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines(["*UNDERLAY_REQUIRE_SERVICES is set*"])

    def test_unreachable_server_fails_clearly(
        self, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A configured server that refuses connections errors the tests, saying what to fix."""
        monkeypatch.setenv(
            "UNDERLAY_TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:1/test"
        )
        make_suite(pytester)
        pytester.makepyfile(test_plain=NO_DATABASE_TESTS)
        result = run(pytester)
        result.assert_outcomes(errors=1)
        result.stdout.fnmatch_lines(["*could not create the test database*127.0.0.1:1*"])


CACHE_TESTS = """
import os
from pathlib import Path


async def test_cache_round_trip(underlay_cache):
    await underlay_cache.set("greeting", {"hello": "world"})
    assert await underlay_cache.get("greeting") == {"hello": "world"}
    await underlay_cache.bump_namespace("posts")
    Path(os.environ["RECORD_DIR"], "cache").write_text(
        f"{type(underlay_cache).__name__} {getattr(underlay_cache, 'prefix', '')}"
    )


async def test_next_test_has_a_fresh_cache(underlay_cache):
    assert await underlay_cache.get("greeting") is None
"""


class TestCache:
    def test_memory_cache_without_redis(
        self, pytester: pytest.Pytester, record_dir: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Without a Redis URL each test gets its own MemoryCache."""
        monkeypatch.delenv("UNDERLAY_TEST_REDIS_URL", raising=False)
        make_suite(pytester)
        pytester.makepyfile(test_cache=CACHE_TESTS)
        run(pytester).assert_outcomes(passed=2)
        assert (record_dir / "cache").read_text().split()[0] == "MemoryCache"

    async def test_redis_cache_is_namespaced_and_cleaned(
        self,
        pytester: pytest.Pytester,
        record_dir: Path,
        redis_url: str,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """With a Redis URL each test gets a RedisCache under its own prefix, emptied after."""
        monkeypatch.setenv("UNDERLAY_TEST_REDIS_URL", redis_url)
        make_suite(pytester)
        pytester.makepyfile(test_cache=CACHE_TESTS)
        run(pytester).assert_outcomes(passed=2)
        kind, prefix = (record_dir / "cache").read_text().split()
        assert kind == "RedisCache"
        assert prefix.startswith("underlay-test:")
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            left = [key async for key in client.scan_iter(match=f"{prefix}*")]
        finally:
            await client.aclose()
        assert left == []


APP_TESTS = """
from typing import Annotated

import httpx
from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict
from sqlalchemy.ext.asyncio import AsyncSession

from helpers import count
from models import Note
from underlay import SQLAlchemyRepository
from underlay.cache import CachedRepository
from underlay.fastapi import install, session_dependency


class NoteOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: int
    body: str


class NoteIn(BaseModel):
    body: str


class Notes(SQLAlchemyRepository[Note]):
    pass


def create_app(db, cache):
    SessionDep = Annotated[AsyncSession, session_dependency(db)]
    app = FastAPI()
    install(app)

    @app.post("/notes", status_code=201)
    async def create(body: NoteIn, session: SessionDep) -> NoteOut:
        return await Notes(session).save(Note(body=body.body))

    @app.get("/notes/{id}")
    async def read(id: int, session: SessionDep) -> NoteOut:
        return await CachedRepository(Notes(session), cache, schema=NoteOut).get_one(id)

    @app.put("/notes/{id}")
    async def change(id: int, body: NoteIn, session: SessionDep) -> NoteOut:
        return await Notes(session).update(id, {"body": body.body})

    @app.delete("/notes/{id}", status_code=204)
    async def remove(id: int, session: SessionDep) -> None:
        await Notes(session).hard_delete(id)

    return app


async def test_cached_reads_follow_commits(underlay_db, underlay_cache, underlay_session):
    app = create_app(underlay_db, underlay_cache)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        id = (await client.post("/notes", json={"body": "first"})).json()["id"]
        assert (await client.get(f"/notes/{id}")).json()["body"] == "first"  # now cached
        assert (await client.put(f"/notes/{id}", json={"body": "second"})).status_code == 200
        assert (await client.get(f"/notes/{id}")).json()["body"] == "second"
        assert (await client.delete(f"/notes/{id}")).status_code == 204
        assert (await client.get(f"/notes/{id}")).status_code == 404


async def test_next_test_starts_empty(underlay_session):
    assert await count(underlay_session) == 0
"""


class TestAppWithCache:
    def test_app_sees_cached_reads_refreshed(
        self, pytester: pytest.Pytester, database_env: Backend
    ) -> None:
        """An app tested with only the plugin's fixtures sees commits invalidate its cache."""
        make_suite(pytester)
        pytester.makepyfile(test_app=APP_TESTS)
        run(pytester).assert_outcomes(passed=2)
