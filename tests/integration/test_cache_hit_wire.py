"""The hit path's MGET on the cache's own connections: one round trip, and as safe as before.

A timed-out or cancelled hit never leaves its reply for the next call, a restarted server
is reconnected to, more concurrent hits than connections fall back to the client's pool,
and clients the fast path does not fit keep the generic path.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import Connection as RedisConnection

from tests.integration.test_cache import drop_prefix
from tests.integration.test_cache_faults import RedisServer, redis_server  # noqa: F401 - fixture
from underlay.cache import RedisCache
from underlay.cache._wire import HitReader, pack_mget

#: Bound on every wait: a regression fails the test instead of hanging it.
WAIT = 10.0

# Caches that expect hits get a 1 s per-operation deadline (the fixture's): the production
# default of tens of milliseconds turns a hit on a loaded CI machine into a fail-open miss.

needs_redis_server = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="needs redis-server to start private servers"
)


class SignallingConnection(RedisConnection):
    """A real connection that counts what it sends and signals each ``MGET`` sent."""

    sent: ClassVar[int] = 0
    mget_sent: ClassVar[asyncio.Event | None] = None

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        await super().send_packed_command(command, check_health)
        type(self).sent += 1
        packed = command if isinstance(command, bytes) else b"".join(command)
        if b"MGET" in packed[:20] and type(self).mget_sent is not None:
            type(self).mget_sent.set()  # type: ignore[union-attr]


def signalling_client(url: str) -> Redis:
    return Redis.from_pool(ConnectionPool.from_url(url, connection_class=SignallingConnection))


async def never() -> Any:
    raise AssertionError("expected a hit")


@pytest.fixture
async def cache(redis_url: str) -> AsyncIterator[RedisCache]:
    """A cache on the shared server, whose client counts requests, on a private prefix."""
    client = signalling_client(redis_url)
    built = RedisCache(client=client, prefix=f"underlay-test-{uuid.uuid4().hex}:", timeout=1.0)
    try:
        yield built
    finally:
        await drop_prefix(built)
        await built.aclose()
        await client.aclose()


def test_packing_is_the_redis_protocol() -> None:
    """The packed MGET is what redis-py would send for the same keys."""
    keys = [b"a", b"\xff\x00binary", "ключ".encode()]
    assert pack_mget(keys) == b"".join(RedisConnection().pack_command("MGET", *keys))


class TestHitConnections:
    async def test_a_hit_is_one_request_on_a_connection_of_the_cache(
        self, cache: RedisCache
    ) -> None:
        """Hits go out on the cache's own connection, one request each, one connection."""
        assert await cache.get_or_set("k", lambda: asyncio.sleep(0, "v"), namespaces=["a", "b"])
        reader = cache._hit_reader
        assert reader is not None
        for _ in range(3):
            before = SignallingConnection.sent
            assert await cache.get_or_set("k", never, namespaces=["a", "b"]) == "v"
            assert SignallingConnection.sent - before == 1
        assert (len(reader._idle), reader._made) == (1, 1)
        assert cache.stats.hits == 3

    async def test_more_concurrent_hits_than_connections(self, cache: RedisCache) -> None:
        """Beyond the connection limit, hits take the client's pool; every answer is right."""
        values = {f"k{i}": i for i in range(40)}
        await cache.set_many(values, namespaces=["ns"])
        found = await asyncio.gather(
            *(cache.get_or_set(key, never, namespaces=["ns"]) for key in values)
        )
        assert found == list(values.values())
        reader = cache._hit_reader
        assert reader is not None
        assert 1 <= reader._made <= reader.limit
        assert cache.stats.hits == 40

    async def test_closing_the_cache_disconnects_them(self, cache: RedisCache) -> None:
        """aclose lets go of the hit connections."""
        await cache.set("k", 1, namespaces=["ns"])
        assert await cache.get_or_set("k", never, namespaces=["ns"]) == 1
        reader = cache._hit_reader
        assert reader is not None
        (connection,) = reader._idle
        assert connection.is_connected
        await cache.aclose()
        assert not connection.is_connected
        assert reader._idle == []

    async def test_a_client_that_decodes_replies(self, redis_url: str) -> None:
        """A caller's client with decode_responses=True: hits read bytes all the same."""
        client = Redis.from_url(redis_url, decode_responses=True)
        cache = RedisCache(client=client, prefix=f"underlay-test-{uuid.uuid4().hex}:", timeout=1.0)
        try:
            await cache.set("k", {"name": "ådå"}, namespaces=["ns"])
            assert await cache.get_or_set("k", never, namespaces=["ns"]) == {"name": "ådå"}
            assert cache._hit_reader is not None
            assert cache.stats.hits == 1
        finally:
            await drop_prefix(cache)
            await cache.aclose()
            await client.aclose()

    async def test_other_clients_keep_the_generic_path(self, redis_url: str) -> None:
        """A client of a class of its own gets no hit connections; hits still work."""

        class MyRedis(Redis):
            pass

        client = MyRedis.from_url(redis_url)
        cache = RedisCache(client=client, prefix=f"underlay-test-{uuid.uuid4().hex}:", timeout=1.0)
        try:
            assert cache._hit_reader is None
            assert HitReader.for_client(client, keep_timeout=False) is None
            await cache.set("k", 1, namespaces=["ns"])
            assert await cache.get_or_set("k", never, namespaces=["ns"]) == 1
        finally:
            await drop_prefix(cache)
            await cache.aclose()
            await client.aclose()


@needs_redis_server
class TestFaults:
    async def test_a_timed_out_hit_never_reads_the_late_reply(
        self,
        redis_server: RedisServer,  # noqa: F811 - the imported fixture
    ) -> None:
        """After a hit times out, the next hit gets its own reply, not the late one."""
        cache = RedisCache(redis_server.url, prefix="slow-hit:", timeout=0.05)
        blocker = Redis.from_url(redis_server.url)

        async def fallback() -> str:
            return "fallback"

        try:
            await cache.set_many({"first": "one", "second": "two"}, namespaces=["ns"])
            assert await cache.get_or_set("first", never, namespaces=["ns"]) == "one"
            assert cache._hit_reader is not None
            assert cache._hit_reader._made == 1  # the hit went out on the cache's connection
            stall = asyncio.create_task(blocker.execute_command("DEBUG", "SLEEP", "1"))
            while not stall.done():
                found = await cache.load("first", fallback, namespaces=["ns"], fill=False)
                if found == "fallback":
                    break  # timed out while the server was busy: a miss, read through
            else:
                pytest.fail("the server never stalled")
            await stall
            assert await cache.get_or_set("second", never, namespaces=["ns"]) == "two"
            assert cache.stats.errors == 1
        finally:
            await cache.aclose()
            await blocker.aclose()

    async def test_a_cancelled_hit_leaves_no_reply_behind(
        self,
        redis_server: RedisServer,  # noqa: F811 - the imported fixture
    ) -> None:
        """A hit cancelled while its MGET is out: the next hit reads its own reply."""
        client = signalling_client(redis_server.url)
        cache = RedisCache(client=client, prefix="cancelled-hit:", timeout=WAIT)
        admin = Redis.from_url(redis_server.url)
        try:
            await cache.set_many({"first": "one", "second": "two"}, namespaces=["ns"])
            assert await cache.get_or_set("first", never, namespaces=["ns"]) == "one"
            assert cache._hit_reader is not None
            assert cache._hit_reader._made == 1  # the hit went out on the cache's connection
            # Every command waits (up to half a second) from here: the MGET stays unanswered.
            await admin.execute_command("CLIENT", "PAUSE", "500", "ALL")
            SignallingConnection.mget_sent = sent = asyncio.Event()
            hit = asyncio.create_task(cache.get_or_set("first", never, namespaces=["ns"]))
            await asyncio.wait_for(sent.wait(), WAIT)
            hit.cancel()
            with pytest.raises(asyncio.CancelledError):
                await hit
            assert await cache.get_or_set("second", never, namespaces=["ns"]) == "two"
            assert cache.stats.errors == 0
        finally:
            SignallingConnection.mget_sent = None
            await admin.aclose()
            await cache.aclose()
            await client.aclose()

    async def test_hits_resume_after_a_restart(
        self,
        redis_server: RedisServer,  # noqa: F811 - the imported fixture
    ) -> None:
        """The hit connection a restart closed is reconnected; hits come back."""
        cache = RedisCache(redis_server.url, prefix="restart-hit:", cooldown=0.2, timeout=1.0)

        async def fallback() -> str:
            return "fallback"

        try:
            await cache.set("k", "one", namespaces=["ns"])
            assert await cache.get_or_set("k", never, namespaces=["ns"]) == "one"
            redis_server.stop()  # saved: the entry survives the restart
            redis_server.start()
            deadline = time.monotonic() + WAIT
            found = None
            while found != "one" and time.monotonic() < deadline:
                found = await cache.load("k", fallback, namespaces=["ns"], fill=False)
                if found != "one":
                    await asyncio.sleep(0.05)  # the breaker's cool-down, if it opened
            assert found == "one"
            assert cache.stats.hits == 2
        finally:
            await cache.aclose()
