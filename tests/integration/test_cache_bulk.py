"""Bulk cache operations in chunks, each with its own deadline, against real Redis."""

from __future__ import annotations

import socket
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from tests.integration.test_cache_faults import RedisServer
from underlay.cache import RedisCache

pytestmark = pytest.mark.redis

PORTS = range(6400, 6405)


def _free_port() -> int:
    for port in PORTS:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORTS}")


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own (it gets paused, which must not touch others)."""
    server = RedisServer(tmp_path)
    server.port = _free_port()
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            server.process.terminate()
            server.process.wait(timeout=10)


@pytest.fixture
async def admin(private_redis: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    client = redis.asyncio.Redis.from_url(private_redis.url)
    try:
        yield client
    finally:
        await client.aclose()


class PausedChunkCache(RedisCache):
    """Pauses the server during one chosen round trip, and lifts the pause for the next."""

    def __init__(self, *args: Any, admin: redis.asyncio.Redis, pause_call: int, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.admin = admin
        self.pause_call = pause_call
        self.calls = 0

    async def _gate(self) -> None:
        self.calls += 1
        if self.calls == self.pause_call:
            await self.admin.execute_command("CLIENT", "PAUSE", 10_000, "WRITE")
        elif self.calls == self.pause_call + 1:
            await self.admin.execute_command("CLIENT", "UNPAUSE")

    async def _store(self, items: Sequence[tuple[str, bytes]], *args: Any) -> None:
        await self._gate()
        await super()._store(items, *args)

    async def _read(self, keys: Sequence[str]) -> Any:
        await self._gate()
        return await super()._read(keys)


def _items(count: int) -> dict[str, Any]:
    return {f"k{i}": {"n": i} for i in range(count)}


class TestSetMany:
    async def test_50000_keys_with_a_5ms_deadline(self, redis_url: str) -> None:
        """Everything not reported is stored; what is reported are whole chunks."""
        prefix = f"bulk-{uuid.uuid4().hex}:"
        items = _items(50_000)
        async with (
            RedisCache(redis_url, prefix=prefix, timeout=0.005, cooldown=0.05) as cache,
            RedisCache(redis_url, prefix=prefix, timeout=5.0) as reader,
        ):
            unstored = await cache.set_many(items)
            found = await reader.get_many(list(items))
            await reader.invalidate_pattern("*")
        assert isinstance(unstored, list)
        missing = set(items) - set(found)
        assert missing <= set(unstored)  # nothing lost silently
        assert all(found[key] == items[key] for key in found)
        size = cache.bulk_chunk_size
        chunk_of = {key: index // size for index, key in enumerate(items)}
        reported_chunks = {chunk_of[key] for key in unstored}
        assert len(unstored) == sum(
            min(size, len(items) - chunk * size) for chunk in reported_chunks
        )

    async def test_one_failed_chunk_costs_only_its_keys(
        self, private_redis: RedisServer, admin: redis.asyncio.Redis
    ) -> None:
        """A chunk past its deadline is reported; the chunks before and after are stored."""
        items = _items(2_000)
        async with (
            PausedChunkCache(
                private_redis.url, prefix="p:", timeout=1.0, admin=admin, pause_call=3
            ) as cache,
            RedisCache(private_redis.url, prefix="p:", timeout=5.0) as reader,
        ):
            await cache.set("warm-up", 1)  # connects and loads the script: call 1
            cache.bulk_chunk_size = 500
            unstored = await cache.set_many(items)  # calls 2-5, the second one paused
            found = await reader.get_many(list(items))
        assert unstored == [f"k{i}" for i in range(500, 1000)]
        assert set(items) - set(unstored) <= set(found)


class TestGetMany:
    async def test_one_failed_chunk_reads_as_misses(
        self, private_redis: RedisServer, admin: redis.asyncio.Redis
    ) -> None:
        """get_many returns every hit but those of the chunk that failed."""
        items = _items(1_500)
        async with (
            RedisCache(private_redis.url, prefix="g:", timeout=5.0) as writer,
            PausedChunkCache(
                private_redis.url, prefix="g:", timeout=1.0, admin=admin, pause_call=4
            ) as cache,
        ):
            assert await writer.set_many(items) == []
            await cache.get("warm-up")  # call 1
            cache.bulk_chunk_size = 500
            found = await cache.get_many(list(items))  # calls 2-4, the third one paused
        assert sorted(found, key=lambda k: int(k[1:])) == [f"k{i}" for i in range(1000)]
        assert cache.stats.misses == 1 + 500


class TestInvalidatePattern:
    async def test_walks_in_chunks(self, redis_url: str) -> None:
        """A pattern over many keys, walked in small chunks, removes exactly its entries."""
        prefix = f"bulk-{uuid.uuid4().hex}:"
        async with RedisCache(redis_url, prefix=prefix, timeout=5.0) as cache:
            cache.bulk_chunk_size = 100
            assert await cache.set_many({**_items(3_000), "other": 1}) == []
            assert await cache.invalidate_pattern("k*") == 3_000
            assert await cache.get("other") == 1
            assert await cache.get_many(["k0", "k2999"]) == {}
            await cache.invalidate_pattern("*")
