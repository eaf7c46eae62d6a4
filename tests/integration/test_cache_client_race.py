"""A connection closed under a command: redis-py's leaked error fails open like any fault."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any, ClassVar

import pytest
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import Connection as RedisConnection

from tests.integration.test_cache import drop_prefix
from underlay._redis_client import client_race
from underlay.cache import RedisCache


class ClosedUnderCommand(RedisConnection):
    """A real connection whose next write finds it closed by another task.

    redis-py checks that a connection is open, then (with a socket timeout) writes from a
    task of its own; a disconnect in between leaves no writer, and redis-py's own code
    raises ``AttributeError`` instead of a ``ConnectionError``.
    """

    armed: ClassVar[int] = 0

    async def _send_packed_command(self, command: Iterable[bytes]) -> None:
        if type(self).armed:
            type(self).armed -= 1
            await self.disconnect()  # what the other task did
        await super()._send_packed_command(command)


def _pool(redis_url: str) -> ConnectionPool:
    # with a socket timeout redis-py writes from a task of its own: the race's window
    return ConnectionPool.from_url(
        redis_url, connection_class=ClosedUnderCommand, socket_timeout=5.0
    )


@pytest.fixture
async def cache(redis_url: str) -> AsyncIterator[RedisCache]:
    pool = _pool(redis_url)
    client = Redis(connection_pool=pool)  # a client given a pool leaves closing it to us
    built = RedisCache(client=client, prefix=f"underlay-test-{uuid.uuid4().hex}:", timeout=1.0)
    try:
        yield built
    finally:
        ClosedUnderCommand.armed = 0
        await drop_prefix(built)
        await built.aclose()
        await client.aclose()
        await pool.aclose()


async def test_redis_py_leaks_the_race_as_attribute_error(redis_url: str) -> None:
    """The premise: the race surfaces from redis-py as an AttributeError, recognised."""
    pool = _pool(redis_url)
    connection = await pool.get_connection()
    try:
        ClosedUnderCommand.armed = 1
        with pytest.raises(AttributeError) as raised:
            await connection.send_packed_command(
                connection.pack_command("PING"), check_health=False
            )
        assert client_race(raised.value)
    finally:
        ClosedUnderCommand.armed = 0
        await pool.release(connection)
        await pool.aclose()


async def test_a_write_on_a_closed_connection_fails_open(cache: RedisCache) -> None:
    """The fill meets the race: the value is still returned, the fault counted."""

    async def load() -> str:
        return "value"

    assert await cache.get_or_set("warm", load) == "value"  # connections made, script loaded
    errors = cache.stats.errors
    ClosedUnderCommand.armed = 1
    assert await cache.get_or_set("k", load) == "value"
    assert ClosedUnderCommand.armed == 0
    assert cache.stats.errors == errors + 1
    assert await cache.get_or_set("k", load) == "value"  # the next call works again


def test_the_same_errors_raised_elsewhere_are_bugs() -> None:
    """An AttributeError or TypeError raised outside redis-py and asyncio is not a fault."""

    def broken() -> Any:
        return None.missing  # type: ignore[attr-defined]

    with pytest.raises(AttributeError) as raised:
        broken()
    assert not client_race(raised.value)
    assert not client_race(ValueError("not a race"))
