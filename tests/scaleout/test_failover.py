"""RedisCache across a failover: no stale read after a master dies mid-storm; durable invalidations.

These tests SIGKILL and SIGSTOP Redis nodes, so they run on the private failover set of
engines (`SCALEOUT_SET=failover`), one test at a time, and `scripts/scaleout.sh restore`
repairs the topology before and after each.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from pydantic import BaseModel
from redis.asyncio import Redis
from sqlalchemy import MetaData, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from tests.conftest import Backend, reset_schema
from underlay import ConflictError, Database, SQLAlchemyRepository
from underlay.cache import CachedRepository, RedisCache

pytestmark = [pytest.mark.scaleout, pytest.mark.slow]

ROWS = 20
WRITERS = 4
READERS = 4
# Bounds for polling topology state (promotion, recovery); never used to order a race.
TOPOLOGY_DEADLINE = 40.0


class FailoverBase(DeclarativeBase):
    metadata = MetaData()


class Item(FailoverBase):
    __tablename__ = "failover_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[int]


class ItemOut(BaseModel):
    id: int
    value: int


class ItemRepository(SQLAlchemyRepository[Item]):
    pass


@dataclass
class Node:
    host: str
    port: int

    def client(self) -> Redis:
        return Redis(host=self.host, port=self.port, socket_timeout=2, socket_connect_timeout=2)

    async def pid(self) -> int:
        async with self.client() as client:
            return int((await client.info("server"))["process_id"])

    async def cluster_nodes(self) -> str | None:
        """This node's view of the cluster (``CLUSTER NODES``), if it is up and sees it healthy."""
        try:
            async with self.client() as client:
                info = (await client.execute_command("CLUSTER", "INFO")).decode()
                nodes = (await client.execute_command("CLUSTER", "NODES")).decode()
        except Exception:  # a dead node: the caller asks the next one
            return None
        return nodes if "cluster_state:ok" in info else None

    async def role(self) -> str:
        try:
            async with self.client() as client:
                reply = await client.execute_command("ROLE")
        except (OSError, ConnectionError, Exception):  # a dead node has no role
            return "down"
        return bytes(reply[0]).decode()


class Topology:
    """How a test finds, kills and pauses the nodes behind one cache."""

    def cache(self, prefix: str, **options: Any) -> RedisCache:
        raise NotImplementedError

    async def master(self, cache: RedisCache) -> Node:
        """The master that holds the cache's keys."""
        raise NotImplementedError

    async def replica(self, cache: RedisCache) -> Node:
        """A replica of that master."""
        raise NotImplementedError

    async def promoted(self, cache: RedisCache, old: Node) -> bool:
        """Whether another node than ``old`` now serves the cache's keys as master."""
        raise NotImplementedError


class ClusterTopology(Topology):
    def __init__(self, env: dict[str, str]) -> None:
        self.nodes = [
            Node(host, int(port))
            for host, port in (n.rsplit(":", 1) for n in env["SCALEOUT_CLUSTER_NODES"].split(","))
        ]

    def cache(self, prefix: str, **options: Any) -> RedisCache:
        return RedisCache(
            cluster_nodes=[f"{n.host}:{n.port}" for n in self.nodes], prefix=prefix, **options
        )

    async def _owner(self, cache: RedisCache) -> tuple[str, Node, list[list[str]]] | None:
        slot = cache.client.keyslot(cache._epoch)  # type: ignore[attr-defined]  # RedisCluster
        for node in self.nodes:
            raw = await node.cluster_nodes()
            if raw is None:
                continue
            lines = [line.split() for line in raw.splitlines() if line.strip()]
            for parts in lines:
                flags = parts[2].split(",")
                if "master" not in flags or "fail" in flags or "fail?" in flags:
                    continue
                for span in parts[8:]:
                    low, _, high = span.partition("-")
                    if low.isdigit() and int(low) <= slot <= int(high or low):
                        host, port = parts[1].split("@")[0].rsplit(":", 1)
                        return parts[0], Node(host, int(port)), lines
        return None

    async def master(self, cache: RedisCache) -> Node:
        owner = await self._owner(cache)
        assert owner is not None, "the cluster is not healthy"
        return owner[1]

    async def replica(self, cache: RedisCache) -> Node:
        owner = await self._owner(cache)
        assert owner is not None, "the cluster is not healthy"
        for parts in owner[2]:
            if "slave" in parts[2].split(",") and parts[3] == owner[0]:
                host, port = parts[1].split("@")[0].rsplit(":", 1)
                return Node(host, int(port))
        raise AssertionError("the cache's master has no replica")

    async def promoted(self, cache: RedisCache, old: Node) -> bool:
        owner = await self._owner(cache)
        return owner is not None and owner[1] != old and await owner[1].role() == "master"


class SentinelTopology(Topology):
    def __init__(self, env: dict[str, str]) -> None:
        host, port = env["SCALEOUT_SENTINELS"].split(",")[0].rsplit(":", 1)
        self.sentinel = Node(host, int(port))
        self.sentinels = env["SCALEOUT_SENTINELS"].split(",")
        self.service = env["SCALEOUT_SENTINEL_SERVICE"]

    def cache(self, prefix: str, **options: Any) -> RedisCache:
        return RedisCache(
            sentinels=self.sentinels, service_name=self.service, prefix=prefix, **options
        )

    async def master(self, cache: RedisCache) -> Node:
        async with self.sentinel.client() as client:
            host, port = await client.execute_command(
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service
            )
        return Node(bytes(host).decode(), int(port))

    async def replica(self, cache: RedisCache) -> Node:
        async with (await self.master(cache)).client() as client:
            role = await client.execute_command("ROLE")
        host, port, _ = role[2][0]
        return Node(bytes(host).decode(), int(port))

    async def promoted(self, cache: RedisCache, old: Node) -> bool:
        try:
            new = await self.master(cache)
        except Exception:  # Sentinel busy with the failover
            return False
        return new != old and await new.role() == "master"


@pytest.fixture(params=["cluster", "sentinel"])
def topology(request: pytest.FixtureRequest) -> Topology:
    """The private failover cluster, then the private Sentinel set-up."""
    if request.param == "cluster":
        return ClusterTopology(request.getfixturevalue("failover_cluster"))
    return SentinelTopology(request.getfixturevalue("failover_sentinel"))


async def until(condition: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll topology state until ``condition`` holds, within `TOPOLOGY_DEADLINE`."""
    try:
        async with asyncio.timeout(TOPOLOGY_DEADLINE):
            while not await condition():
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"{what} did not happen within {TOPOLOGY_DEADLINE} s")


@contextlib.contextmanager
def stopped(pid: int) -> Iterator[None]:
    """SIGSTOP a node (it stops acknowledging replication) and always SIGCONT it after."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


@dataclass
class Worker:
    """One application process: its own engine pool and its own RedisCache."""

    db: Database
    cache: RedisCache

    async def cached(self, id: int) -> ItemOut | None:
        async with self.db.session() as session:
            return await CachedRepository(ItemRepository(session), self.cache, schema=ItemOut).get(
                id
            )

    async def write(self, id: int, value: int) -> None:
        async with self.db.session() as session:
            await ItemRepository(session).update(id, {"value": value})

    async def rows(self) -> dict[int, int]:
        async with self.db.session() as session:
            result = await session.execute(select(Item.id, Item.value))
            return {int(row[0]): int(row[1]) for row in result.all()}


@pytest.fixture
async def workers(backend: Backend, topology: Topology) -> AsyncIterator[list[Worker]]:
    """Two workers on one database, each with its own cache on the failover topology."""
    prefix = f"i14-{uuid.uuid4().hex[:10]}:"
    options: dict[str, Any] = {"timeout": 0.5, "cooldown": 0.5, "invalidation_timeout": 0.5}
    built = [
        Worker(Database(backend.url, pool_size=8, max_overflow=4, cache=cache), cache)
        for cache in (topology.cache(prefix, **options), topology.cache(prefix, **options))
    ]
    await reset_schema(built[0].db)
    await built[0].db.create_all(FailoverBase.metadata)
    async with built[0].db.session() as session:
        session.add_all(Item(id=id, value=0) for id in range(ROWS))
    try:
        yield built
    finally:
        for worker in built:
            await worker.db.dispose()
        with contextlib.suppress(Exception):
            await built[0].cache.invalidate_pattern("*")
            await built[0].cache.client.delete(built[0].cache._epoch)
        for worker in built:
            await worker.cache.aclose()


@dataclass
class Storm:
    """Concurrent commits and cached reads from both workers until told to stop."""

    workers: list[Worker]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    commits: int = 0
    reads: int = 0
    targets: list[tuple[int, asyncio.Event]] = field(default_factory=list)
    counter: int = 0

    def after(self, more: int) -> asyncio.Event:
        """An event set once ``more`` further commits have succeeded."""
        event = asyncio.Event()
        self.targets.append((self.commits + more, event))
        return event

    async def writer(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop.is_set():
            self.counter += 1
            try:
                await self.workers[seed % 2].write(rng.randrange(ROWS), self.counter)
            except ConflictError:  # SQLite: one writer at a time
                continue
            self.commits += 1
            for target, event in self.targets:
                if self.commits >= target:
                    event.set()

    async def reader(self, seed: int) -> None:
        rng = random.Random(seed)
        while not self.stop.is_set():
            await self.workers[seed % 2].cached(rng.randrange(ROWS))
            self.reads += 1

    async def run(self, during: Callable[[], Awaitable[None]]) -> None:
        tasks = [asyncio.create_task(self.writer(i)) for i in range(WRITERS)]
        tasks += [asyncio.create_task(self.reader(100 + i)) for i in range(READERS)]
        try:
            await during()
        finally:
            self.stop.set()
            await asyncio.gather(*tasks)


async def assert_no_stale_reads(workers: list[Worker], rounds: int) -> int:
    """Compare every cached read with the row, on both workers; return the hits seen."""
    hits = sum(worker.cache.stats.hits for worker in workers)
    checks = 0
    for round_ in range(rounds):
        # A write per round keeps invalidations flowing through the new master.
        writer = workers[round_ % 2]
        await writer.write(round_ % ROWS, -round_ - 1)
        rows = await workers[0].rows()
        for id, value in rows.items():
            for worker in workers:
                for _ in range(2):
                    read = await worker.cached(id)
                    assert read is not None
                    assert read.value == value, f"stale read of row {id} on a worker"
                    checks += 1
    assert checks >= rounds * ROWS * 4
    return sum(worker.cache.stats.hits for worker in workers) - hits


class TestFailover:
    async def test_master_killed_in_a_write_storm_then_no_stale_read(
        self, workers: list[Worker], topology: Topology
    ) -> None:
        """SIGKILL of the cache's master mid-storm: after the promotion every read is fresh."""
        storm = Storm(workers)
        cache = workers[0].cache

        async def during() -> None:
            await storm.after(40).wait()
            old = await topology.master(cache)
            os.kill(await old.pid(), signal.SIGKILL)
            await until(lambda: topology.promoted(cache, old), "the replica's promotion")
            # The storm goes on through the new master before it stops.
            await storm.after(40).wait()

        await storm.run(during)
        assert storm.reads > 0

        async def recovered() -> bool:
            # Each worker delivers the epoch bump it owes (for invalidations lost in the
            # failover) before it trusts the cache again.
            return all([await w.cache._recover(0.5) for w in workers])

        await until(recovered, "the owed epoch bumps")
        hits = await assert_no_stale_reads(workers, rounds=25)
        # The checks read through a working cache, not around a broken one.
        assert hits >= 25 * ROWS * 2

    async def test_unreplicated_invalidation_is_owed_as_an_epoch_bump(
        self, workers: list[Worker], topology: Topology
    ) -> None:
        """A replica that does not acknowledge (WAIT) an invalidation makes it count as lost."""
        worker = workers[0]
        cache = worker.cache
        assert cache.wait_replicas == 1
        assert await worker.cached(1) == ItemOut(id=1, value=0)
        assert await worker.cached(1) == ItemOut(id=1, value=0)
        assert cache.stats.hits == 1
        replica = await topology.replica(cache)
        with stopped(await replica.pid()):
            # The master applies the bump, the replica never acknowledges it: not delivered.
            await worker.write(1, 7)
            assert cache.stats.invalidations_lost == 1
            assert cache._lost
            # Until the owed bump lands, the cache is not trusted: reads go to the database.
            assert await worker.cached(1) == ItemOut(id=1, value=7)
            assert await worker.cached(2) == ItemOut(id=2, value=0)
            assert cache.stats.hits == 1
            assert cache.stats.skipped >= 2
        await until(lambda: cache._recover(0.5), "the epoch bump")
        assert await worker.cached(1) == ItemOut(id=1, value=7)
        assert await worker.cached(1) == ItemOut(id=1, value=7)
        assert cache.stats.hits == 2

    async def test_without_wait_the_same_invalidation_counts_as_delivered(
        self, topology: Topology
    ) -> None:
        """Control: with wait_replicas=0 the paused replica goes unnoticed (what WAIT guards)."""
        cache = topology.cache(f"i14-{uuid.uuid4().hex[:10]}:", timeout=0.5, wait_replicas=0)
        try:
            await cache.set("k", 1, namespaces=["n"])
            replica = await topology.replica(cache)
            with stopped(await replica.pid()):
                await cache.bump_namespace("n")
            assert cache.stats.invalidations_lost == 0
            assert not cache._lost
        finally:
            await cache.invalidate_pattern("*")
            await cache.aclose()

    async def test_master_without_replicas_has_nothing_to_wait_for(
        self, topology: Topology
    ) -> None:
        """With its replica gone (killed), invalidations are delivered: no replica to wait for."""
        cache = topology.cache(f"i14-{uuid.uuid4().hex[:10]}:", timeout=0.5)
        try:
            await cache.set("k", 1, namespaces=["n"])
            master = await topology.master(cache)
            replica = await topology.replica(cache)
            os.kill(await replica.pid(), signal.SIGKILL)

            async def detached() -> bool:
                async with master.client() as client:
                    return len((await client.execute_command("ROLE"))[2]) == 0

            await until(detached, "the replica's disconnection")
            for _ in range(2):
                await cache.bump_namespace("n")
            assert cache.stats.invalidations_lost == 0
            assert not cache._lost
            await cache.set("k", 2, namespaces=["n"])
            assert await cache.get("k") == 2
        finally:
            await cache.invalidate_pattern("*")
            await cache.aclose()
