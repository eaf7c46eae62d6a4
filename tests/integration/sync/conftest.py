"""Fixtures for the sync tests: a PostgreSQL server, SQLite clients on files, users.

The ``slow`` tests here (the deep state machine) run with ``--run-slow`` like every other
slow test of the suite.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.pool import NullPool

from tests.conftest import reset_schema
from tests.integration.sync.models import Project, SyncBase, Task
from underlay import Database
from underlay.sync import (
    InProcessTransport,
    SyncClient,
    SyncRegistry,
    SyncReport,
    SyncServer,
)
from underlay.sync.testing import FaultyTransport


@dataclass(frozen=True)
class User:
    id: int


ALICE = User(1)
BOB = User(2)


def make_registry(**task_options: Any) -> SyncRegistry:
    registry = SyncRegistry(schema_version=1)
    registry.register(Project, scope=lambda user: Project.owner_id == user.id)
    options: dict[str, Any] = {"scope": lambda user: Task.owner_id == user.id}
    options.update(task_options)
    registry.register(Task, **options)
    return registry


@pytest.fixture
def registry() -> SyncRegistry:
    """The registry of the test: server_wins unless a test makes its own."""
    return make_registry()


@pytest.fixture(scope="module")
def server_schema(postgres_url: str) -> str:
    """Create the synced tables and the sync objects once per module (other modules reset)."""

    async def create() -> None:
        database = Database(postgres_url, poolclass=NullPool)
        try:
            await reset_schema(database)
            await database.create_all(SyncBase.metadata)
            await SyncServer(database, make_registry()).install()
        finally:
            await database.dispose()

    asyncio.run(create())
    return postgres_url


@pytest.fixture
async def server_db(server_schema: str) -> AsyncIterator[Database]:
    """The server's PostgreSQL database, with the synced tables and nothing in them."""
    database = Database(server_schema, pool_size=5, max_overflow=5)
    async with database.engine.begin() as conn:
        await conn.execute(
            text(
                "TRUNCATE sync_task, sync_project, underlay_sync_clients,"
                " underlay_sync_mutation_results, underlay_sync_conflicts RESTART IDENTITY"
            )
        )
        await conn.execute(
            text("UPDATE underlay_sync_meta SET value = '0.0' WHERE key = 'gc_horizon'")
        )
    try:
        yield database
    finally:
        await database.dispose()


@pytest.fixture
async def server(server_db: Database, registry: SyncRegistry) -> SyncServer:
    """An installed `SyncServer`."""
    sync_server = SyncServer(server_db, registry)
    await sync_server.install()
    return sync_server


async def settle(database: Database, *, timeout: float = 60) -> None:
    """Wait until every transaction committed so far is below the pull horizon.

    The PostgreSQL server is shared: other sessions' open transactions hold the horizon
    (cluster-wide) for a while. A pull made before they finish would not return rows this
    test just committed; that is the design (a stall, never a loss), so tests wait for it.
    """
    async with asyncio.timeout(timeout), database.engine.connect() as conn:
        target = (
            await conn.execute(text("SELECT pg_snapshot_xmax(pg_current_snapshot())::text"))
        ).scalar_one()
        await conn.rollback()
        while True:
            passed = (
                await conn.execute(
                    text(
                        "SELECT pg_snapshot_xmin(pg_current_snapshot())"
                        " >= CAST(CAST(:x AS text) AS xid8)"
                    ),
                    {"x": target},
                )
            ).scalar_one()
            await conn.rollback()
            if passed:
                return
            await asyncio.sleep(0.02)  # polling a condition, not timing a race


@dataclass
class Client:
    """A SQLite client of the test: its database, sync client and faulty transport."""

    db: Database
    client: SyncClient
    transport: FaultyTransport
    path: Path
    server_db: Database

    async def sync(self) -> SyncReport:
        """Let the server's horizon pass everything committed so far, then sync."""
        await settle(self.server_db)
        return await self.client.sync()

    async def rows(self, model: type[Any] = Task) -> dict[Any, dict[str, Any]]:
        """Return the live local rows as {id: columns}."""
        return await live_rows(self.db, model)


ClientFactory = Callable[..., Awaitable[Client]]


@pytest.fixture
async def make_client(
    tmp_path: Path, server: SyncServer, registry: SyncRegistry
) -> AsyncIterator[ClientFactory]:
    """Make SQLite clients (one file each) syncing with `server`; disposed at the end."""
    made: list[Database] = []

    async def factory(
        name: str = "client", user: User = ALICE, *, registry_: SyncRegistry | None = None
    ) -> Client:
        path = tmp_path / f"{name}.db"
        database = Database(f"sqlite+aiosqlite:///{path}")
        made.append(database)
        await database.create_all(SyncBase.metadata)
        transport = FaultyTransport(InProcessTransport(server, user))
        client = SyncClient(database, registry_ or registry, transport=transport, backoff=0.001)
        await client.install()
        return Client(database, client, transport, path, server.database)

    yield factory
    for database in made:
        await database.dispose()


COMPARED = ("id", "owner_id", "project_id", "title", "done", "note")


async def live_rows(database: Database, model: type[Any] = Task) -> dict[Any, dict[str, Any]]:
    """Return the live rows of ``model`` as {id: compared columns}."""
    async with database.session() as session:
        rows = (await session.execute(select(model))).scalars().all()
        return {row.id: {c: getattr(row, c) for c in COMPARED if hasattr(row, c)} for row in rows}


async def server_rows(
    database: Database, user: User, model: type[Any] = Task
) -> dict[Any, dict[str, Any]]:
    """Return the live server rows of ``model`` in ``user``'s scope."""
    rows = await live_rows(database, model)
    return {k: v for k, v in rows.items() if v["owner_id"] == user.id}
