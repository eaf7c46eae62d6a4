"""Find the services the integration tests need, or explain why they are skipped.

URLs come from ``UNDERLAY_TEST_DATABASE_URL`` / ``UNDERLAY_TEST_REDIS_URL`` with local
defaults. An unreachable service is replaced by a testcontainers one when Docker runs, else
the tests that need it are skipped, except when ``CI`` or ``UNDERLAY_REQUIRE_SERVICES`` is set:
then the run fails.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy.engine import make_url

DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def services_required() -> bool:
    return any(os.environ.get(name) for name in ("CI", "UNDERLAY_REQUIRE_SERVICES"))


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def _docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def unavailable(service: str, url: str) -> None:
    message = f"{service} is not reachable at {url} and Docker is not available to start one"
    if services_required():
        pytest.fail(f"{message} (CI / UNDERLAY_REQUIRE_SERVICES is set, so this fails the run)")
    pytest.skip(message)


@dataclass
class Service:
    url: str
    container: Any = None

    def stop(self) -> None:
        if self.container is not None:
            self.container.stop()


def find_postgres() -> Service:
    url = os.environ.get("UNDERLAY_TEST_DATABASE_URL", DEFAULT_DATABASE_URL)
    parsed = make_url(url)
    if _reachable(parsed.host or "127.0.0.1", parsed.port or 5432):
        return Service(url)
    if _docker_available():
        from testcontainers.postgres import PostgresContainer

        container = PostgresContainer("postgres:16-alpine", driver="asyncpg").start()
        return Service(container.get_connection_url(), container)
    unavailable("PostgreSQL", url)
    raise AssertionError("unreachable")


def find_redis() -> Service:
    url = os.environ.get("UNDERLAY_TEST_REDIS_URL", DEFAULT_REDIS_URL)
    parsed = make_url(url.replace("redis://", "redis+x://", 1))
    if _reachable(parsed.host or "127.0.0.1", parsed.port or 6379):
        return Service(url)
    if _docker_available():
        from testcontainers.redis import RedisContainer

        container = RedisContainer("redis:7-alpine").start()
        host = container.get_container_host_ip()
        return Service(f"redis://{host}:{container.get_exposed_port(6379)}/0", container)
    unavailable("Redis", url)
    raise AssertionError("unreachable")


async def _admin(url: str, sql: str) -> None:
    import asyncpg

    parsed = make_url(url)
    conn = await asyncpg.connect(
        user=parsed.username,
        password=parsed.password,
        host=parsed.host,
        port=parsed.port,
        database=parsed.database,
    )
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_database(url: str, name: str) -> str:
    """Create database ``name`` next to the one in ``url`` and return its URL."""
    asyncio.run(_admin(url, f'DROP DATABASE IF EXISTS "{name}"'))
    asyncio.run(_admin(url, f'CREATE DATABASE "{name}"'))
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str, name: str) -> None:
    asyncio.run(_admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
