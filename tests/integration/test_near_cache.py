"""The near cache: microsecond hits that never outlive an invalidation.

Two `RedisCache` instances on one prefix stand for two worker processes, each with its own
`NearCache` and its own `Database`; a real Redis carries the tracking announcements between
them. Races are forced with events, never sleeps.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncSession

from tests.conftest import Backend, reset_schema
from tests.integration.test_cache import drop_prefix
from tests.integration.test_cache_database import (
    CacheBase,
    Product,
    ProductOut,
    ProductRepository,
)
from underlay import Database
from underlay.cache import CachedRepository, NearCache, RedisCache

#: Bound on every wait for an announcement from Redis (a hang fails the test, never passes).
WAIT = 10.0


@pytest.fixture
def metadata() -> MetaData:
    return CacheBase.metadata


class Worker:
    """One "process": a RedisCache with a near cache, and a Database that invalidates it."""

    def __init__(self, cache: RedisCache, near: NearCache, db: Database) -> None:
        self.cache = cache
        self.near = near
        self.db = db

    async def read(self, id: int = 1) -> ProductOut | None:
        async with self.db.session() as session:
            return await self.cached(session).get(id)

    def cached(self, session: AsyncSession) -> CachedRepository[ProductOut]:
        return CachedRepository(ProductRepository(session), self.cache, schema=ProductOut)

    async def rename(self, name: str, id: int = 1) -> None:
        async with self.db.session() as session:
            await ProductRepository(session).update(id, {"name": name})

    def waiter(self, wanted: Callable[[str, tuple[str, ...]], bool]) -> asyncio.Event:
        """An event set when the near cache reports an event ``wanted`` accepts."""
        event = asyncio.Event()

        def listen(kind: str, keys: tuple[str, ...]) -> None:
            if wanted(kind, keys):
                event.set()

        self.near._listeners.append(listen)
        return event

    async def tracking(self) -> None:
        """Wait until the near cache's tracking connection is subscribed."""
        connected = self.waiter(lambda kind, _: kind == "connected")
        self.near._start()
        if not self.near.connected:
            await asyncio.wait_for(connected.wait(), WAIT)


def counter_moved(kind: str, keys: tuple[str, ...]) -> bool:
    """A namespace counter (or the epoch) was announced as changed."""
    return kind == "invalidated" and any(":g:" in key or key.endswith("epoch") for key in keys)


@pytest.fixture
async def workers(
    backend: Backend, metadata: MetaData, redis_url: str
) -> AsyncIterator[tuple[Worker, Worker]]:
    """Two workers sharing a database and a cache prefix, with one product in the table."""
    prefix = f"underlay-test-{uuid.uuid4().hex}:"
    built: list[Worker] = []
    for _ in range(2):
        near = NearCache(max_entries=100, ping_interval=0.2)
        cache = RedisCache(redis_url, prefix=prefix, timeout=1.0, near_cache=near)
        built.append(Worker(cache, near, Database(backend.url, pool_size=5, cache=cache)))
    first, second = built
    await reset_schema(first.db)
    await first.db.create_all(metadata)
    async with first.db.session() as session:
        session.add(Product(id=1, name="lamp", price=Decimal("10.50")))
    for worker in built:
        await worker.tracking()
    try:
        yield first, second
    finally:
        await drop_prefix(first.cache)
        for worker in built:
            await worker.db.dispose()
            await worker.cache.aclose()


async def near_hit(worker: Worker) -> ProductOut | None:
    """Read through the worker and insist that the near cache answered."""
    before = worker.near.hits
    found = await worker.read()
    assert worker.near.hits == before + 1
    return found


class TestHits:
    async def test_a_redis_hit_is_mirrored_and_then_served_in_process(
        self, workers: tuple[Worker, Worker]
    ) -> None:
        """The first read fills Redis, the second mirrors it, the third is a near hit."""
        worker, _ = workers
        assert (await worker.read()) is not None  # a miss: loaded from the database
        assert len(worker.near) == 0
        assert (await worker.read()) is not None  # a Redis hit, mirrored
        assert len(worker.near) == 1
        found = await near_hit(worker)
        assert found is not None
        assert found.name == "lamp"
        assert found.price == Decimal("10.50")

    async def test_a_returned_object_is_the_callers_own(
        self, workers: tuple[Worker, Worker]
    ) -> None:
        """Mutating what a near hit returned changes neither the next hit nor the cache."""
        worker, _ = workers
        filled = worker.waiter(
            lambda kind, keys: kind == "invalidated" and any(":d:e:" in k for k in keys)
        )
        await worker.read()  # filled
        await asyncio.wait_for(filled.wait(), WAIT)  # its announcement cannot drop the mirror
        await worker.read()  # mirrored
        first = await near_hit(worker)
        assert first is not None
        first.name = "changed"
        first.price = Decimal(0)
        second = await near_hit(worker)
        assert second is not None
        assert second is not first
        assert (second.name, second.price) == ("lamp", Decimal("10.50"))

        async def tags() -> dict[str, list[str]]:
            return {"tags": ["a"]}

        cache = worker.cache
        filled = worker.waiter(
            lambda kind, keys: kind == "invalidated" and any(k.endswith(":d:plain") for k in keys)
        )
        await cache.get_or_set("plain", tags, namespaces=["ns"])  # filled
        # The fill's own announcement is in: it cannot drop what is mirrored next.
        await asyncio.wait_for(filled.wait(), WAIT)
        await cache.get_or_set("plain", tags, namespaces=["ns"])  # a Redis hit, mirrored
        hits = worker.near.hits
        mine = await cache.get_or_set("plain", tags, namespaces=["ns"])
        mine["tags"].append("b")
        again = await cache.get_or_set("plain", tags, namespaces=["ns"])
        assert worker.near.hits == hits + 2
        assert again == {"tags": ["a"]}

    async def test_own_commit_is_never_served_stale(self, workers: tuple[Worker, Worker]) -> None:
        """After this process commits, its next read is the new row, announced or not."""
        worker, _ = workers
        await worker.read()
        await worker.read()
        await near_hit(worker)
        # Redis's announcements are withheld: only the commit path itself can drop the entry.
        worker.near._handle = lambda message: None  # type: ignore[method-assign]
        await worker.rename("desk")
        hits = worker.near.hits
        found = await worker.read()
        assert found is not None
        assert found.name == "desk"
        assert worker.near.hits == hits

    async def test_an_entry_past_its_ttl_is_not_served(
        self, workers: tuple[Worker, Worker]
    ) -> None:
        """A mirrored entry older than the near cache's ttl goes back to Redis."""
        worker, _ = workers
        await worker.read()
        await worker.read()
        for mirrored in worker.near._entries.values():
            mirrored.expires = time.monotonic() - 1
        hits = worker.near.hits
        assert (await worker.read()) is not None
        assert worker.near.hits == hits

    async def test_get_many_serves_near_hits_and_reads_the_rest_from_redis(
        self, workers: tuple[Worker, Worker]
    ) -> None:
        """get_many answers mirrored ids in process and reads only the others from Redis."""
        worker, other = workers
        async with worker.db.session() as session:
            session.add(Product(id=2, name="desk", price=Decimal(1)))
        for _ in range(2):  # fill Redis, then mirror both entries
            async with worker.db.session() as session:
                assert sorted(await worker.cached(session).get_many([1, 2])) == [1, 2]
        assert len(worker.near) == 2
        announced = worker.waiter(counter_moved)
        await other.rename("chair", id=2)
        await asyncio.wait_for(announced.wait(), WAIT)
        hits = worker.near.hits
        async with worker.db.session() as session:
            found = await worker.cached(session).get_many([1, 2])
        assert worker.near.hits == hits + 1  # id 1 only
        assert found[1].name == "lamp"
        assert found[2].name == "chair"


class TestOtherProcesses:
    async def test_another_workers_commit_stops_the_old_value_once_announced(
        self, workers: tuple[Worker, Worker]
    ) -> None:
        """Worker B commits; once Redis's announcement reaches A, A reads the new row."""
        a, b = workers
        await a.read()
        await a.read()
        old = await near_hit(a)
        assert old is not None
        assert old.name == "lamp"
        announced = a.waiter(counter_moved)
        await b.rename("desk")
        await asyncio.wait_for(announced.wait(), WAIT)
        found = await a.read()
        assert found is not None
        assert found.name == "desk"

    async def test_invalidation_during_a_fill_wins(self, workers: tuple[Worker, Worker]) -> None:
        """An announcement between a near fill's read and its store: the fill is dropped."""
        a, b = workers
        await a.read()  # Redis holds the entry now; A's next read will mirror it
        read, release = asyncio.Event(), asyncio.Event()
        mget = a.cache.client.mget

        async def gated(*args: Any, **kwargs: Any) -> Any:
            values = await mget(*args, **kwargs)
            read.set()
            await release.wait()
            return values

        a.cache.client.mget = gated  # type: ignore[method-assign]  # the read, then a pause
        reader = asyncio.create_task(a.read())
        await asyncio.wait_for(read.wait(), WAIT)
        announced = a.waiter(counter_moved)
        await b.rename("desk")
        await asyncio.wait_for(announced.wait(), WAIT)
        release.set()
        first = await reader
        a.cache.client.mget = mget  # type: ignore[method-assign]
        assert first is not None
        assert first.name == "lamp"  # current when Redis answered
        assert len(a.near) == 0  # but not mirrored: the invalidation won
        hits = a.near.hits
        found = await a.read()
        assert found is not None
        assert found.name == "desk"
        assert a.near.hits == hits


class TestLostConnection:
    async def test_killing_the_tracking_connection_flushes_the_near_cache(
        self, workers: tuple[Worker, Worker]
    ) -> None:
        """CLIENT KILL of the tracking client drops every entry; reads go to Redis."""
        a, b = workers
        await a.read()
        await a.read()
        await near_hit(a)
        assert len(a.near) == 1
        lost = a.waiter(lambda kind, _: kind == "lost")
        # Reconnecting waits until the other worker has committed: its announcement is lost.
        resume = asyncio.Event()
        connect = a.near._connect
        assert connect is not None

        def gated_connection() -> Any:
            connection = connect()
            opened = connection.connect

            async def later() -> None:
                await resume.wait()
                await opened()

            connection.connect = later
            return connection

        a.near._connect = gated_connection
        client_id = a.near._client_id
        assert client_id is not None
        assert await b.cache.client.client_kill_filter(_id=str(client_id)) == 1
        await asyncio.wait_for(lost.wait(), WAIT)
        assert len(a.near) == 0
        assert not a.near.connected
        await b.rename("desk")
        hits = a.near.hits
        found = await a.read()
        assert found is not None
        assert found.name == "desk"
        assert a.near.hits == hits
        resume.set()
        # Tracking comes back by itself, and with it near hits.
        await a.tracking()
        await a.read()
        found = await near_hit(a)
        assert found is not None
        assert found.name == "desk"


class TestConfiguration:
    async def test_bounds_must_be_positive(self) -> None:
        """A zero entry bound, ttl or ping interval is refused."""
        for options in ({"max_entries": 0}, {"ttl": 0}, {"ping_interval": 0}):
            with pytest.raises(ValueError, match="positive"):
                NearCache(**options)

    async def test_a_near_cache_serves_one_redis_cache(self, redis_url: str) -> None:
        """The same NearCache given to a second RedisCache is refused."""
        near = NearCache()
        first = RedisCache(redis_url, prefix="underlay-test-near-a:", near_cache=near)
        try:
            with pytest.raises(ValueError, match="one RedisCache"):
                RedisCache(redis_url, prefix="underlay-test-near-b:", near_cache=near)
        finally:
            await first.aclose()

    async def test_refused_in_front_of_sentinel(self) -> None:
        """The docstring's promise: Sentinel (like a cluster) takes no near cache."""
        with pytest.raises(ValueError, match="Sentinel"):
            RedisCache(sentinels=[("127.0.0.1", 1)], service_name="absent", near_cache=NearCache())
