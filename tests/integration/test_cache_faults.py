"""Cache faults for real: Redis down, Redis hanging, Redis stopped during a write."""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import Connection as RedisConnection
from sqlalchemy import MetaData

from tests.conftest import Backend, reset_schema
from tests.integration.test_cache_database import (
    CacheBase,
    Product,
    ProductRepository,
    read,
)
from underlay import Database
from underlay.cache import RedisCache

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="needs redis-server to start private servers"
)

#: Generous bound for one call against a broken Redis (the default deadline is 50 ms).
BOUND = 1.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """A redis-server of the test's own on a loopback port, persisted to ``directory``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", str(self.directory),
                "--dbfilename", "dump.rdb",
                "--enable-debug-command", "local",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        """Shut down, saving the data set, as a restart from disk would find it."""
        if self.process is None:
            return
        subprocess.run(
            ["redis-cli", "-p", str(self.port), "shutdown", "save"],
            capture_output=True,
            timeout=10,
        )
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        if server.process is not None:
            server.process.terminate()
            server.process.wait(timeout=10)


@pytest.fixture
def hanging_url() -> Iterator[str]:
    """A server that accepts connections (the kernel completes them) and never answers."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        yield f"redis://127.0.0.1:{sock.getsockname()[1]}/0"


@pytest.fixture
def closed_url() -> str:
    """A loopback port nothing listens on."""
    return f"redis://127.0.0.1:{free_port()}/0"


@pytest.fixture
def metadata() -> MetaData:
    return CacheBase.metadata


async def seeded(backend: Backend, metadata: MetaData, cache: RedisCache) -> Database:
    database = Database(backend.url, cache=cache)
    await reset_schema(database)
    await database.create_all(metadata)
    async with Database(backend.url) as plain, plain.session() as session:
        session.add(Product(id=1, name="lamp", price=Decimal(1)))
    return database


async def timed_read(db: Database, cache: RedisCache) -> tuple[str | None, float]:
    started = time.monotonic()
    product = await read(db, cache)
    return (product.name if product else None), time.monotonic() - started


class TestUnreachable:
    @pytest.mark.parametrize("server", ["closed", "hanging"], ids=["port-closed", "hanging"])
    async def test_reads_fall_back_to_the_database_within_the_deadline(
        self, backend: Backend, metadata: MetaData, request: pytest.FixtureRequest, server: str
    ) -> None:
        """Every read returns database data, each bounded, and failures are counted."""
        url = request.getfixturevalue(f"{server}_url")
        cache = RedisCache(url, prefix="faults:", cooldown=60)
        db = await seeded(backend, metadata, cache)
        try:
            for _ in range(8):
                name, took = await timed_read(db, cache)
                assert name == "lamp"
                assert took < BOUND
            assert cache.stats.errors >= 1
            assert cache.stats.skipped >= 1  # the breaker opened and later calls skip Redis
            assert cache.stats.hits == 0
        finally:
            await db.dispose()
            await cache.aclose()

    @pytest.mark.parametrize("server", ["closed", "hanging"], ids=["port-closed", "hanging"])
    async def test_writes_commit_and_owe_an_epoch_bump(
        self, backend: Backend, metadata: MetaData, request: pytest.FixtureRequest, server: str
    ) -> None:
        """A commit whose invalidation cannot be delivered still commits, promptly."""
        url = request.getfixturevalue(f"{server}_url")
        cache = RedisCache(url, prefix="faults:", cooldown=60)
        db = await seeded(backend, metadata, cache)
        try:
            started = time.monotonic()
            async with db.session() as session:
                await ProductRepository(session).update(1, {"name": "new"})
            assert time.monotonic() - started < BOUND * 3  # three attempts, then given up
            assert cache.pending_invalidation
            assert cache.stats.invalidations_lost == 1
            async with Database(backend.url) as plain, plain.session() as session:
                assert (await ProductRepository(session).get_one(1)).name == "new"
        finally:
            await db.dispose()
            await cache.aclose()


class TestRestart:
    async def test_no_entry_from_before_the_outage_is_served(
        self, backend: Backend, metadata: MetaData, redis_server: RedisServer
    ) -> None:
        """Redis stopped during a write and restarted from disk serves nothing older."""
        prefix = f"restart-{uuid.uuid4().hex}:"
        cache = RedisCache(redis_server.url, prefix=prefix, cooldown=0.2)
        db = await seeded(backend, metadata, cache)
        other = RedisCache(redis_server.url, prefix=prefix, cooldown=0.2)
        try:
            await read(db, cache)
            assert (await timed_read(db, cache))[0] == "lamp"
            assert cache.stats.hits == 1

            redis_server.stop()  # persisted: the "lamp" entry survives the restart
            async with db.session() as session:
                await ProductRepository(session).update(1, {"name": "new"})
            assert cache.pending_invalidation
            redis_server.start()
            kept = [k async for k in other.client.scan_iter(match=f"{prefix}d:*")]
            assert kept, "the entry cached before the outage was restored from disk"

            # The writer's own reads bump the epoch before trusting Redis again.
            deadline = time.monotonic() + 10
            while cache.pending_invalidation and time.monotonic() < deadline:
                name, _ = await timed_read(db, cache)
                assert name == "new"
                await asyncio.sleep(0.05)
            assert not cache.pending_invalidation
            for reader in (cache, other):
                name, _ = await timed_read(db, reader)
                assert name == "new"
        finally:
            await db.dispose()
            await cache.aclose()
            await other.aclose()

    async def test_background_recovery_protects_other_workers(
        self, backend: Backend, metadata: MetaData, redis_server: RedisServer
    ) -> None:
        """Without further calls, the worker that lost invalidations bumps the epoch itself."""
        prefix = f"recover-{uuid.uuid4().hex}:"
        cache = RedisCache(redis_server.url, prefix=prefix, cooldown=0.2)
        db = await seeded(backend, metadata, cache)
        other = RedisCache(redis_server.url, prefix=prefix, cooldown=0.2)
        try:
            await read(db, cache)
            redis_server.stop()
            for name in ("first", "second"):  # the second is lost while one is already owed
                async with db.session() as session:
                    await ProductRepository(session).update(1, {"name": name})
                assert (await timed_read(db, cache))[0] == name  # database data, not Redis
            assert cache.stats.invalidations_lost == 2
            redis_server.start()
            deadline = time.monotonic() + 10
            while cache.pending_invalidation and time.monotonic() < deadline:
                await asyncio.sleep(0.05)  # no calls from this worker: the background retry
            assert not cache.pending_invalidation
            assert (await timed_read(db, other))[0] == "second"
        finally:
            await db.dispose()
            await cache.aclose()
            await other.aclose()

    async def test_breaker_closes_again_after_recovery(self, redis_server: RedisServer) -> None:
        """After an outage the breaker lets a probe through and the cache works again."""
        cache = RedisCache(redis_server.url, prefix="breaker:", cooldown=0.2, failure_threshold=2)
        try:
            await cache.set("k", 1)
            redis_server.stop()
            for _ in range(3):
                assert await cache.get("k") is None
            redis_server.start()
            deadline = time.monotonic() + 10
            value = None
            while value is None and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                value = await cache.get("k")
            assert value == 1
        finally:
            await cache.aclose()


class TestSlowServer:
    async def test_timed_out_reply_is_never_read_by_the_next_call(
        self, redis_server: RedisServer
    ) -> None:
        """After a read times out, the next read gets its own reply, not the late one."""
        cache = RedisCache(redis_server.url, prefix="slow:", timeout=0.05)
        blocker = Redis.from_url(redis_server.url)
        try:
            await cache.set_many({"first": "one", "second": "two"})
            assert await cache.get("first") == "one"  # the connection exists now
            stall = asyncio.create_task(blocker.execute_command("DEBUG", "SLEEP", "1"))
            while not stall.done():
                if await cache.get("first") is None:
                    break  # timed out while the server was busy: a miss
            else:
                pytest.fail("the server never stalled")
            await stall
            assert await cache.get("second") == "two"
            assert cache.stats.errors == 1
        finally:
            await cache.aclose()
            await blocker.aclose()


class CountingConnection(RedisConnection):
    """A real connection that counts the requests it sends (a pipeline counts once)."""

    sent = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        type(self).sent += 1
        await super().send_packed_command(command, check_health)


class TestRoundTrips:
    async def test_a_hit_is_one_round_trip(self, redis_server: RedisServer) -> None:
        """A cache hit, through get or get_or_set, is one request to Redis."""
        pool = ConnectionPool.from_url(redis_server.url, connection_class=CountingConnection)
        client = Redis.from_pool(pool)  # owns the pool: closing the client closes it
        cache = RedisCache(client=client, prefix="trips:")

        async def loader() -> int:
            return 1

        try:
            await cache.get_or_set("k", loader, namespaces=["a", "b"])
            await cache.get("k")  # connection set up, scripts loaded
            for call in (lambda: cache.get("k"), lambda: cache.get_or_set("k", loader)):
                before = CountingConnection.sent
                assert await call() == 1
                assert CountingConnection.sent - before == 1
        finally:
            await cache.aclose()
            await client.aclose()

    async def test_a_batch_is_one_round_trip_each_way(self, redis_server: RedisServer) -> None:
        """load_many: one request to look up, one to fill; scripts lost by Redis are reloaded."""
        pool = ConnectionPool.from_url(redis_server.url, connection_class=CountingConnection)
        client = Redis.from_pool(pool)
        cache = RedisCache(client=client, prefix="batch:")

        async def loader(keys: list[str]) -> dict[str, Any]:
            return {key: key for key in keys}

        entries = {f"k{i}": ["ns"] for i in range(5)}
        try:
            await client.ping()
            await client.script_flush()  # as after a restart: the next calls must reload
            assert await cache.load_many(entries, loader) == {key: key for key in entries}
            assert cache.stats.fills == 5
            before = CountingConnection.sent
            assert await cache.load_many(entries, loader) == {key: key for key in entries}
            assert CountingConnection.sent - before == 1
            assert cache.stats.hits == 5
        finally:
            await cache.aclose()
            await client.aclose()
