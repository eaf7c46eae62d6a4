"""Scale-out benchmarks: replica reads and read-your-writes waits, cluster cache hits.

Cache rows compare a hit (and an invalidation, which waits for one replica where the
topology has replicas) on one Redis, on the cluster node that owns the cache's slot and on
a Sentinel-managed master.

Run with ``python -m benchmarks.scaleout [--quick]`` (``make bench-scaleout``); the engines
come from ``scripts/scaleout.sh``, which this starts. Each scenario interleaves its
contenders per repetition and reports medians; the read-your-writes scenario also prints
the barrier wait's p50 / p95 and how many reads fell back to the primary.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg
from sqlalchemy import String
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from underlay import Database
from underlay.cache import RedisCache

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "scaleout.sh"


class _Base(DeclarativeBase):
    pass


class Item(_Base):
    __tablename__ = "bench_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


def start(*engines: str) -> dict[str, str]:
    out = subprocess.run(
        ["bash", str(SCRIPT), "start", *engines], capture_output=True, text=True, check=True
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def dsn(url: Any) -> str:
    return str(url.render_as_string(hide_password=False)).replace("+asyncpg", "")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def timed(job: Callable[[], Awaitable[Any]], ops: int) -> float:
    started = time.perf_counter()
    await job()
    return (time.perf_counter() - started) / ops * 1e6


async def interleaved(
    contenders: dict[str, Callable[[], Awaitable[Any]]], ops: int, reps: int
) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for job in contenders.values():  # warm-up
        await job()
    for _ in range(reps):
        for name, job in contenders.items():
            samples[name].append(await timed(job, ops))
    return {name: statistics.median(values) for name, values in samples.items()}


def table(title: str, medians: dict[str, float], reference: str) -> None:
    print(f"\n{title}")
    base = medians[reference]
    for name, value in medians.items():
        print(f"  {name:<44} {value:9.1f} us/op   {value / base:5.2f}x {reference}")


async def replica_reads(urls: dict[str, str], gets: int, cycles: int, reps: int) -> None:
    name = f"bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(dsn(make_url(urls["SCALEOUT_PRIMARY_URL"])))
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    primary = make_url(urls["SCALEOUT_PRIMARY_URL"]).set(database=name)
    replica = make_url(urls["SCALEOUT_REPLICA_URL"]).set(database=name)
    db = Database(primary, replicas=[replica])
    try:
        await db.create_all(_Base.metadata)
        async with db.session() as session:
            session.add_all(Item(id=i, name=f"item {i}") for i in range(1000))
        # Let the replica have the table before the raw driver reads it.
        for _ in range(2000):
            try:
                probe = await asyncpg.connect(dsn(replica))
                break
            except asyncpg.InvalidCatalogNameError:
                await asyncio.sleep(0.01)
        while await probe.fetchval("SELECT count(*) FROM bench_items") < 1000:
            await asyncio.sleep(0.01)

        async def raw_replica() -> None:
            for i in range(gets):
                await probe.fetchrow("SELECT id, name FROM bench_items WHERE id = $1", i % 1000)

        async def primary_get() -> None:
            for i in range(gets):
                async with db.session() as session:
                    await session.get(Item, i % 1000)

        async def replica_get() -> None:
            for i in range(gets):
                async with db.session(readonly=True) as session:
                    await session.get(Item, i % 1000)

        medians = await interleaved(
            {
                "raw asyncpg on the replica (one connection)": raw_replica,
                "underlay session() get (primary)": primary_get,
                "underlay session(readonly=True) get (replica)": replica_get,
            },
            gets,
            reps,
        )
        table(
            f"replica reads: get by id, one session per call, {gets} calls",
            medians,
            "underlay session() get (primary)",
        )

        # Read-your-writes: every read follows this context's own commit.
        stats = db.replica_stats
        stats.waits.clear()
        before_replica, before_fallback = stats.replica, sum(stats.primary_fallback.values())
        latencies: list[float] = []
        for number in range(cycles):
            async with db.session() as session:
                session.add(Item(id=10_000 + number, name="fresh"))
            started = time.perf_counter()
            async with db.session(readonly=True) as session:
                assert await session.get(Item, 10_000 + number) is not None
            latencies.append((time.perf_counter() - started) * 1e6)
        waits = [wait * 1e6 for wait in stats.waits]
        print(f"\nread-your-writes: {cycles} commit-then-read cycles, every row seen")
        print(
            f"  read after own commit      p50 {percentile(latencies, 0.5):8.1f} us"
            f"   p95 {percentile(latencies, 0.95):8.1f} us"
        )
        if waits:
            print(
                f"  barrier wait on replica    p50 {percentile(waits, 0.5):8.1f} us"
                f"   p95 {percentile(waits, 0.95):8.1f} us   ({len(waits)} waits)"
            )
        print(
            f"  served by replica {stats.replica - before_replica}, "
            f"by the primary {sum(stats.primary_fallback.values()) - before_fallback} "
            f"({dict(stats.primary_fallback)})"
        )
        await probe.close()
    finally:
        await db.dispose()
        admin = await asyncpg.connect(dsn(make_url(urls["SCALEOUT_PRIMARY_URL"])))
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def cache_hits(urls: dict[str, str], gets: int, reps: int) -> None:
    """Cache hits (and invalidations) on one Redis, a cluster and a Sentinel master."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    caches = {
        "single node (6379)": RedisCache("redis://127.0.0.1:6379", prefix=prefix, timeout=1),
        "cluster (slot owner)": RedisCache(
            cluster_nodes=urls["SCALEOUT_CLUSTER_NODES"].split(","), prefix=prefix, timeout=1
        ),
        "sentinel master": RedisCache(
            sentinels=urls["SCALEOUT_SENTINELS"].split(","),
            service_name=urls["SCALEOUT_SENTINEL_SERVICE"],
            prefix=prefix,
            timeout=1,
        ),
    }
    caches["cluster, wait_replicas=0"] = RedisCache(
        cluster_nodes=urls["SCALEOUT_CLUSTER_NODES"].split(","),
        prefix=prefix,
        timeout=1,
        wait_replicas=0,
    )

    async def loader() -> dict[str, Any]:
        return {"id": 1, "name": "lamp", "price": "10.50"}

    names = ["r:items:1", "t:items"]
    try:
        for cache in caches.values():
            for i in range(100):
                await cache.get_or_set(f"item:{i}", loader, namespaces=names)

        def hits(cache: RedisCache) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                for i in range(gets):
                    await cache.get_or_set(f"item:{i % 100}", loader, namespaces=names)

            return run

        def bumps(cache: RedisCache) -> Callable[[], Awaitable[None]]:
            async def run() -> None:
                for i in range(gets):
                    await cache.bump_namespace(f"r:items:{i % 100}")

            return run

        hit_names = [name for name in caches if "wait_replicas" not in name]
        medians = await interleaved({n: hits(caches[n]) for n in hit_names}, gets, reps)
        table(
            f"cache hits: get_or_set with two namespaces, {gets} calls",
            medians,
            "single node (6379)",
        )
        medians = await interleaved({n: bumps(c) for n, c in caches.items()}, gets, reps)
        table(
            f"invalidations: bump_namespace (WAIT 1 replica where replicated), {gets} calls",
            medians,
            "single node (6379)",
        )
    finally:
        for cache in caches.values():
            await cache.invalidate_pattern("*")
            await cache.client.delete(f"{cache.key_prefix}epoch")
            await cache.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    args = parser.parse_args()
    gets, cycles, reps = (50, 100, 2) if args.quick else (500, 1000, 7)
    urls = start("pg", "cluster", "sentinel")
    await replica_reads(urls, gets, cycles, reps)
    await cache_hits(urls, gets, reps)


if __name__ == "__main__":
    asyncio.run(main())
