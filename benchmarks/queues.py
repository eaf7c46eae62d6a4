"""Queue and session benchmarks: ``python -m benchmarks.queues [--quick]``.

- relay throughput: events published per second by one `OutboxRelay` pass over a backlog;
- end-to-end latency (commit -> entry read by a blocking ``XREAD``) with the relay in another
  process (polling) and in this process (woken by the commit), p50 / p99;
- a session read (`RedisSessionStore.get`: one script call that also slides the expiry)
  against a raw ``GET`` of a value of the same size.

PostgreSQL and Redis come from the same environment variables as the main harness; every
run uses a database and a key prefix of its own and removes them afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import time
from typing import Any

from redis.asyncio import Redis

from underlay import Base, Database
from underlay.outbox import OutboxRelay, emit
from underlay.sessions import RedisSessionStore

from ._env import (
    KEY_PREFIX,
    POSTGRES_URL,
    REDIS_URL,
    drop_postgres_database,
    ensure_postgres_database,
)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def throughput(db: Database, events: int) -> float:
    async with db.session() as session:
        for n in range(events):
            await emit(session, "bench", {"n": n, "pad": "x" * 100})
    async with OutboxRelay(db, REDIS_URL, prefix=KEY_PREFIX + "t:", batch_size=1000) as relay:
        started = time.perf_counter()
        published = await relay.run_once()
        elapsed = time.perf_counter() - started
    assert published == events, published
    return events / elapsed


def start_relay(url: str, prefix: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.queues", "--relay", url, prefix],
        stdout=subprocess.PIPE,
    )


async def latency(db: Database, url: str, samples: int, *, in_process: bool) -> list[float]:
    prefix = KEY_PREFIX
    stream = "lat-in" if in_process else "lat-out"  # a stream each: leases are per stream
    redis = Redis.from_url(REDIS_URL)
    process: subprocess.Popen[bytes] | None = None
    relay: OutboxRelay | None = None
    task: asyncio.Task[None] | None = None
    if in_process:
        relay = OutboxRelay(db, REDIS_URL, prefix=prefix)
        task = asyncio.create_task(relay.run())
    else:
        process = start_relay(url, prefix)
        assert process.stdout is not None
        await asyncio.to_thread(process.stdout.readline)
    last: Any = "0-0"
    results: list[float] = []
    try:
        for n in range(samples):
            async with db.session() as session:
                await emit(session, stream, {"n": n})
            committed = time.perf_counter()
            reply = await redis.xread({prefix + stream: last}, block=5000, count=1)
            results.append((time.perf_counter() - committed) * 1000)
            last = reply[0][1][0][0]
            await asyncio.sleep(0.005)
    finally:
        if relay is not None and task is not None:
            relay.stop()
            await task
            await relay.aclose()
        if process is not None:
            process.terminate()
            process.wait()
            if process.stdout is not None:
                process.stdout.close()
        await redis.aclose()
    return results


async def sessions(reads: int) -> tuple[float, float]:
    redis = Redis.from_url(REDIS_URL)
    store = RedisSessionStore(REDIS_URL, prefix=KEY_PREFIX + "s:", timeout=1.0)
    data = {"user": "u1", "role": "admin", "cart": list(range(20))}
    sid = await store.create(data, user_id="u1")
    await redis.set(KEY_PREFIX + "raw", store.codec.encode(data))
    store_times: list[float] = []
    raw_times: list[float] = []
    for _ in range(reads):
        started = time.perf_counter()
        await store.get(sid)
        store_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        await redis.get(KEY_PREFIX + "raw")
        raw_times.append(time.perf_counter() - started)
    await store.aclose()
    await redis.aclose()
    return statistics.median(store_times) * 1e6, statistics.median(raw_times) * 1e6


async def cleanup() -> None:
    redis = Redis.from_url(REDIS_URL)
    keys = [key async for key in redis.scan_iter(match=f"{KEY_PREFIX}*", count=1000)]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


async def run_relay(url: str, prefix: str) -> None:
    async with Database(url) as db, OutboxRelay(db, REDIS_URL, prefix=prefix) as relay:
        print("READY", flush=True)
        await relay.run()


async def main(quick: bool) -> None:
    events, samples, reads = (2_000, 50, 500) if quick else (20_000, 300, 5_000)
    await ensure_postgres_database()
    try:
        async with Database(POSTGRES_URL) as db:
            await db.create_all(Base.metadata)
            rate = await throughput(db, events)
            print(f"relay throughput (PostgreSQL, {events} events): {rate:,.0f} events/s")
            for in_process in (False, True):
                lat = await latency(db, POSTGRES_URL, samples, in_process=in_process)
                where = (
                    "same process, woken by commit"
                    if in_process
                    else "separate process, 50 ms poll"
                )
                print(
                    f"end-to-end latency ({where}): p50 {percentile(lat, 0.5):.1f} ms, "
                    f"p99 {percentile(lat, 0.99):.1f} ms"
                )
        store_us, raw_us = await sessions(reads)
        print(
            f"session read: {store_us:.0f} us median vs raw GET {raw_us:.0f} us "
            f"({store_us / raw_us:.2f}x)"
        )
    finally:
        await cleanup()
        await drop_postgres_database()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--relay", nargs=2, metavar=("DB_URL", "PREFIX"))
    args = parser.parse_args()
    if args.relay:
        asyncio.run(run_relay(*args.relay))
    else:
        asyncio.run(main(args.quick))
