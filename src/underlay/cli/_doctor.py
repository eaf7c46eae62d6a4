"""``underlay doctor``: connect to what is configured and say what is wrong, one line each."""

from __future__ import annotations

import asyncio
import os
import platform
from dataclasses import dataclass, field
from importlib import metadata
from typing import IO, Any

from sqlalchemy import text
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError

from underlay._version import __version__
from underlay.cli._settings import DATABASE_URL_ENV, REDIS_URL_ENV, Settings
from underlay.database import Database
from underlay.exceptions import MissingDependencyError
from underlay.repository import CURSOR_SECRET_ENV

__all__ = ["doctor"]

_OPTIONAL = ("asyncpg", "aiosqlite", "aiomysql", "redis", "alembic")
_PGBOUNCER_PORT = 6432
_CONNECT_TIMEOUT = 10.0


@dataclass
class _Report:
    out: IO[str]
    errors: int = 0
    warnings: int = 0
    lines: list[str] = field(default_factory=list)

    def line(self, status: str, topic: str, message: str) -> None:
        if status == "error":
            self.errors += 1
        elif status == "warn":
            self.warnings += 1
        print(f"{status:<5} {topic}: {message}", file=self.out)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _versions(report: _Report) -> None:
    import sqlalchemy  # noqa: PLC0415 - its version only

    report.line(
        "info",
        "versions",
        f"underlay {__version__}, Python {platform.python_version()}, "
        f"SQLAlchemy {sqlalchemy.__version__}",
    )
    report.line("info", "extras", ", ".join(f"{name} {_version(name)}" for name in _OPTIONAL))


def _cursor_secret(report: _Report) -> None:
    if os.environ.get(CURSOR_SECRET_ENV):
        report.line("ok", "cursor secret", f"{CURSOR_SECRET_ENV} is set")
        return
    report.line(
        "warn",
        "cursor secret",
        f"{CURSOR_SECRET_ENV} is not set: each process signs pagination cursors with a random "
        "key of its own, so a cursor from one worker fails on another (set it, or call "
        "set_cursor_secret at start-up)",
    )


def _pgbouncer(report: _Report, url: URL, settings: Settings) -> None:
    if url.get_backend_name() != "postgresql":
        return
    behind = settings.pgbouncer or url.port == _PGBOUNCER_PORT
    if not behind:
        return
    caches_off = url.query.get("prepared_statement_cache_size") == "0"
    if settings.pgbouncer or caches_off:
        report.line("ok", "pgbouncer", "statement caches are off for PgBouncer")
        return
    report.line(
        "warn",
        "pgbouncer",
        f"port {_PGBOUNCER_PORT} is PgBouncer's, but the statement caches are on: in transaction "
        "mode prepared statements break; use Database(url, pgbouncer=True) and set "
        "pgbouncer = true in [tool.underlay]",
    )


def _pool(report: _Report, database: Database) -> None:
    pool = database.engine.pool
    details = [type(pool).__name__]
    size = getattr(pool, "size", None)
    timeout = getattr(pool, "timeout", None)
    if callable(size) and callable(timeout):
        details.append(f"size {size()}, wait up to {timeout()} s for a connection")
    report.line("info", "pool", ", ".join(details) + " (the Database defaults)")


def _unindexed(connection: Connection) -> list[str]:
    from underlay.migrations import unindexed_foreign_keys  # noqa: PLC0415 - alembic extra

    return [str(key) for key in unindexed_foreign_keys(connection)]


async def _database(report: _Report, settings: Settings) -> None:
    if not settings.database_url:
        report.line(
            "error",
            "database",
            f"no URL configured: set {DATABASE_URL_ENV} or database_url in [tool.underlay]",
        )
        return
    try:
        url = make_url(settings.database_url)
    except ArgumentError as exc:
        report.line("error", "database", f"the URL is not valid: {exc}")
        return
    shown = url.render_as_string(hide_password=True)
    report.line("info", "database", f"{shown} (from {settings.database_url_source})")
    _pgbouncer(report, url, settings)
    try:
        database = Database(url, pgbouncer=settings.pgbouncer)
    except MissingDependencyError as exc:
        report.line("error", "database", str(exc))
        return
    except (ArgumentError, ValueError) as exc:
        report.line("error", "database", f"the URL cannot be used: {exc}")
        return
    try:
        await _connected(report, database)
    finally:
        await database.dispose()


async def _connected(report: _Report, database: Database) -> None:
    try:
        async with asyncio.timeout(_CONNECT_TIMEOUT), database.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
            dialect = conn.dialect
            version = ".".join(str(part) for part in dialect.server_version_info or ())
            report.line("ok", "database", f"{dialect.name} {version} answers".replace("  ", " "))
            _pool(report, database)
            try:
                unindexed = await conn.run_sync(_unindexed)
            except MissingDependencyError as exc:
                report.line("info", "foreign keys", f"not checked: {exc}")
                return
    except (OSError, TimeoutError) as exc:
        report.line("error", "database", f"cannot connect: {_first_line(exc)}")
        return
    except Exception as exc:  # noqa: BLE001 - any driver failure is the diagnosis itself
        report.line("error", "database", f"cannot connect: {_first_line(exc)}")
        return
    if not unindexed:
        report.line("ok", "foreign keys", "every foreign key has an index")
    for key in unindexed:
        report.line("warn", "foreign keys", key)


def _first_line(exc: BaseException) -> str:
    message = str(exc).strip() or type(exc).__name__
    return message.splitlines()[0]


async def _redis(report: _Report, settings: Settings) -> None:
    if not settings.redis_url:
        report.line(
            "info",
            "cache",
            f"no Redis configured ({REDIS_URL_ENV} or redis_url in [tool.underlay])",
        )
        return
    try:
        from underlay.cache import RedisCache  # noqa: PLC0415 - the redis extra is optional

        cache = RedisCache(settings.redis_url)
    except MissingDependencyError as exc:
        report.line("error", "cache", str(exc))
        return
    try:
        import redis.asyncio  # noqa: PLC0415 - present once RedisCache constructed

        client: Any = redis.asyncio.Redis.from_url(
            settings.redis_url, socket_timeout=2, socket_connect_timeout=2
        )
        try:
            info = await client.info("server")
        finally:
            await client.aclose()
    except Exception as exc:  # noqa: BLE001 - any failure to reach Redis is the diagnosis
        report.line(
            "error",
            "cache",
            f"Redis at {settings.redis_url} does not answer: {_first_line(exc)} (the cache "
            "fails open, so every read goes to the database)",
        )
        return
    finally:
        await cache.aclose()
    report.line("ok", "cache", f"Redis {info.get('redis_version', '?')} at {settings.redis_url}")
    deadline = "none" if cache.timeout is None else f"{cache.timeout * 1000:g} ms"
    report.line(
        "info",
        "cache settings",
        f"prefix {cache.prefix!r}, default TTL {cache.default_ttl:g} s, "
        f"deadline {deadline} per operation (the RedisCache defaults)",
    )


async def doctor(settings: Settings, *, out: IO[str], strict: bool = False) -> int:
    """Print the diagnosis and return the exit status (1 on errors, or warnings if strict)."""
    report = _Report(out)
    _versions(report)
    await _database(report, settings)
    await _redis(report, settings)
    _cursor_secret(report)
    summary = f"{report.errors} error(s), {report.warnings} warning(s)"
    print(summary, file=out)
    failed = report.errors > 0 or (strict and report.warnings > 0)
    return 1 if failed else 0
