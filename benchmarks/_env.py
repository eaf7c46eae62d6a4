"""Connections for one backend: raw driver, plain SQLAlchemy engine, underlay Database.

Settings come from the environment so the harness runs elsewhere too:

- ``UNDERLAY_BENCH_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/underlay_bench``;
  each run works in a database of its own named after this one plus the process id, created
  at the start and dropped at the end, so two runs on one server never drop each other's
  tables),
- ``UNDERLAY_BENCH_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``; the harness only touches
  keys under its own prefix and deletes them afterwards).
"""

from __future__ import annotations

import os
import platform
import shutil
import sqlite3
import subprocess
import tempfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from underlay import Database

from .models import TABLES, Base

_BASE_URL = make_url(
    os.environ.get(
        "UNDERLAY_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/underlay_bench"
    )
)
POSTGRES_URL = _BASE_URL.set(database=f"{_BASE_URL.database}_{os.getpid()}").render_as_string(
    hide_password=False
)
REDIS_URL = os.environ.get("UNDERLAY_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
KEY_PREFIX = f"underlay-bench:{os.getpid()}:"

# Every SQLite connection, whoever opens it, gets the PRAGMAs underlay's Database sets, so the
# comparison measures the layers and not a different durability setting.
SQLITE_PRAGMAS = ("PRAGMA journal_mode = WAL", "PRAGMA synchronous = NORMAL")


@dataclass
class Backend:
    """Everything the scenarios of one backend need, opened once and shared."""

    name: str  # "postgresql" | "sqlite"
    url: str  # SQLAlchemy async URL
    engine: AsyncEngine  # a plain engine with SQLAlchemy's defaults
    sessionmaker: async_sessionmaker[AsyncSession]
    db: Database  # underlay, with its defaults
    raw: Any  # asyncpg.Pool or an aiosqlite.Connection
    sqlite_path: Path | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return "pg" if self.name == "postgresql" else "sqlite"

    @property
    def is_postgres(self) -> bool:
        return self.name == "postgresql"

    @property
    def db_no_ping(self) -> Database:
        """A second underlay Database with ``pool_pre_ping=False``, made on first use."""
        if "db_no_ping" not in self.extras:
            self.extras["db_no_ping"] = Database(self.url, pool_pre_ping=False)
        return self.extras["db_no_ping"]

    async def close(self) -> None:
        if "db_no_ping" in self.extras:
            await self.extras["db_no_ping"].dispose()
        await self.db.dispose()
        await self.engine.dispose()
        await self.raw.close()
        for closer in self.extras.get("closers", []):
            await closer()
        if self.sqlite_path is not None:
            shutil.rmtree(self.sqlite_path.parent, ignore_errors=True)


async def _admin(statement: str) -> None:
    url = make_url(POSTGRES_URL)
    admin = await asyncpg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        database="postgres",
    )
    try:
        await admin.execute(statement)
    finally:
        await admin.close()


async def ensure_postgres_database() -> None:
    """Create this run's benchmark database (dropping a leftover of the same name)."""
    name = make_url(POSTGRES_URL).database
    await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await _admin(f'CREATE DATABASE "{name}"')


async def drop_postgres_database() -> None:
    """Drop this run's benchmark database."""
    await _admin(f'DROP DATABASE IF EXISTS "{make_url(POSTGRES_URL).database}" WITH (FORCE)')


async def open_backend(name: str) -> Backend:
    """Open the connections of one backend and (re)create the benchmark tables."""
    if name == "postgresql":
        url = make_url(POSTGRES_URL).set(drivername="postgresql+asyncpg")
        raw = await asyncpg.create_pool(
            host=url.host,
            port=url.port or 5432,
            user=url.username,
            password=url.password,
            database=url.database,
            min_size=1,
            max_size=5,
        )
        async_url = url.render_as_string(hide_password=False)
        sqlite_path = None
    else:
        import aiosqlite

        sqlite_path = Path(tempfile.mkdtemp(prefix="underlay-bench-")) / "bench.db"
        async_url = f"sqlite+aiosqlite:///{sqlite_path}"
        raw = await aiosqlite.connect(sqlite_path, isolation_level=None)
        for pragma in SQLITE_PRAGMAS:
            await raw.execute(pragma)
    engine = create_async_engine(async_url)
    if name == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    backend = Backend(
        name=name,
        url=async_url,
        engine=engine,
        sessionmaker=async_sessionmaker(engine, expire_on_commit=False),
        db=Database(async_url),
        raw=raw,
        sqlite_path=sqlite_path,
    )
    async with engine.begin() as conn:
        await conn.run_sync(Base.metadata.drop_all, tables=TABLES)
        await conn.run_sync(Base.metadata.create_all, tables=TABLES)
    return backend


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


async def machine_info(redis_client: Any | None) -> dict[str, Any]:
    """Describe the machine, the servers and the library versions of this run."""
    url = make_url(POSTGRES_URL)
    conn = await asyncpg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        password=url.password,
        database=url.database,
    )
    try:
        pg_version = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    redis_version = None
    if redis_client is not None:
        info = await redis_client.info("server")
        redis_version = info.get("redis_version")
    git = shutil.which("git")
    commit = None
    if git:
        proc = subprocess.run(  # noqa: ASYNC221 - instant, fixed arguments, before timing
            [git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        )
        commit = proc.stdout.strip() or None
    return {
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "postgresql": pg_version,
        "redis": redis_version,
        "sqlite": sqlite3.sqlite_version,
        "commit": commit,
        "libraries": {
            name: _version(name)
            for name in (
                "underlay",
                "sqlalchemy",
                "asyncpg",
                "aiosqlite",
                "advanced-alchemy",
                "redis",
                "hiredis",
                "orjson",
                "pydantic",
            )
        },
    }
