"""Cache scenarios: cache-aside hits and misses, and 100 entities at once, against raw redis-py."""

from __future__ import annotations

import contextlib
import itertools
from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict
from redis.asyncio import Redis
from redis.asyncio.connection import Connection, ConnectionPool

from ._env import KEY_PREFIX, REDIS_URL, Backend
from ._harness import Contender, Scenario
from ._stacks import UnavailableError, cache_layer, guarded, underlay_repository
from .models import ReadItem
from .scenarios_read import COLUMNS, _sql

TTL = 600


class ItemOut(BaseModel):
    """The API schema a cached read returns."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    sku: str
    name: str
    category: str
    price: int
    qty: int
    created_at: datetime
    updated_at: datetime


class CountingConnection(Connection):
    """A redis-py connection that counts requests sent (a pipeline is one send)."""

    sends = 0

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        type(self).sends += 1
        await super().send_packed_command(command, check_health)


def redis_client() -> Redis:
    """Return a redis.asyncio client whose round trips are counted."""
    pool = ConnectionPool.from_url(REDIS_URL, connection_class=CountingConnection)
    return Redis(connection_pool=pool)


async def delete_bench_keys(client: Redis) -> None:
    """Delete every key this run created (SCAN on the run's own prefix; never FLUSH)."""
    batch: list[Any] = []
    async for key in client.scan_iter(match=f"{KEY_PREFIX}*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            await client.delete(*batch)
            batch.clear()
    if batch:
        await client.delete(*batch)


class CacheStack:
    """underlay's cache objects for one backend: a RedisCache and a Database using it."""

    def __init__(self, backend: Backend, client: Redis) -> None:
        self.backend = backend
        self.client = client
        self._built: tuple[Any, Any, Any] | None = None

    def build(self) -> tuple[Any, Any, Any]:
        """Return ``(module, cache, database)``, raising :class:`UnavailableError` when missing."""
        if self._built is None:
            module = cache_layer()
            from underlay import Database

            # The default per-read deadline (tens of ms) is right for production, but on a
            # loaded benchmark machine it would turn slow hits into fail-open misses and
            # measure the database instead; the hit path is the same with a looser one.
            cache = module.RedisCache(
                client=self.client, prefix=f"{KEY_PREFIX}u:{self.backend.label}:", timeout=1.0
            )
            db = Database(self.backend.url, cache=cache)
            self.backend.extras.setdefault("closers", []).append(db.dispose)
            self._built = (module, cache, db)
        return self._built


def _stats(cache: Any) -> dict[str, int] | None:
    stats = getattr(cache, "stats", None)
    return stats.as_dict() if stats is not None and hasattr(stats, "as_dict") else None


def _raw_key(backend: Backend, item_id: int) -> str:
    return f"{KEY_PREFIX}raw:{backend.label}:item:{item_id}"


async def _fill_raw(backend: Backend, client: Redis, ids: list[int]) -> None:
    async with backend.sessionmaker() as session:
        for chunk in range(0, len(ids), 500):
            items = [await session.get(ReadItem, i) for i in ids[chunk : chunk + 500]]
            async with client.pipeline(transaction=False) as pipe:
                for item in items:
                    value = orjson.dumps(ItemOut.model_validate(item).model_dump(mode="json"))
                    pipe.set(_raw_key(backend, item.id), value, ex=TTL)
                await pipe.execute()


def hit_scenario(backend: Backend, stack: CacheStack, calls: int, reps: int) -> Scenario:
    """Read ``calls`` cached entities one by one (every read a hit)."""
    client = stack.client
    ids = list(range(1, calls + 1))
    keys = [_raw_key(backend, i) for i in ids]
    extras: dict[str, Any] = {}

    async def raw_loads() -> None:
        for key in keys:
            assert orjson.loads(await client.get(key))["sku"]

    async def raw_validate() -> None:
        for key in keys:
            assert ItemOut.model_validate_json(await client.get(key)).sku

    def underlay() -> Any:
        module, cache, db = stack.build()
        repo_cls = underlay_repository(ReadItem)

        async def run() -> None:
            async with db.session() as session:
                cached = module.CachedRepository(repo_cls(session), cache, schema=ItemOut, ttl=TTL)
                for i in ids:
                    assert (await cached.get(i)).id == i

        return run

    def underlay_per_call() -> Any:
        module, cache, db = stack.build()
        repo_cls = underlay_repository(ReadItem)

        async def run() -> None:
            for i in ids:
                async with db.session() as session:
                    cached = module.CachedRepository(
                        repo_cls(session), cache, schema=ItemOut, ttl=TTL
                    )
                    assert (await cached.get(i)).id == i

        return run

    async def prepare() -> None:
        await _fill_raw(backend, client, ids)
        try:
            module, cache, db = stack.build()
        except UnavailableError:
            return
        repo_cls = underlay_repository(ReadItem)
        for i in ids:
            # a session per fill: a fill from inside a transaction that already read (on
            # SQLite, a snapshot that may be old) is refused by design
            async with db.session() as session:
                await module.CachedRepository(
                    repo_cls(session), cache, schema=ItemOut, ttl=TTL
                ).get(i)
        async with db.session() as session:
            cached = module.CachedRepository(repo_cls(session), cache, schema=ItemOut, ttl=TTL)
            sample = ids[:100]
            before = CountingConnection.sends
            for i in sample:
                await cached.get(i)
            extras["redis_round_trips_per_hit"] = (CountingConnection.sends - before) / len(sample)
            before = CountingConnection.sends
            for key in keys[: len(sample)]:
                await client.get(key)
            extras["raw_round_trips_per_get"] = (CountingConnection.sends - before) / len(sample)
        extras["cache_stats_after_fill"] = _stats(cache)

    async def finish() -> None:
        with contextlib.suppress(UnavailableError):
            extras["cache_stats_at_end"] = _stats(stack.build()[1])

    contenders = [
        Contender("redis-py GET + orjson.loads", "raw", raw_loads),
        Contender("redis-py GET + model_validate_json", "raw", raw_validate, note="same output"),
        guarded("underlay CachedRepository.get (hit)", "underlay", underlay),
        guarded(
            "underlay CachedRepository.get (hit), per request",
            "underlay",
            underlay_per_call,
            note="new session + repositories per call",
        ),
    ]
    return Scenario(
        id=f"{backend.label}.cache-hit",
        backend=backend.label,
        title="cache-aside hit, one entity per call",
        ops=calls,
        unit="calls",
        reps=reps,
        contenders=contenders,
        limit=contenders[0].name,
        reference="underlay CachedRepository.get (hit)",
        prepare=prepare,
        finish=finish,
        extras=extras,
    )


def miss_scenario(backend: Backend, stack: CacheStack, calls: int, reps: int) -> Scenario:
    """Read ``calls`` entities not in the cache yet: read the database, then fill."""
    client = stack.client
    sql = _sql(backend, f"SELECT {COLUMNS} FROM {ReadItem.__tablename__} WHERE id = $1")
    names = COLUMNS.split(", ")

    def id_batches() -> Any:
        # fresh ids for every repetition, so every read really is a miss
        for start in itertools.count(50_000, calls):
            yield range(start + 1, start + calls + 1)

    raw_batches, underlay_batches = id_batches(), id_batches()

    async def raw() -> None:
        for i in next(raw_batches):
            key = _raw_key(backend, i)
            if await client.get(key) is not None:
                raise AssertionError("expected a miss")
            if backend.is_postgres:
                async with backend.raw.acquire() as conn:
                    row = dict(await conn.fetchrow(sql, i))
            else:
                async with backend.raw.execute(sql, (i,)) as cursor:
                    row = dict(zip(names, await cursor.fetchone(), strict=True))
            value = ItemOut.model_validate(row)
            await client.set(key, value.model_dump_json(), ex=TTL)

    def underlay() -> Any:
        module, cache, db = stack.build()
        repo_cls = underlay_repository(ReadItem)

        async def run() -> None:
            for i in next(underlay_batches):
                async with db.session() as session:
                    cached = module.CachedRepository(
                        repo_cls(session), cache, schema=ItemOut, ttl=TTL
                    )
                    assert (await cached.get(i)).id == i

        return run

    driver = "asyncpg" if backend.is_postgres else "aiosqlite"
    contenders = [
        Contender(f"redis GET + {driver} fetch + SET", "raw", raw, note="no fill guard"),
        # a session per call, as a request would: a fill inside a transaction that already
        # read may be refused (SQLite snapshots), which would measure something else
        guarded("underlay CachedRepository.get (miss)", "underlay", underlay),
    ]
    return Scenario(
        id=f"{backend.label}.cache-miss",
        backend=backend.label,
        title="cache-aside miss: read the database and fill",
        ops=calls,
        unit="calls",
        reps=reps,
        contenders=contenders,
        limit=contenders[0].name,
        reference="underlay CachedRepository.get (miss)",
    )


def many_scenario(backend: Backend, stack: CacheStack, calls: int, reps: int) -> Scenario:
    """Read 100 cached entities at once, ``calls`` times."""
    client = stack.client
    ids = list(range(1, 101))
    keys = [_raw_key(backend, i) for i in ids]

    async def raw_loads() -> None:
        for _ in range(calls):
            values = await client.mget(keys)
            assert len([orjson.loads(v) for v in values]) == 100

    async def raw_validate() -> None:
        for _ in range(calls):
            values = await client.mget(keys)
            assert len([ItemOut.model_validate_json(v) for v in values]) == 100

    def underlay_repo() -> Any:
        module, cache, db = stack.build()
        repo_cls = underlay_repository(ReadItem)
        if not hasattr(module.CachedRepository, "get_many"):
            raise UnavailableError("CachedRepository has no get_many")

        async def run() -> None:
            async with db.session() as session:
                cached = module.CachedRepository(repo_cls(session), cache, schema=ItemOut, ttl=TTL)
                for _ in range(calls):
                    found = await cached.get_many(ids)
                    assert len(found) == 100

        return run

    cache_keys = [f"bench:item:{i}" for i in ids]

    def underlay_cache() -> Any:
        _, cache, _ = stack.build()

        async def run() -> None:
            for _ in range(calls):
                found = await cache.get_many(cache_keys)
                assert len([ItemOut.model_validate(found[key]) for key in cache_keys]) == 100

        return run

    async def prepare() -> None:
        await _fill_raw(backend, client, ids)
        try:
            _, cache, _ = stack.build()
        except UnavailableError:
            return
        values = [orjson.loads(v) for v in await client.mget(keys)]
        await cache.set_many(dict(zip(cache_keys, values, strict=True)), ttl=TTL)

    contenders = [
        Contender("redis-py MGET + orjson.loads", "raw", raw_loads),
        Contender("redis-py MGET + model_validate_json", "raw", raw_validate),
        guarded("underlay CachedRepository.get_many", "underlay", underlay_repo),
        guarded("underlay RedisCache.get_many + validate", "underlay", underlay_cache, note="MGET"),
    ]
    return Scenario(
        id=f"{backend.label}.cache-many",
        backend=backend.label,
        title="100 cached entities in one call",
        ops=calls,
        unit="calls",
        reps=reps,
        contenders=contenders,
        limit=contenders[0].name,
        reference="underlay RedisCache.get_many + validate",
        prepare=prepare,
    )
