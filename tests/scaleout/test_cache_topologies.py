"""RedisCache on a Redis Cluster and on a Sentinel-managed master (real engines)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from underlay.cache import RedisCache

pytestmark = pytest.mark.scaleout


@pytest.fixture(params=["cluster", "sentinel"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[RedisCache]:
    """A RedisCache with a private prefix on each topology; its keys are dropped after."""
    prefix = f"i11-{uuid.uuid4().hex[:12]}:"
    if request.param == "cluster":
        env = request.getfixturevalue("redis_cluster")
        nodes = env["SCALEOUT_CLUSTER_NODES"].split(",")
        built = RedisCache(cluster_nodes=nodes, prefix=prefix, timeout=2.0)
    else:
        env = request.getfixturevalue("redis_sentinel")
        sentinels = env["SCALEOUT_SENTINELS"].split(",")
        built = RedisCache(
            sentinels=sentinels,
            service_name=env["SCALEOUT_SENTINEL_SERVICE"],
            prefix=prefix,
            timeout=2.0,
        )
    try:
        yield built
    finally:
        await built.invalidate_pattern("*")
        await built.client.delete(f"{built.key_prefix}epoch")
        await built.aclose()


class Gate:
    """A loader that signals when it runs and waits until released."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self.read = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self) -> Any:
        self.read.set()
        await self.release.wait()
        return self.value


class TestBehaviour:
    async def test_set_get_delete(self, cache: RedisCache) -> None:
        """Plain values round-trip and deletes take effect."""
        await cache.set("a", {"n": 1})
        assert await cache.get("a") == {"n": 1}
        await cache.delete("a")
        assert await cache.get("a") is None

    async def test_hit_with_namespaces_and_bump(self, cache: RedisCache) -> None:
        """A hit naming its namespaces is served; a bump of one of them makes it a miss."""

        async def loader() -> int:
            return 1

        assert await cache.get_or_set("k", loader, namespaces=["a", "b"]) == 1
        assert await cache.get_or_set("k", loader, namespaces=["a", "b"]) == 1
        assert cache.stats.hits == 1
        await cache.bump_namespace("b")
        assert await cache.load("k", loader, namespaces=["a", "b"], fill=False) == 1
        assert cache.stats.hits == 1
        assert await cache.get("k") is None

    async def test_fill_after_bump_is_rejected(self, cache: RedisCache) -> None:
        """A value loaded before an invalidation is never stored after it."""
        gate = Gate("old")
        task = asyncio.create_task(cache.get_or_set("k", gate, namespaces=["ns"]))
        await gate.read.wait()
        await cache.bump_namespace("ns")
        gate.release.set()
        assert await task == "old"
        assert cache.stats.fill_rejected == 1
        assert await cache.get("k") is None

    async def test_load_many_one_mget(self, cache: RedisCache) -> None:
        """Batches fill, then hit, namespace by namespace."""
        entries = {f"k{i}": [f"r:{i}"] for i in range(20)}

        async def loader(keys: list[str]) -> dict[str, Any]:
            return {key: key.upper() for key in keys}

        assert await cache.load_many(entries, loader) == {k: k.upper() for k in entries}
        assert cache.stats.fills == 20
        assert await cache.load_many(entries, loader) == {k: k.upper() for k in entries}
        assert cache.stats.hits == 20
        await cache.bump_namespace("r:3")
        await cache.load_many(entries, loader)
        assert cache.stats.hits == 39

    async def test_pattern_and_epoch(self, cache: RedisCache) -> None:
        """invalidate_pattern removes by glob; an epoch bump drops every entry."""
        await cache.set_many({"user:1": 1, "user:2": 2, "post:1": 3})
        assert await cache.invalidate_pattern("user:*") == 2
        assert await cache.get_many(["user:1", "user:2", "post:1"]) == {"post:1": 3}
        await cache._bump((), epoch=True)
        assert await cache.get("post:1") is None

    async def test_every_key_shares_one_slot(self, cache: RedisCache) -> None:
        """On a cluster every key of the cache (entries, leases, counters) is in one slot."""
        if not cache.cluster:
            pytest.skip("slots are a cluster's")

        async def loader() -> int:
            return 1

        await cache.get_or_set("x", loader, namespaces=["n1", "n2"])
        await cache.set("y", 2, namespaces=["n3"])
        keyslot: Any = cache.client.keyslot  # type: ignore[attr-defined]  # RedisCluster
        names = [
            cache._entry("x"),
            cache._lease("x"),
            cache._epoch,
            *(cache._counter(n) for n in ("n1", "n2", "n3")),
        ]
        assert len({keyslot(name) for name in names}) == 1
        assert cache.key_prefix.startswith("{")
