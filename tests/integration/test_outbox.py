"""The transactional outbox and its relay, against real PostgreSQL, SQLite and Redis."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import MetaData, func, select

from tests.conftest import Backend
from underlay import Base, Database
from underlay.outbox import InvalidEventError, OutboxEvent, OutboxRelay, OutboxStreamState, emit

pytestmark = pytest.mark.redis


@pytest.fixture
def metadata() -> MetaData:
    """The outbox tables live on `underlay.Base.metadata`."""
    return Base.metadata


@pytest.fixture
async def relay(db: Database, redis_url: str, prefix: str) -> AsyncIterator[OutboxRelay]:
    async with OutboxRelay(db, redis_url, prefix=prefix) as built:
        yield built


async def entries(redis: Redis, key: str) -> list[tuple[str, dict[str, Any]]]:
    """The stream's entries as (id, {"payload": decoded, "key": str | None})."""
    return [
        (
            entry_id.decode(),
            {
                "payload": json.loads(fields[b"payload"]),
                "key": fields[b"key"].decode() if b"key" in fields else None,
            },
        )
        for entry_id, fields in await redis.xrange(key)
    ]


class TestEmit:
    async def test_committed_events_are_published_in_order(
        self, db: Database, relay: OutboxRelay, redis: Redis, prefix: str
    ) -> None:
        """Events of a committed transaction reach the stream in emit order, with key and JSON."""
        async with db.session() as session:
            first = await emit(session, "orders", {"id": 1, "total": "9.90"}, key="o1")
            second = await emit(session, "orders", [1, 2, 3])
        assert await relay.run_once() == 2
        assert await entries(redis, prefix + "orders") == [
            (f"{first}-0", {"payload": {"id": 1, "total": "9.90"}, "key": "o1"}),
            (f"{second}-0", {"payload": [1, 2, 3], "key": None}),
        ]
        assert await relay.run_once() == 0

    async def test_rolled_back_events_are_never_published(
        self, db: Database, relay: OutboxRelay, redis: Redis, prefix: str
    ) -> None:
        """An event whose transaction rolls back leaves no row and no entry."""
        with pytest.raises(RuntimeError):
            async with db.session() as session:
                await emit(session, "orders", {"id": 1})
                raise RuntimeError("boom")
        async with db.session() as session:
            kept = await emit(session, "orders", {"id": 2})
        assert await relay.run_once() == 1
        assert [entry_id for entry_id, _ in await entries(redis, prefix + "orders")] == [
            f"{kept}-0"
        ]

    @pytest.mark.parametrize(
        ("stream", "payload", "key"),
        [
            pytest.param("", {}, None, id="empty-stream"),
            pytest.param("x" * 201, {}, None, id="long-stream"),
            pytest.param("orders", {"when": object()}, None, id="not-json"),
            pytest.param("orders", {}, "", id="empty-key"),
        ],
    )
    async def test_bad_input_is_refused_before_sql(
        self, db: Database, stream: str, payload: Any, key: str | None
    ) -> None:
        """A bad stream name, key or payload raises InvalidEventError and writes nothing."""
        async with db.session() as session:
            with pytest.raises(InvalidEventError):
                await emit(session, stream, payload, key=key)
            assert await session.scalar(select(func.count()).select_from(OutboxEvent)) == 0


class TestOrdering:
    async def test_out_of_order_commits_are_never_skipped(
        self, db: Database, relay: OutboxRelay, redis: Redis, prefix: str
    ) -> None:
        """A stream's event committed after another stream's later event is still published."""
        async with db.session() as slow:
            early = await emit(slow, "a", {"n": 1})
            if db.engine.dialect.name == "postgresql":
                # The second transaction commits while the first is open (SQLite would block).
                async with db.session() as fast:
                    late = await emit(fast, "b", {"n": 2})
                assert late > early
                assert await relay.run_once() == 1
        assert await relay.run_once() >= 1
        assert [e for e, _ in await entries(redis, prefix + "a")] == [f"{early}-0"]

    async def test_a_waiting_emitter_is_published_after_the_holder(
        self, db: Database, relay: OutboxRelay, redis: Redis, prefix: str
    ) -> None:
        """Two transactions emitting to one stream: the first to commit comes first."""
        holder_emitted = asyncio.Event()
        release = asyncio.Event()

        async def holder() -> None:
            async with db.session() as session:
                await emit(session, "s", {"who": "holder"})
                holder_emitted.set()
                await release.wait()

        async def waiter() -> None:
            await holder_emitted.wait()
            async with db.session() as session:
                await emit(session, "s", {"who": "waiter"})

        tasks = [asyncio.create_task(holder()), asyncio.create_task(waiter())]
        await holder_emitted.wait()
        assert await relay.run_once() == 0  # nothing committed yet
        release.set()
        await asyncio.gather(*tasks)
        await relay.run_once()
        got = [fields["payload"]["who"] for _, fields in await entries(redis, prefix + "s")]
        assert got == ["holder", "waiter"]


class TestResume:
    async def test_republishing_after_a_lost_position_adds_nothing(
        self, db: Database, relay: OutboxRelay, redis: Redis, prefix: str
    ) -> None:
        """A crash between the append and the recorded position re-publishes nothing twice."""
        async with db.session() as session:
            for n in range(5):
                await emit(session, "s", {"n": n})
        assert await relay.run_once() == 5
        async with db.session() as session:
            state = await session.get_one(OutboxStreamState, "s")
            state.published_id = 0  # as if the relay died before recording its progress
            await emit(session, "s", {"n": 5})
        assert await relay.run_once() == 1
        got = [fields["payload"]["n"] for _, fields in await entries(redis, prefix + "s")]
        assert got == [0, 1, 2, 3, 4, 5]

    async def test_one_relay_per_stream_others_stand_by(
        self, db: Database, relay: OutboxRelay, redis: Redis, redis_url: str, prefix: str
    ) -> None:
        """A second relay leaves a leased stream alone until the holder lets go."""
        async with db.session() as session:
            await emit(session, "s", {"n": 1})
        assert await relay.run_once() == 1
        async with OutboxRelay(db, redis_url, prefix=prefix, lease=0.0) as standby:
            async with db.session() as session:
                await emit(session, "s", {"n": 2})
            assert await standby.run_once() == 0
            await relay.aclose()  # gives the lease up
            assert await standby.run_once() == 1
            async with db.session() as session:
                holder = (await session.get_one(OutboxStreamState, "s")).owner
            assert holder == standby.name
        assert len(await entries(redis, prefix + "s")) == 2

    async def test_prune_removes_only_published_events(
        self, db: Database, redis_url: str, prefix: str
    ) -> None:
        """Pruning deletes published rows past the retention and keeps unpublished ones."""
        async with db.session() as session:
            await emit(session, "s", {"n": 1})
        async with OutboxRelay(db, redis_url, prefix=prefix, retention=0) as relay:
            assert await relay.prune() == 0
            await relay.run_once()
            async with db.session() as session:
                pending = await emit(session, "s", {"n": 2})
            assert await relay.prune() == 1
            async with db.session() as session:
                left = (await session.scalars(select(OutboxEvent.id))).all()
            assert left == [pending]
            assert await relay.run_once() == 1


class TestRunLoop:
    async def test_run_publishes_after_commit_and_stops(
        self, db: Database, relay: OutboxRelay, redis: Redis, prefix: str
    ) -> None:
        """A running relay picks up a new commit, and `stop` ends `run`."""
        task = asyncio.create_task(relay.run())
        async with db.session() as session:
            await emit(session, "s", {"n": 1})
        async with asyncio.timeout(10):
            while not await redis.exists(prefix + "s"):
                await asyncio.sleep(0.01)
        relay.stop()
        async with asyncio.timeout(10):
            await task


# --- the fault test: a relay SIGKILLed at random points while events are written ----------


@dataclass
class Emitted:
    """What the emitters committed: per transaction, its events and its timing."""

    committed: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # stream -> (txn, n)
    rolled_back: set[tuple[int, int]] = field(default_factory=set)
    started: dict[int, float] = field(default_factory=dict)
    finished: dict[int, float] = field(default_factory=dict)


WORKER = "tests.integration.outbox_worker"


def worker_env() -> dict[str, str]:
    """The environment of a worker subprocess: this checkout's tests package importable."""
    paths = [os.getcwd(), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def start_relay(backend: Backend, redis_url: str, prefix: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", WORKER, "relay", backend.url, redis_url, prefix],
        stdout=subprocess.PIPE,
        env=worker_env(),
    )


async def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGKILL)
    await asyncio.to_thread(process.wait)
    if process.stdout is not None:
        process.stdout.close()


async def emit_load(db: Database, events: int, writers: int, seed: int) -> Emitted:
    rng = random.Random(seed)
    out = Emitted()
    counter = iter(range(events * 2))
    remaining = [events]

    async def writer(worker: int) -> None:
        while remaining[0] > 0:
            txn = next(counter)
            size = min(rng.randint(1, 4), remaining[0])
            remaining[0] -= size
            rollback = rng.random() < 0.15
            streams = sorted(rng.choice("ab") for _ in range(size))
            out.started[txn] = time.monotonic()
            try:
                async with db.session() as session:
                    for n, stream in enumerate(streams):
                        await emit(session, stream, {"txn": txn, "n": n, "w": worker})
                    if rollback:
                        raise LookupError("roll back")
            except LookupError:
                out.rolled_back.update((txn, n) for n in range(size))
                remaining[0] += size
                continue
            out.finished[txn] = time.monotonic()
            for n, stream in enumerate(streams):
                out.committed.setdefault(stream, []).append((txn, n))

    await asyncio.gather(*(writer(w) for w in range(writers)))
    return out


async def killer(backend: Backend, redis_url: str, prefix: str, done: asyncio.Event) -> int:
    rng = random.Random(7)
    kills = 0
    while not done.is_set():
        process = start_relay(backend, redis_url, prefix)
        assert process.stdout is not None
        await asyncio.to_thread(process.stdout.readline)  # READY: killed while it works
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), timeout=rng.uniform(0.0, 0.4))
        await stop(process)
        kills += 1
    return kills


async def check_stream(redis: Redis, prefix: str, out: Emitted) -> None:
    for stream in "ab":
        got = [
            (fields["payload"]["txn"], fields["payload"]["n"])
            for _, fields in await entries(redis, prefix + stream)
        ]
        assert len(got) == len(set(got)), "an event was published twice"
        assert sorted(got) == sorted(out.committed.get(stream, [])), "lost or extra events"
        assert not set(got) & out.rolled_back
        # Commit order: a transaction that committed before another one began comes first.
        order = []
        for txn, _ in got:
            if not order or order[-1] != txn:
                order.append(txn)
        assert len(order) == len(set(order)), "a transaction's events were interleaved"
        later_finish = float("inf")
        for txn in reversed(order):
            assert out.started[txn] < later_finish, f"txn {txn} published after a later one"
            later_finish = min(later_finish, out.finished[txn])


async def crash_scenario(
    backend: Backend, db: Database, redis: Redis, redis_url: str, prefix: str, *, events: int
) -> int:
    done = asyncio.Event()
    kill_task = asyncio.create_task(killer(backend, redis_url, prefix, done))
    try:
        out = await emit_load(db, events, writers=8 if backend.concurrent_writers else 4, seed=1)
    finally:
        done.set()
        kills = await kill_task
    process = start_relay(backend, redis_url, prefix)  # restarted once more, left to finish
    try:
        expected = sum(len(v) for v in out.committed.values())
        async with asyncio.timeout(120):
            while sum([await redis.xlen(prefix + s) for s in "ab"]) < expected:
                await asyncio.sleep(0.05)
    finally:
        await stop(process)
    await check_stream(redis, prefix, out)
    return kills


class TestRelayCrash:
    async def test_relay_killed_at_random_points(
        self, backend: Backend, db: Database, redis: Redis, redis_url: str, prefix: str
    ) -> None:
        """500 events (10,000 in the slow variant), relay SIGKILLed: each committed event once."""
        kills = await crash_scenario(backend, db, redis, redis_url, prefix, events=500)
        assert kills >= 1

    @pytest.mark.slow
    async def test_relay_killed_at_random_points_full_size(
        self, backend: Backend, db: Database, redis: Redis, redis_url: str, prefix: str
    ) -> None:
        """10,000 events, relay SIGKILLed repeatedly: each committed event once, in order."""
        kills = await crash_scenario(backend, db, redis, redis_url, prefix, events=10_000)
        assert kills >= 3
