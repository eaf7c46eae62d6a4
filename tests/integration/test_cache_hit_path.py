"""The cheap hit path: shared deadlines, the fill decision taken on a miss, list keys by shape,
and a hit that looks up first (no flight, no lease; only a miss joins or starts a load)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import MetaData

from tests.integration.test_cache import Gate
from tests.integration.test_cache_database import (  # noqa: F401 - cache, cdb: fixtures
    CacheBase,
    Product,
    ProductOut,
    ProductRepository,
    cache,
    cached,
    cdb,
)
from underlay import Database
from underlay.cache import _repository
from underlay.cache._base import BaseCache
from underlay.cache._deadline import Deadlines


@pytest.fixture
def metadata() -> MetaData:
    return CacheBase.metadata


class TestDeadlines:
    async def test_an_operation_past_its_deadline_raises_timeout(self) -> None:
        """The operation is cancelled and TimeoutError raised; the task is not left cancelled."""
        deadlines = Deadlines(0.02)
        started = asyncio.Event()

        async def hang() -> None:
            started.set()
            await asyncio.Event().wait()

        with pytest.raises(TimeoutError):
            await deadlines.run(hang)
        assert started.is_set()
        task = asyncio.current_task()
        assert task is not None
        assert task.cancelling() == 0

    async def test_outer_cancellation_stays_a_cancellation(self) -> None:
        """Cancelling the caller is never turned into a TimeoutError."""
        deadlines = Deadlines(60)
        started = asyncio.Event()

        async def hang() -> None:
            started.set()
            await asyncio.Event().wait()

        task = asyncio.create_task(deadlines.run(hang))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    async def test_only_the_late_operations_are_cancelled(self) -> None:
        """Under one shared timer, quick operations finish and hung ones time out."""
        deadlines = Deadlines(0.05)
        release = asyncio.Event()

        async def quick() -> str:
            await release.wait()
            return "done"

        async def hang() -> str:
            await asyncio.Event().wait()
            return "never"

        hung = [asyncio.create_task(deadlines.run(hang)) for _ in range(3)]
        quick_ones = [asyncio.create_task(deadlines.run(quick)) for _ in range(20)]
        await asyncio.sleep(0)
        release.set()
        assert await asyncio.gather(*quick_ones) == ["done"] * 20
        for task in hung:
            with pytest.raises(TimeoutError):
                await task
        assert "in_flight=0" in repr(deadlines)

    async def test_a_failure_inside_is_raised_as_it_is(self) -> None:
        """Errors of the operation pass through untouched."""

        async def broken() -> None:
            raise ConnectionError("down")

        with pytest.raises(ConnectionError, match="down"):
            await Deadlines(1).run(broken)


class TestFillDecidedOnAMiss:
    async def test_a_hit_never_asks(self, cache: BaseCache) -> None:  # noqa: F811
        """The fill callable is called once on the miss, never on the hits."""
        asked = 0

        def may_fill() -> bool:
            nonlocal asked
            asked += 1
            return True

        async def loader() -> int:
            return 7

        assert await cache.load("k", loader, fill=may_fill) == 7
        assert asked == 1
        for _ in range(3):
            assert await cache.load("k", loader, fill=may_fill) == 7
        assert asked == 1
        assert cache.stats.hits == 3

    async def test_refused_fill_stores_nothing(self, cache: BaseCache) -> None:  # noqa: F811
        """A callable answering False on the miss reads through without publishing."""

        async def loader() -> int:
            return 1

        assert await cache.load("k", loader, fill=lambda: False) == 1
        assert await cache.get("k") is None

    async def test_a_leader_that_may_not_fill_hands_over_to_waiters(
        self,
        cache: BaseCache,  # noqa: F811 - the imported fixture
    ) -> None:
        """Waiters behind a caller that may not publish load (and fill) themselves."""
        old = Gate("snapshot value")
        leader = asyncio.create_task(cache.load("k", old, fill=lambda: False))
        await old.read.wait()  # the leader missed, decided not to fill and is loading

        async def fresh() -> str:
            return "fresh value"

        waiter = asyncio.create_task(cache.get_or_set("k", fresh))
        assert await waiter == "fresh value"
        old.release.set()
        assert await leader == "snapshot value"
        assert await cache.get("k") == "fresh value"

    async def test_a_fill_made_during_the_deciders_look_up_stands(
        self,
        cache: BaseCache,  # noqa: F811 - the imported fixture
    ) -> None:
        """A caller that missed, then decides not to fill, loads for itself and stores nothing.

        Another caller loads and fills between the first one's miss and its decision (a
        waiter can no longer join a flight before the decision: a hit takes no flight, and
        the flight starts and decides without an await in between).
        """
        looked_up = asyncio.Event()
        go_on = asyncio.Event()
        decided = asyncio.Event()

        async def fresh() -> str:
            return "fresh value"

        def may_fill() -> bool:
            decided.set()
            return False

        async def snapshot_loader() -> str:
            return "snapshot value"

        original = cache._lookup

        async def lookup(*args: Any) -> Any:
            found = await original(*args)
            looked_up.set()
            await go_on.wait()  # hold the first caller between its miss and its decision
            return found

        cache._lookup = lookup  # type: ignore[method-assign]
        first = asyncio.create_task(cache.load("k", snapshot_loader, fill=may_fill))
        await looked_up.wait()
        cache._lookup = original  # type: ignore[method-assign]
        assert await cache.get_or_set("k", fresh) == "fresh value"
        assert not decided.is_set()
        go_on.set()
        assert await first == "snapshot value"
        assert decided.is_set()
        assert await cache.get("k") == "fresh value"


class TestListKeysByShape:
    async def test_same_shape_compiles_once_and_values_keep_entries_apart(
        self,
        cdb: Database,  # noqa: F811 - the imported fixture
        cache: BaseCache,  # noqa: F811 - the imported fixture
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """Reads that differ only in bound values share one compiled shape, not entries."""
        async with cdb.session() as session:
            session.add(Product(id=2, name="desk", price=Decimal("99.00")))
        compiled: list[str] = []
        real = _repository.CachedRepository._tables

        def counting(self: Any, statement: Any) -> Any:
            compiled.append(str(statement))
            return real(self, statement)

        monkeypatch.setattr(_repository.CachedRepository, "_tables", counting)
        monkeypatch.setattr(_repository, "_LIST_SHAPES", {})

        async def names(limit: int, cheaper_than: str) -> list[str]:
            async with cdb.session() as session:
                found = await cached(session, cache).list_all(
                    Product.price < Decimal(cheaper_than), order_by="id", limit=limit
                )
                return [product.name for product in found]

        assert await names(5, "50") == ["lamp"]
        assert await names(5, "500") == ["lamp", "desk"]
        assert await names(1, "500") == ["lamp"]
        assert len(compiled) == 1  # one shape: compiled once
        hits = cache.stats.hits
        assert await names(5, "50") == ["lamp"]
        assert await names(5, "500") == ["lamp", "desk"]
        assert cache.stats.hits == hits + 2
        assert len(compiled) == 1

    async def test_a_different_shape_is_a_different_entry(
        self,
        cdb: Database,  # noqa: F811 - the imported fixture
        cache: BaseCache,  # noqa: F811 - the imported fixture
    ) -> None:
        """Another ORDER BY, another filter column or include_deleted are other entries."""
        async with cdb.session() as session:
            session.add(Product(id=2, name="desk", price=Decimal("99.00")))
        async with cdb.session() as session:
            repository = cached(session, cache)
            assert [p.name for p in await repository.list_all(order_by="id")] == ["lamp", "desk"]
            assert [p.name for p in await repository.list_all(order_by="-id")] == [
                "desk",
                "lamp",
            ]
            assert [p.name for p in await repository.list_all(order_by="name")] == [
                "desk",
                "lamp",
            ]
            assert [
                p.name for p in await repository.list_all(Product.name == "desk", order_by="id")
            ] == ["desk"]
        assert cache.stats.hits == 0

    async def test_list_entry_from_json_equals_the_loaded_one(
        self,
        cdb: Database,  # noqa: F811 - the imported fixture
        cache: BaseCache,  # noqa: F811 - the imported fixture
    ) -> None:
        """A list hit (validated from the stored JSON) equals the list loaded on the miss."""
        async with cdb.session() as session:
            first = await cached(session, cache).list_all(order_by="id")
        async with cdb.session() as session:
            second = await cached(session, cache).list_all(order_by="id")
        assert cache.stats.hits == 1
        assert first == second
        assert all(isinstance(item, ProductOut) for item in second)
        assert second[0].price == Decimal("10.50")


#: Bound on every wait in these tests: a regression fails them instead of hanging.
WAIT = 10.0


async def _never() -> Any:
    raise AssertionError("a hit must not load")


class HeldLookUps:
    """Holds the cache's plain look-ups (no lease) inside, after the store answered."""

    def __init__(self, store: BaseCache, *, times: int = 1) -> None:
        self.cache = store
        self.inside = asyncio.Event()
        self.go_on = asyncio.Event()
        self.left = times
        self._original = store._lookup

    async def _lookup(self, key: str, names: tuple[str, ...], token: str | None) -> Any:
        found = await self._original(key, names, token)
        if token is None and self.left > 0:
            self.left -= 1
            self.inside.set()
            await self.go_on.wait()
        return found

    def __enter__(self) -> HeldLookUps:
        self.cache._lookup = self._lookup  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        self.cache._lookup = self._original  # type: ignore[method-assign]


class TestHitFirst:
    @pytest.mark.parametrize("raw", [False, True], ids=["decoded", "raw"])
    async def test_a_hit_takes_no_flight(
        self,
        cache: BaseCache,  # noqa: F811 - the imported fixture
        raw: bool,
    ) -> None:
        """While a hit waits for the store, no flight exists for its key."""
        await cache.set("k", "v", namespaces=["ns"])
        with HeldLookUps(cache) as held:
            task = asyncio.create_task(cache.load("k", _never, namespaces=["ns"], raw=raw))
            # the hit's look-up answered; the caller is held there
            await asyncio.wait_for(held.inside.wait(), WAIT)
            assert "k" not in cache._flights
            held.go_on.set()
            found = await task
        assert found == (cache.codec.encode("v") if raw else "v")
        assert cache._flights == {}
        assert (cache.stats.hits, cache.stats.misses) == (1, 0)

    async def test_a_hit_does_not_wait_for_a_load_in_flight(
        self,
        cache: BaseCache,  # noqa: F811 - the imported fixture
    ) -> None:
        """A value stored while another caller loads the key is served without waiting."""
        gate = Gate("loaded")
        leader = asyncio.create_task(cache.get_or_set("k", gate, namespaces=["ns"]))
        # the leader missed, holds the flight and is loading
        await asyncio.wait_for(gate.read.wait(), WAIT)
        await cache.set("k", "stored", namespaces=["ns"])
        # A hit that joined the flight would wait for the held loader (and time out).
        assert await asyncio.wait_for(cache.get_or_set("k", _never, namespaces=["ns"]), WAIT) == (
            "stored"
        )
        assert not leader.done()
        gate.release.set()
        assert await leader == "loaded"
        assert await cache.get("k") == "stored"  # the set voided the leader's lease
        assert gate.calls == 1

    async def test_misses_arriving_during_a_load_still_share_it(
        self,
        cache: BaseCache,  # noqa: F811 - the imported fixture
    ) -> None:
        """Callers that miss while the leader loads wait for it: the loader runs once."""
        gate = Gate("loaded")
        leader = asyncio.create_task(cache.get_or_set("k", gate, namespaces=["ns"]))
        await asyncio.wait_for(gate.read.wait(), WAIT)
        with HeldLookUps(cache, times=5) as held:
            waiters = [
                asyncio.create_task(cache.get_or_set("k", gate, namespaces=["ns"]))
                for _ in range(5)
            ]
            while held.left:  # every waiter looked up (and missed)
                await asyncio.wait_for(held.inside.wait(), WAIT)
                held.inside.clear()
            held.go_on.set()
            gate.release.set()
            assert await asyncio.wait_for(asyncio.gather(leader, *waiters), WAIT) == ["loaded"] * 6
        assert gate.calls == 1
        assert (cache.stats.misses, cache.stats.fills) == (1, 1)

    async def test_an_invalidation_between_look_up_and_load_is_seen(
        self,
        cache: BaseCache,  # noqa: F811 - the imported fixture
    ) -> None:
        """A bump after a miss's look-up, before its lease: the load reads the new data."""
        source = {"value": "old"}

        async def loader() -> str:
            return source["value"]

        await cache.set("k", "old", namespaces=["ns"])
        await cache.bump_namespace("ns")  # stale now: the next read misses
        with HeldLookUps(cache) as held:
            reader = asyncio.create_task(cache.get_or_set("k", loader, namespaces=["ns"]))
            # the reader missed and is held before its lease
            await asyncio.wait_for(held.inside.wait(), WAIT)
            source["value"] = "new"
            await cache.bump_namespace("ns")
            held.go_on.set()
            assert await asyncio.wait_for(reader, WAIT) == "new"
        assert await cache.get_or_set("k", _never, namespaces=["ns"]) == "new"


class TestCachedGetHitFirst:
    async def test_a_get_hit_does_not_wait_for_a_load_in_flight(
        self,
        cdb: Database,  # noqa: F811 - the imported fixture
        cache: BaseCache,  # noqa: F811 - the imported fixture
    ) -> None:
        """CachedRepository.get serves a stored entry while a load of it is in flight."""
        async with cdb.session() as session:
            repository = cached(session, cache)
            key, names, _ = repository._entity_entry(1, (), False)
        gate = Gate({"id": 1, "name": "loading", "price": "1.00", "created_at": None})
        leader = asyncio.create_task(cache.load(key, gate, namespaces=names, raw=True))
        await asyncio.wait_for(gate.read.wait(), WAIT)  # a load of the entry is in flight and held
        stored = {"id": 1, "name": "stored", "price": "2.50", "created_at": "2024-05-01T12:00:00Z"}
        await cache.set(key, stored, namespaces=names)
        async with cdb.session() as session:
            found = await asyncio.wait_for(cached(session, cache).get(1), WAIT)
        assert found is not None
        assert (found.name, found.price) == ("stored", Decimal("2.50"))
        assert not leader.done()
        gate.release.set()
        await leader

    async def test_a_commit_between_look_up_and_load_is_read_and_cached(
        self,
        cdb: Database,  # noqa: F811 - the imported fixture
        cache: BaseCache,  # noqa: F811 - the imported fixture
    ) -> None:
        """A row updated after a get's look-up missed, before it loads: the new row is cached."""
        with HeldLookUps(cache) as held:

            async def slow() -> ProductOut | None:
                async with cdb.session() as session:
                    return await cached(session, cache).get(1)

            reader = asyncio.create_task(slow())
            # missed; held before the lease and the load
            await asyncio.wait_for(held.inside.wait(), WAIT)
            async with cdb.session() as session:
                await ProductRepository(session).update(1, {"name": "new"})
            held.go_on.set()
            found = await asyncio.wait_for(reader, WAIT)
        assert found is not None
        assert found.name == "new"
        hits = cache.stats.hits
        async with cdb.session() as session:
            again = await cached(session, cache).get(1)
        assert again is not None
        assert again.name == "new"
        assert cache.stats.hits == hits + 1
