"""The pytest plugin: fixtures backed by a real database, isolated per test and per worker.

Enable it in your top-level ``conftest.py`` with ``pytest_plugins = ["underlay.testing"]``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pytest
import pytest_asyncio
from sqlalchemy import MetaData, pool, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError

from underlay._imports import require
from underlay.database import Database, DatabaseSession
from underlay.exceptions import UnderlayError
from underlay.models import Base

if TYPE_CHECKING:
    from underlay.cache import Cache

__all__ = [
    "pytest_addoption",
    "underlay_cache",
    "underlay_database_url",
    "underlay_db",
    "underlay_empty_database_url",
    "underlay_metadata",
    "underlay_migrations",
    "underlay_session",
]

#: Environment variables naming the servers (they win over the ini options).
DATABASE_URL_ENV = "UNDERLAY_TEST_DATABASE_URL"
REDIS_URL_ENV = "UNDERLAY_TEST_REDIS_URL"
#: Set either one and a missing database fails the run instead of skipping its tests.
REQUIRE_ENVS = ("CI", "UNDERLAY_REQUIRE_SERVICES")

_T = TypeVar("_T")


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the plugin's ini options."""
    parser.addini(
        "underlay_database_url",
        f"database for the underlay fixtures (the {DATABASE_URL_ENV} variable wins)",
        default="",
    )
    parser.addini(
        "underlay_migrations",
        "migrations directory to upgrade to head instead of creating underlay_metadata",
        default="",
    )
    parser.addini(
        "underlay_redis_url",
        f"Redis for the underlay_cache fixture (the {REDIS_URL_ENV} variable wins)",
        default="",
    )


def _run(coroutine: Coroutine[Any, Any, _T]) -> _T:
    # Session fixtures are synchronous so that they work whatever event loop scope the tests
    # use; their async work runs on a private loop in a thread, which is safe even when a
    # loop is running in the calling thread.
    result: list[_T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coroutine))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
            errors.append(exc)

    thread = threading.Thread(target=target, name="underlay-testing")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def _docker_available() -> bool:
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        probe = subprocess.run([docker, "info"], capture_output=True, timeout=10, check=False)  # noqa: S603 - fixed arguments
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def _configured(config: pytest.Config, env: str, ini: str) -> str | None:
    value = os.environ.get(env) or str(config.getini(ini) or "")
    return value or None


async def _admin(url: URL, statement: str) -> None:
    # Through Database, so a bare postgresql:// URL gets the async driver like everywhere else.
    database = Database(url, isolation_level="AUTOCOMMIT", poolclass=pool.NullPool)
    try:
        async with database.engine.connect() as conn:
            await conn.execute(text(statement))
    finally:
        await database.dispose()


def _create_database(server: URL, name: str) -> URL:
    try:
        _run(_admin(server, f'CREATE DATABASE "{name}"'))
    except (OSError, SQLAlchemyError, UnderlayError) as exc:
        shown = server.render_as_string(hide_password=True)
        pytest.fail(
            f"could not create the test database {name!r} on {shown}: {exc}\n"
            "The underlay plugin needs a reachable server and a user allowed to CREATE DATABASE.",
            pytrace=False,
        )
    return server.set(database=name)


def _drop_database(server: URL, name: str) -> None:
    # Connect to the server's own database: a database cannot be dropped from inside itself.
    _run(_admin(server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _private_name(base: URL, label: str) -> str:
    # PostgreSQL truncates names to 63 bytes: shorten the readable part, never the random one.
    readable = f"{base.database or 'underlay'}_{label}"[:54]
    return f"{readable}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def underlay_database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Yield the URL of a database private to this test session (and xdist worker).

    The server comes from ``UNDERLAY_TEST_DATABASE_URL`` (or the ``underlay_database_url``
    ini option), else from a PostgreSQL container when Docker runs. On PostgreSQL the
    fixture creates a database per worker next to the configured one and drops it at the
    end; on SQLite it uses a file per worker in pytest's temporary directory. Without a
    server the tests that need one are skipped, or fail when ``CI`` or
    ``UNDERLAY_REQUIRE_SERVICES`` is set.
    """
    configured = _configured(request.config, DATABASE_URL_ENV, "underlay_database_url")
    container: Any = None
    if configured is None:
        if not _docker_available():
            message = (
                f"no test database: set {DATABASE_URL_ENV} (e.g. "
                "postgresql+asyncpg://user@localhost/test or sqlite+aiosqlite:///test.db) "
                "or start Docker"
            )
            if any(os.environ.get(name) for name in REQUIRE_ENVS):
                pytest.fail(f"{message} (CI / UNDERLAY_REQUIRE_SERVICES is set)")
            pytest.skip(message)
        from testcontainers.postgres import PostgresContainer  # noqa: PLC0415 - optional

        container = PostgresContainer("postgres:16-alpine", driver="asyncpg").start()
        configured = container.get_connection_url()
    try:
        base = make_url(configured)
        backend = base.get_backend_name()
        if backend == "sqlite":
            name = Path(base.database or "").name
            if name in ("", ":memory:"):
                name = "underlay.db"
            path = tmp_path_factory.mktemp(f"underlay-{_worker()}") / name
            yield base.set(database=str(path)).render_as_string(hide_password=False)
        elif backend == "postgresql":
            name = _private_name(base, _worker())
            url = _create_database(base, name)
            try:
                yield url.render_as_string(hide_password=False)
            finally:
                _drop_database(base, name)
        else:
            yield base.render_as_string(hide_password=False)
    finally:
        if container is not None:
            container.stop()


@pytest.fixture
def underlay_empty_database_url(underlay_database_url: str, tmp_path: Path) -> Iterator[str]:
    """Yield the URL of a new, empty database on the same server, removed after the test.

    Use it for tests that build a schema themselves, such as the migrations stairway.
    """
    server = make_url(underlay_database_url)
    backend = server.get_backend_name()
    if backend == "sqlite":
        yield server.set(database=str(tmp_path / "empty.db")).render_as_string(hide_password=False)
        return
    if backend != "postgresql":
        pytest.skip(f"underlay_empty_database_url supports PostgreSQL and SQLite, not {backend}")
    name = _private_name(server, "empty")
    url = _create_database(server, name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        _drop_database(server, name)


@pytest.fixture(scope="session")
def underlay_metadata() -> MetaData:
    """Return the metadata whose tables ``underlay_db`` creates: ``underlay.Base.metadata``.

    Override this fixture in your ``conftest.py`` to use your own declarative base.
    """
    return Base.metadata


@pytest.fixture(scope="session")
def underlay_migrations(request: pytest.FixtureRequest) -> Path | None:
    """Return the migrations directory to upgrade to head, or ``None`` to create tables.

    Defaults to the ``underlay_migrations`` ini option, relative to the ini file. Override
    the fixture to compute it.
    """
    configured = str(request.config.getini("underlay_migrations") or "")
    if not configured:
        return None
    inipath = request.config.inipath
    root = inipath.parent if inipath is not None else request.config.rootpath
    return root / configured


@pytest.fixture(scope="session")
def underlay_db(
    underlay_database_url: str,
    underlay_metadata: MetaData,
    underlay_migrations: Path | None,
) -> Iterator[Database]:
    """Yield the :class:`~underlay.Database` of the test session; its schema is built once.

    The schema comes from running the migrations to head when ``underlay_migrations``
    names a directory, else from ``underlay_metadata``. Connections are not pooled, so the
    database works from every test's event loop whatever the loop scope.
    """
    database = Database(underlay_database_url, poolclass=pool.NullPool)
    if underlay_migrations is not None:
        from underlay.migrations import upgrade  # noqa: PLC0415 - needs the alembic extra

        _run(upgrade(database, "head", script_location=underlay_migrations))
    else:
        _run(database.create_all(underlay_metadata))
    try:
        yield database
    finally:
        _run(database.dispose())


@pytest_asyncio.fixture
async def underlay_session(underlay_db: Database) -> AsyncIterator[DatabaseSession]:
    """Yield a session inside a transaction that is rolled back after the test.

    SQLAlchemy's "join a session into an external transaction" recipe: the test's
    connection begins a transaction and sessions join it with
    ``join_transaction_mode="create_savepoint"``, so ``commit()`` in the code under test
    releases a savepoint and nothing persists. While the test runs, every session
    ``underlay_db`` hands out (``db.session()``, ``db.get_session``) joins the same
    transaction; use them one at a time, as they share one connection.
    """
    maker = underlay_db.sessionmaker
    async with underlay_db.engine.connect() as conn:
        transaction = await conn.begin()
        saved = dict(maker.kw)
        maker.configure(bind=conn, join_transaction_mode="create_savepoint")
        session = maker()
        try:
            yield session
        finally:
            maker.kw.clear()
            maker.kw.update(saved)
            await session.close()
            if transaction.is_active:
                await transaction.rollback()


@pytest_asyncio.fixture
async def underlay_cache(request: pytest.FixtureRequest) -> AsyncIterator[Cache]:
    """Yield a cache for one test: a namespaced ``RedisCache``, else a ``MemoryCache``.

    Redis is used when ``UNDERLAY_TEST_REDIS_URL`` (or the ``underlay_redis_url`` ini
    option) is set; the keys live under a prefix unique to the test and are deleted after
    it, so tests and xdist workers never see each other's entries.

    When the test also uses ``underlay_db``, the cache is that database's cache for the
    test, as in ``Database(url, cache=cache)``: every commit through its sessions
    invalidates what it changed, so an app tested with both fixtures behaves as deployed
    (a cached read after a write returns the new row). The per-test rollback of
    ``underlay_session`` is unchanged; invalidations of rolled-back writes are harmless.
    """
    # Imported on use: the cache layer (and redis) is only needed by tests that ask for it.
    from underlay.cache import MemoryCache, RedisCache  # noqa: PLC0415

    redis_url = _configured(request.config, REDIS_URL_ENV, "underlay_redis_url")
    if redis_url is None:
        async with MemoryCache() as memory:
            with _coupled(request, memory):
                yield memory
        return
    # Glob-safe characters only, so the clean-up below can match the prefix literally.
    prefix = f"underlay-test:{_worker()}:{uuid.uuid4().hex}:"
    async with RedisCache(redis_url, prefix=prefix) as redis_cache:
        with _coupled(request, redis_cache):
            yield redis_cache
    await _delete_prefixed(redis_url, prefix)


@contextmanager
def _coupled(request: pytest.FixtureRequest, cache: Cache) -> Iterator[None]:
    if "underlay_db" not in request.fixturenames:
        yield
        return
    database: Database = request.getfixturevalue("underlay_db")
    if database.cache is not None:  # the user's own underlay_db came with its cache
        yield
        return
    from underlay.cache._attach import attach  # noqa: PLC0415 - the cache layer is optional

    database.cache = cache
    detach = attach(database)
    try:
        yield
    finally:
        detach()
        database.cache = None


async def _delete_prefixed(url: str, prefix: str) -> None:
    # Every key the test's cache wrote, including namespace generations, which the cache's
    # own invalidate_pattern() deliberately keeps.
    redis_asyncio = require("redis.asyncio", extra="redis")
    client = redis_asyncio.Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*", count=500)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()
