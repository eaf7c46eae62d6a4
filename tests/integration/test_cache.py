"""The behaviour every cache shares: one suite, run against MemoryCache and a real Redis."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest

from underlay.cache import Cache, MemoryCache, RedisCache
from underlay.cache._base import BaseCache


async def make_cache(kind: str, request: pytest.FixtureRequest, prefix: str) -> BaseCache:
    """Build a cache of ``kind``; Redis ones get a prefix of their own."""
    if kind == "memory":
        return MemoryCache()
    return RedisCache(request.getfixturevalue("redis_url"), prefix=prefix, timeout=1.0)


async def drop_prefix(cache: RedisCache) -> None:
    """Remove every key under the cache's prefix (never the whole shared server)."""
    keys = [key async for key in cache.client.scan_iter(match=f"{cache.prefix}*", count=1000)]
    if keys:
        await cache.client.unlink(*keys)


@pytest.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[BaseCache]:
    """A MemoryCache, then a RedisCache with a prefix private to the test."""
    built = await make_cache(request.param, request, f"underlay-test-{uuid.uuid4().hex}:")
    try:
        yield built
    finally:
        if isinstance(built, RedisCache):
            await drop_prefix(built)
        await built.aclose()


async def plant(cache: BaseCache, key: str, raw: bytes) -> None:
    """Store raw bytes under ``key`` behind the cache's back (a foreign or corrupt value)."""
    if isinstance(cache, RedisCache):
        await cache.client.set(f"{cache.prefix}d:{key}", raw)
    else:
        assert isinstance(cache, MemoryCache)
        cache._entries[key] = raw


class Gate:
    """A loader that reports when it has read and waits to be let go: forces interleavings."""

    def __init__(self, value: Any) -> None:
        self.value = value
        self.read = asyncio.Event()
        self.release = asyncio.Event()
        self.calls = 0

    async def __call__(self) -> Any:
        self.calls += 1
        value = self.value
        self.read.set()
        await self.release.wait()
        return value


class TestBasics:
    async def test_is_a_cache(self, cache: BaseCache) -> None:
        """Both implementations satisfy the Cache protocol."""
        assert isinstance(cache, Cache)

    async def test_round_trips_common_types_exactly(self, cache: BaseCache) -> None:
        """Datetimes, dates, UUIDs, decimals, tuples, bytes and nesting come back equal."""
        value = {
            "at": dt.datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=dt.UTC),
            "day": dt.date(2024, 5, 1),
            "id": uuid.UUID("12345678-1234-5678-1234-567812345678"),
            "price": Decimal("19.990"),
            "pair": (1, "two"),
            "blob": b"\x00\x80\xff",
            "nested": [{"$u": "not a tag"}, None, 1.5, True],
        }
        await cache.set("v", value)
        got = await cache.get("v")
        assert got == value
        assert type(got["price"]) is Decimal
        assert got["at"].tzinfo is not None

    async def test_miss_returns_default(self, cache: BaseCache) -> None:
        """An absent key reads as the default and counts as a miss."""
        assert await cache.get("absent", "fallback") == "fallback"
        assert cache.stats.misses == 1

    async def test_ttl_expires(self, cache: BaseCache) -> None:
        """An entry is gone once its TTL has passed."""
        await cache.set("short", 1, ttl=0.05)
        await asyncio.sleep(0.3)
        assert await cache.get("short") is None

    async def test_get_many_and_set_many(self, cache: BaseCache) -> None:
        """set_many stores several values; get_many returns only the hits."""
        await cache.set_many({"a": 1, "b": [2]})
        assert await cache.get_many(["a", "b", "c"]) == {"a": 1, "b": [2]}

    async def test_delete(self, cache: BaseCache) -> None:
        """A deleted key misses."""
        await cache.set_many({"a": 1, "b": 2})
        await cache.delete("a")
        assert await cache.get_many(["a", "b"]) == {"b": 2}

    async def test_bump_namespace_invalidates_members_only(self, cache: BaseCache) -> None:
        """Bumping a namespace drops its entries and no others."""
        await cache.set("in", 1, namespaces=["users"])
        await cache.set("both", 2, namespaces=["users", "posts"])
        await cache.set("out", 3, namespaces=["posts"])
        await cache.bump_namespace("users")
        assert await cache.get_many(["in", "both", "out"]) == {"out": 3}
        await cache.set("in", 4, namespaces=["users"])
        assert await cache.get("in") == 4

    async def test_invalidate_pattern(self, cache: BaseCache) -> None:
        """A glob pattern deletes the matching keys and reports how many."""
        await cache.set_many({"user:1": 1, "user:2": 2, "post:1": 3})
        assert await cache.invalidate_pattern("user:*") == 2
        assert await cache.get_many(["user:1", "user:2", "post:1"]) == {"post:1": 3}

    @pytest.mark.parametrize("namespace", ["", "a\nb"], ids=["empty", "newline"])
    async def test_rejects_bad_namespace(self, cache: BaseCache, namespace: str) -> None:
        """Namespaces are non-empty and single-line."""
        with pytest.raises(ValueError, match="namespace"):
            await cache.bump_namespace(namespace)


class TestGetOrSet:
    async def test_miss_then_hit(self, cache: BaseCache) -> None:
        """The first call loads and fills; the second is a hit with an equal value."""
        calls = 0

        async def loader() -> dict[str, Any]:
            nonlocal calls
            calls += 1
            return {"price": Decimal("1.50"), "tags": ("a",)}

        first = await cache.get_or_set("k", loader)
        second = await cache.get_or_set("k", loader)
        assert first == second == {"price": Decimal("1.50"), "tags": ("a",)}
        assert calls == 1
        assert (cache.stats.fills, cache.stats.hits) == (1, 1)

    async def test_hundred_concurrent_misses_load_once(self, cache: BaseCache) -> None:
        """100 concurrent misses on one key run the loader once and all get its value."""
        gate = Gate({"n": 1})
        tasks = [asyncio.create_task(cache.get_or_set("hot", gate)) for _ in range(100)]
        await gate.read.wait()
        gate.release.set()
        results = await asyncio.gather(*tasks)
        assert gate.calls == 1
        assert results == [{"n": 1}] * 100

    async def test_cancelled_loader_hands_over_to_a_waiter(self, cache: BaseCache) -> None:
        """If the caller running the loader is cancelled, a waiting caller loads instead."""
        first = Gate("first")
        leader = asyncio.create_task(cache.get_or_set("k", first))
        await first.read.wait()

        async def second() -> str:
            return "second"

        waiter = asyncio.create_task(cache.get_or_set("k", second))
        await asyncio.sleep(0)  # the waiter joins the leader's load
        leader.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leader
        assert await waiter == "second"
        assert await cache.get("k") == "second"

    async def test_waiters_get_their_own_copies(self, cache: BaseCache) -> None:
        """Callers sharing one load each get an independent value (mutations do not leak)."""
        gate = Gate({"items": [1]})
        tasks = [asyncio.create_task(cache.get_or_set("k", gate)) for _ in range(3)]
        await gate.read.wait()
        gate.release.set()
        first, second, third = await asyncio.gather(*tasks)
        first["items"].append(2)
        assert second == third == {"items": [1]}

    @pytest.mark.parametrize("invalidate", ["delete", "bump"], ids=["delete-key", "bump-namespace"])
    async def test_fill_after_invalidation_is_rejected(
        self, cache: BaseCache, invalidate: str
    ) -> None:
        """A value loaded before an invalidation is not stored after it."""
        gate = Gate("old")
        task = asyncio.create_task(cache.get_or_set("k", gate, namespaces=["ns"]))
        await gate.read.wait()
        if invalidate == "delete":
            await cache.delete("k")
        else:
            await cache.bump_namespace("ns")
        gate.release.set()
        assert await task == "old"  # the caller still gets what it loaded
        assert cache.stats.fill_rejected == 1
        assert await cache.get("k") is None

    async def test_pattern_invalidation_voids_fills_in_flight(self, cache: BaseCache) -> None:
        """A load in flight for a key matched by invalidate_pattern is not stored."""
        gate = Gate("old")
        task = asyncio.create_task(cache.get_or_set("user:1", gate))
        await gate.read.wait()
        await cache.invalidate_pattern("user:*")
        gate.release.set()
        assert await task == "old"
        assert await cache.get("user:1") is None

    async def test_caller_after_local_invalidation_does_not_join_old_load(
        self, cache: BaseCache
    ) -> None:
        """A caller arriving after this process invalidated the key starts a fresh load."""
        old = Gate("old")
        first = asyncio.create_task(cache.get_or_set("k", old))
        await old.read.wait()
        await cache.delete("k")

        async def fresh() -> str:
            return "new"

        assert await cache.get_or_set("k", fresh) == "new"
        old.release.set()
        assert await first == "old"
        assert await cache.get("k") == "new"

    async def test_loader_error_propagates_and_fills_nothing(self, cache: BaseCache) -> None:
        """A failing loader raises to every waiter and leaves the key free to fill."""

        async def broken() -> int:
            raise RuntimeError("database down")

        with pytest.raises(RuntimeError, match="database down"):
            await cache.get_or_set("k", broken)

        async def working() -> int:
            return 7

        assert await cache.get_or_set("k", working) == 7
        assert await cache.get("k") == 7

    async def test_no_fill_mode_reads_but_never_stores(self, cache: BaseCache) -> None:
        """load(fill=False) returns the loader's value without publishing it."""

        async def loader() -> int:
            return 1

        assert await cache.load("k", loader, fill=False) == 1
        assert await cache.get("k") is None
        await cache.set("k", 2)
        assert await cache.load("k", loader, fill=False) == 2


class TestLoadMany:
    async def test_hits_are_read_and_misses_loaded_in_one_call(self, cache: BaseCache) -> None:
        """Hits come from the cache; every miss is loaded by one loader call and stored."""
        await cache.set("a", 1)
        calls: list[list[str]] = []

        async def loader(keys: list[str]) -> dict[str, Any]:
            calls.append(keys)
            return {key: key.upper() for key in keys if key != "gone"}

        entries = {"a": [], "b": ["ns"], "gone": ["ns"]}
        assert await cache.load_many(entries, loader) == {"a": 1, "b": "B", "gone": None}
        assert calls == [["b", "gone"]]
        assert await cache.load_many(entries, loader) == {"a": 1, "b": "B", "gone": None}
        assert len(calls) == 1
        assert cache.stats.fills == 2

    async def test_fills_after_an_invalidation_are_rejected(self, cache: BaseCache) -> None:
        """A batch loaded before a namespace bump does not store its values after it."""
        loading = asyncio.Event()
        release = asyncio.Event()

        async def loader(keys: list[str]) -> dict[str, Any]:
            loading.set()
            await release.wait()
            return dict.fromkeys(keys, "old")

        task = asyncio.create_task(cache.load_many({"x": ["ns"], "y": ["other"]}, loader))
        await loading.wait()
        await cache.bump_namespace("ns")
        release.set()
        assert await task == {"x": "old", "y": "old"}
        assert await cache.get_many(["x", "y"]) == {"y": "old"}
        assert cache.stats.fill_rejected == 1

    async def test_no_fill_mode(self, cache: BaseCache) -> None:
        """load_many(fill=False) returns loaded values without storing them."""

        async def loader(keys: list[str]) -> dict[str, Any]:
            return dict.fromkeys(keys, 1)

        assert await cache.load_many({"k": []}, loader, fill=False) == {"k": 1}
        assert await cache.get("k") is None


class TestCorruption:
    @pytest.mark.parametrize(
        "raw",
        [b"\x80\x04\x95garbage-pickle", b"u1\nnot-an-epoch", b"plain text"],
        ids=["pickle", "truncated-header", "foreign"],
    )
    async def test_corrupt_entry_is_a_miss_and_removed(self, cache: BaseCache, raw: bytes) -> None:
        """A value the cache did not write reads as a miss, is counted and is removed."""
        await plant(cache, "k", raw)
        assert await cache.get("k") is None
        assert cache.stats.corrupt == 1

        async def loader() -> str:
            return "fresh"

        assert await cache.get_or_set("k", loader) == "fresh"
        assert await cache.get("k") == "fresh"
        assert cache.stats.corrupt == 1

    async def test_unencodable_value_raises_type_error(self, cache: BaseCache) -> None:
        """A value the codec cannot round-trip is refused up front."""
        with pytest.raises(TypeError, match="cannot cache"):
            await cache.set("k", object())


class TestRedisSpecifics:
    @pytest.fixture
    async def redis_cache(self, redis_url: str) -> AsyncIterator[RedisCache]:
        built = RedisCache(redis_url, prefix=f"underlay-test-{uuid.uuid4().hex}:", timeout=1.0)
        try:
            yield built
        finally:
            await drop_prefix(built)
            await built.aclose()

    async def test_nothing_stored_is_pickle(self, redis_cache: RedisCache) -> None:
        """Every entry is the underlay header followed by a JSON document."""
        await redis_cache.set("a", {"at": dt.datetime.now(dt.UTC), "n": Decimal(1)})

        async def loader() -> list[int]:
            return [1, 2]

        await redis_cache.get_or_set("b", loader, namespaces=["ns"])
        names = [k async for k in redis_cache.client.scan_iter(match=f"{redis_cache.prefix}d:*")]
        assert len(names) == 2
        for name in names:
            raw = await redis_cache.client.get(name)
            assert raw is not None
            assert not raw.startswith(b"\x80")
            header, count = raw.split(b"\n")[:3:2], int(raw.split(b"\n")[2])
            assert header[0] == b"u1"
            body = raw.split(b"\n", 3 + 2 * count)[-1]
            assert body[:1] in (b"{", b"[")

    async def test_ttls_are_jittered_downwards(self, redis_cache: RedisCache) -> None:
        """Entries stored together get TTLs spread within the jitter, never above the TTL."""
        for i in range(20):
            await redis_cache.set(f"j{i}", i, ttl=100)
        ttls = [await redis_cache.client.pttl(f"{redis_cache.prefix}d:j{i}") for i in range(20)]
        assert all(100_000 * (1 - redis_cache.ttl_jitter) - 1000 <= t <= 100_000 for t in ttls)
        assert len(set(ttls)) > 1

    async def test_generations_are_not_memoised_per_process(
        self, redis_cache: RedisCache, redis_url: str
    ) -> None:
        """A namespace bumped by another worker invalidates this worker's reads at once."""
        async with RedisCache(redis_url, prefix=redis_cache.prefix, timeout=1.0) as other:
            await redis_cache.set("list", [1], namespaces=["products"])
            assert await redis_cache.get("list") == [1]
            await other.bump_namespace("products")
            assert await redis_cache.get("list") is None

    async def test_lease_lets_one_process_fill(
        self, redis_cache: RedisCache, redis_url: str
    ) -> None:
        """While one worker holds the fill lease, another worker's load is not stored."""
        async with RedisCache(redis_url, prefix=redis_cache.prefix, timeout=1.0) as other:
            gate = Gate("first")
            holder = asyncio.create_task(redis_cache.get_or_set("k", gate))
            await gate.read.wait()

            async def second() -> str:
                return "second"

            assert await other.get_or_set("k", second) == "second"
            assert other.stats.fill_rejected == 1
            gate.release.set()
            assert await holder == "first"
            assert await other.get("k") == "first"

    async def test_counter_recreated_after_expiry_never_matches_old_entries(
        self, redis_cache: RedisCache
    ) -> None:
        """A namespace counter that vanished comes back at a value no old entry holds."""
        await redis_cache.set("k", 1, namespaces=["ns"])
        await redis_cache.client.delete(f"{redis_cache.prefix}g:ns")
        assert await redis_cache.get("k") is None
        await redis_cache.bump_namespace("ns")
        assert await redis_cache.get("k") is None


class TestMemorySpecifics:
    async def test_size_bound_evicts_least_recently_used(self) -> None:
        """Beyond max_entries the least recently used entry goes."""
        cache = MemoryCache(max_entries=2)
        await cache.set("a", 1)
        await cache.set("b", 2)
        assert await cache.get("a") == 1
        await cache.set("c", 3)
        assert await cache.get_many(["a", "b", "c"]) == {"a": 1, "c": 3}
        assert len(cache) == 2

    @pytest.mark.parametrize(
        ("options", "message"),
        [
            ({"max_entries": 0}, "max_entries"),
            ({"default_ttl": 0}, "default_ttl"),
            ({"ttl_jitter": 1.0}, "ttl_jitter"),
        ],
        ids=["entries", "ttl", "jitter"],
    )
    def test_rejects_bad_options(self, options: dict[str, Any], message: str) -> None:
        """Nonsensical settings fail at construction."""
        with pytest.raises(ValueError, match=message):
            MemoryCache(**options)
