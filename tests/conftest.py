"""Fixtures every test module shares: backends, databases and Redis."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, text

from tests import services
from underlay import Database


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--run-slow",
        action="store_true",
        default=bool(os.environ.get("UNDERLAY_RUN_SLOW")),
        help="also run tests marked slow (full-size stress variants; UNDERLAY_RUN_SLOW=1)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow: pass --run-slow (or set UNDERLAY_RUN_SLOW=1)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@dataclass(frozen=True)
class Backend:
    """A database backend the integration tests run against."""

    name: str
    url: str
    #: several connections write at the same time (row locks, not a database lock)
    concurrent_writers: bool

    @property
    def is_postgres(self) -> bool:
        return self.name == "postgresql"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database of this test session's own (per xdist worker), dropped at the end."""
    service = services.find_postgres()
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    name = f"underlay_test_{worker}_{uuid.uuid4().hex[:8]}"
    try:
        url = services.create_database(service.url, name)
        yield url
        services.drop_database(service.url, name)
    finally:
        service.stop()


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The URL of a reachable Redis server."""
    service = services.find_redis()
    try:
        yield service.url
    finally:
        service.stop()


@pytest.fixture(params=["postgresql", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    """Each integration test runs once per backend: PostgreSQL, then SQLite."""
    if request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
        return Backend("postgresql", url, concurrent_writers=True)
    return Backend(
        "sqlite", f"sqlite+aiosqlite:///{tmp_path / 'test.db'}", concurrent_writers=False
    )


@pytest.fixture
def metadata() -> MetaData:
    """The tables a test needs; modules override this fixture with their own models."""
    from tests.integration.models import ModelBase

    return ModelBase.metadata


@pytest.fixture
async def db(backend: Backend, metadata: MetaData) -> AsyncIterator[Database]:
    """A :class:`Database` on the backend with ``metadata``'s tables, empty for each test."""
    database = Database(backend.url, pool_size=5, max_overflow=5)
    await reset_schema(database)
    await database.create_all(metadata)
    try:
        yield database
    finally:
        await database.dispose()


async def reset_schema(database: Database) -> None:
    """Drop everything in the database (the PostgreSQL ``public`` schema; SQLite is a new file)."""
    if database.engine.dialect.name == "postgresql":
        async with database.engine.begin() as conn:
            await conn.execute(text("DROP SCHEMA public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Any]:
    """A redis-py client of the shared test server, closed afterwards."""
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
async def prefix(redis: Any, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """A Redis key prefix private to the test; its keys are removed afterwards."""
    module = request.node.module.__name__.rsplit(".", 1)[-1]
    name = f"underlay-{module}-{uuid.uuid4().hex}:"
    yield name
    keys = [key async for key in redis.scan_iter(match=f"{name}*")]
    if keys:
        await redis.delete(*keys)
