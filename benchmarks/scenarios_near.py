"""Near-cache scenario: hits answered in process, against a dict and against Redis hits."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from ._env import KEY_PREFIX, REDIS_URL, Backend
from ._harness import Contender, Scenario
from ._stacks import UnavailableError, cache_layer, guarded, underlay_repository
from .models import ReadItem
from .scenarios_cache import TTL, CacheStack, ItemOut

__all__ = ["near_scenario"]


class NearStack:
    """A RedisCache with a near cache, and a Database invalidating it, for one backend."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._built: tuple[Any, Any, Any] | None = None

    def build(self) -> tuple[Any, Any, Any]:
        """Return ``(module, cache, database)``, raising `UnavailableError` when missing."""
        if self._built is None:
            module = cache_layer()
            if not hasattr(module, "NearCache"):
                raise UnavailableError("underlay.cache.NearCache missing")
            from underlay import Database

            cache = module.RedisCache(
                REDIS_URL,
                prefix=f"{KEY_PREFIX}near:{self.backend.label}:",
                timeout=1.0,
                near_cache=module.NearCache(max_entries=100_000),
            )
            db = Database(self.backend.url, cache=cache)
            closers = self.backend.extras.setdefault("closers", [])
            closers += [db.dispose, cache.aclose]
            self._built = (module, cache, db)
        return self._built


def near_scenario(backend: Backend, stack: CacheStack, calls: int, reps: int) -> Scenario:
    """Read ``calls`` cached entities one by one, every read a near-cache hit."""
    near = NearStack(backend)
    ids = list(range(1, calls + 1))
    keys = [f"bench:near:{i}" for i in ids]
    local: dict[str, bytes] = {}
    extras: dict[str, Any] = {}

    async def dict_loads() -> None:
        for key in keys:
            assert orjson.loads(local[key])["sku"]

    async def dict_validate() -> None:
        for key in keys:
            assert ItemOut.model_validate_json(local[key]).sku

    def cache_near() -> Any:
        _, cache, _ = near.build()

        async def never() -> Any:
            raise AssertionError("expected a near-cache hit")

        async def run() -> None:
            for key in keys:
                assert (await cache.get_or_set(key, never, namespaces=("bench",)))["sku"]

        return run

    def repository_near() -> Any:
        module, cache, db = near.build()
        repo_cls = underlay_repository(ReadItem)

        async def run() -> None:
            async with db.session() as session:
                cached = module.CachedRepository(repo_cls(session), cache, schema=ItemOut, ttl=TTL)
                for i in ids:
                    assert (await cached.get(i)).id == i

        return run

    def repository_redis() -> Any:
        module, cache, db = stack.build()
        repo_cls = underlay_repository(ReadItem)

        async def run() -> None:
            async with db.session() as session:
                cached = module.CachedRepository(repo_cls(session), cache, schema=ItemOut, ttl=TTL)
                for i in ids:
                    assert (await cached.get(i)).id == i

        return run

    async def prepare() -> None:
        async with backend.sessionmaker() as session:
            for i in ids:
                item = await session.get(ReadItem, i)
                local[keys[i - 1]] = orjson.dumps(
                    ItemOut.model_validate(item).model_dump(mode="json")
                )
        try:
            module, cache, db = near.build()
            _, redis_cache, redis_db = stack.build()
        except UnavailableError:
            return
        cache._near._start()
        for _ in range(1000):  # the tracking connection must be up before fills are mirrored
            if cache._near.connected:
                break
            await asyncio.sleep(0.01)
        repo_cls = underlay_repository(ReadItem)
        await cache.set_many(
            {key: orjson.loads(local[key]) for key in keys}, ttl=TTL, namespaces=("bench",)
        )
        for database, target in ((db, cache), (redis_db, redis_cache)):
            for i in ids:
                for _ in range(2):  # fill Redis, then mirror it (or a Redis hit)
                    async with database.session() as session:
                        await module.CachedRepository(
                            repo_cls(session), target, schema=ItemOut, ttl=TTL
                        ).get(i)

        async def never() -> Any:
            raise AssertionError("expected a hit")

        for key in keys:  # mirror the plain entries too
            await cache.get_or_set(key, never, namespaces=("bench",))
        extras["near_entries"] = len(cache._near)
        extras["near_connected"] = cache._near.connected

    async def finish() -> None:
        try:
            _, cache, _ = near.build()
        except UnavailableError:
            return
        extras["near_hits"] = cache._near.hits
        extras["near_flushes"] = cache._near.flushes

    contenders = [
        Contender("dict lookup + orjson.loads", "raw", dict_loads, note="in-process floor"),
        Contender("dict lookup + model_validate_json", "raw", dict_validate),
        guarded("underlay RedisCache.get_or_set (near hit)", "underlay", cache_near),
        guarded("underlay CachedRepository.get (near hit)", "underlay", repository_near),
        guarded(
            "underlay CachedRepository.get (Redis hit)",
            "underlay",
            repository_redis,
            note="no near cache",
        ),
    ]
    return Scenario(
        id=f"{backend.label}.cache-near",
        backend=backend.label,
        title="near-cache hit, one entity per call",
        ops=calls,
        unit="calls",
        reps=reps,
        contenders=contenders,
        limit=contenders[0].name,
        reference="underlay CachedRepository.get (near hit)",
        prepare=prepare,
        finish=finish,
        extras=extras,
    )
