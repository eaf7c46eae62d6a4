"""Stream consumers: acks, retries, dead letters, concurrency, shutdown, effectively-once."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy import MetaData, text

from tests.conftest import Backend
from tests.integration.test_outbox import WORKER, worker_env
from underlay import Base, Database, tenant_context
from underlay.outbox import (
    Message,
    OutboxRelay,
    ProcessedMessage,
    StreamConsumer,
    effectively_once,
    emit,
    record_processed,
)
from underlay.tenancy import tenant_if_set

pytestmark = pytest.mark.redis


@pytest.fixture
def metadata() -> MetaData:
    """The outbox tables live on `underlay.Base.metadata`."""
    return Base.metadata


async def publish(db: Database, redis_url: str, prefix: str, payloads: list[Any]) -> None:
    async with db.session() as session:
        for payload in payloads:
            await emit(session, "jobs", payload)
    async with OutboxRelay(db, redis_url, prefix=prefix) as relay:
        assert await relay.run_once() == len(payloads)


def consumer(redis_url: str, prefix: str, handler: Any, **options: Any) -> StreamConsumer:
    options.setdefault("claim_idle", 0.05)
    options.setdefault("block", 0.05)
    return StreamConsumer("jobs", handler, group="g", url=redis_url, prefix=prefix, **options)


async def until(condition: Any, what: str, timeout: float = 20) -> None:
    """Wait (bounded) for an async condition that only time can bring, such as idleness."""
    async with asyncio.timeout(timeout):
        while not await condition():
            await asyncio.sleep(0.02)


class TestDelivery:
    async def test_handled_messages_are_acknowledged(
        self, db: Database, redis: Redis, redis_url: str, prefix: str
    ) -> None:
        """Each message reaches the handler once with its payload; all are acked."""
        await publish(db, redis_url, prefix, [{"n": 1}, {"n": 2}])
        seen: list[Message] = []

        async def handler(message: Message) -> None:
            seen.append(message)

        async with consumer(redis_url, prefix, handler) as c:
            assert await c.run_once() == 2
            assert await c.run_once() == 0
        assert [m.payload for m in seen] == [{"n": 1}, {"n": 2}]
        assert {m.deliveries for m in seen} == {1}
        assert (await redis.xpending(prefix + "jobs", "g"))["pending"] == 0

    async def test_tenant_travels_from_emit_to_the_handler(
        self, db: Database, redis: Redis, redis_url: str, prefix: str
    ) -> None:
        """An event emitted in a tenant's context is handled in that tenant's context."""
        async with db.session() as session:
            with tenant_context("acme"):
                await emit(session, "jobs", {"n": 1})
            with tenant_context("globex"):
                await emit(session, "jobs", {"n": 2})
            await emit(session, "jobs", {"n": 3})  # no tenant: none carried
        async with OutboxRelay(db, redis_url, prefix=prefix) as relay:
            assert await relay.run_once() == 3
        entries = await redis.xrange(prefix + "jobs")
        assert [fields.get(b"tenant") for _id, fields in entries] == [b"acme", b"globex", None]
        seen: list[tuple[Any, str | None, str | None]] = []

        async def handler(message: Message) -> None:
            seen.append((message.payload["n"], message.tenant, tenant_if_set()))

        async with consumer(redis_url, prefix, handler) as c:
            assert await c.run_once() == 3
        assert sorted(seen) == [(1, "acme", "acme"), (2, "globex", "globex"), (3, None, None)]

    async def test_failed_message_is_retried_then_acknowledged(
        self, db: Database, redis: Redis, redis_url: str, prefix: str
    ) -> None:
        """A handler that raises leaves the message pending; it is redelivered and acked."""
        await publish(db, redis_url, prefix, [{"n": 1}])
        deliveries: list[int] = []

        async def handler(message: Message) -> None:
            deliveries.append(message.deliveries)
            if len(deliveries) == 1:
                raise RuntimeError("transient")

        async with consumer(redis_url, prefix, handler) as c:
            await c.run_once()
            assert (await redis.xpending(prefix + "jobs", "g"))["pending"] == 1

            async def retried() -> bool:
                await c.run_once()
                return len(deliveries) == 2

            await until(retried, "the retry")
        assert deliveries == [1, 2]
        assert (await redis.xpending(prefix + "jobs", "g"))["pending"] == 0

    async def test_poison_message_goes_to_the_dead_letter_stream(
        self, db: Database, redis: Redis, redis_url: str, prefix: str
    ) -> None:
        """A message failing max_deliveries times is moved to the dead-letter stream."""
        await publish(db, redis_url, prefix, [{"n": 1}, {"n": 2}])
        calls: list[int] = []

        async def handler(message: Message) -> None:
            if message.payload["n"] == 1:
                calls.append(message.deliveries)
                raise ValueError("poison")

        async with consumer(redis_url, prefix, handler, max_deliveries=3) as c:

            async def dead() -> bool:
                await c.run_once()
                return await redis.xlen(prefix + "jobs:dead") > 0

            await until(dead, "the dead letter")
        assert calls == [1, 2, 3]
        [(_, fields)] = await redis.xrange(prefix + "jobs:dead")
        assert fields[b"deliveries"] == b"3"
        assert b"poison" in fields[b"error"]
        assert fields[b"payload"] == b'{"n":1}'
        assert (await redis.xpending(prefix + "jobs", "g"))["pending"] == 0

    async def test_unreadable_entry_is_dead_lettered_at_once(
        self, redis: Redis, redis_url: str, prefix: str
    ) -> None:
        """An entry that is not a JSON payload never reaches the handler."""
        await redis.xadd(prefix + "jobs", {b"payload": b"{not json"})
        called: list[Message] = []

        async def handler(message: Message) -> None:
            called.append(message)

        async with consumer(redis_url, prefix, handler) as c:
            await c.run_once()
        assert called == []
        assert await redis.xlen(prefix + "jobs:dead") == 1


class TestConcurrency:
    async def test_at_most_concurrency_handlers_run(
        self, db: Database, redis_url: str, prefix: str
    ) -> None:
        """With concurrency=3, ten messages never run more than three handlers at once."""
        await publish(db, redis_url, prefix, [{"n": n} for n in range(10)])
        running = 0
        peak = 0
        three_running = asyncio.Event()
        release = asyncio.Event()
        done: list[int] = []

        async def handler(message: Message) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            if running == 3:
                three_running.set()
            await release.wait()
            running -= 1
            done.append(message.payload["n"])

        async with consumer(redis_url, prefix, handler, concurrency=3, claim_idle=30) as c:
            task = asyncio.create_task(c.run())
            await three_running.wait()
            release.set()

            async def all_done() -> bool:
                return len(done) == 10

            await until(all_done, "all handlers")
            c.stop()
            await task
        assert peak == 3
        assert sorted(done) == list(range(10))

    async def test_stop_waits_for_running_handlers(
        self, db: Database, redis: Redis, redis_url: str, prefix: str
    ) -> None:
        """`stop` lets a running handler finish and ack before `run` returns."""
        await publish(db, redis_url, prefix, [{"n": 1}])
        started = asyncio.Event()
        release = asyncio.Event()

        async def handler(message: Message) -> None:
            started.set()
            await release.wait()

        async with consumer(redis_url, prefix, handler) as c:
            task = asyncio.create_task(c.run())
            await started.wait()
            c.stop()
            await asyncio.sleep(0)
            assert not task.done()
            release.set()
            await task
        assert (await redis.xpending(prefix + "jobs", "g"))["pending"] == 0


class TestEffectivelyOnce:
    async def test_record_processed_is_true_once(self, db: Database) -> None:
        """The second record of one message in the same group says it was applied already."""
        message = Message("jobs", "g", "1-0", {}, None, 1)
        async with db.session() as session:
            assert await record_processed(session, message) is True
        async with db.session() as session:
            assert await record_processed(session, message) is False
            other = Message("jobs", "other-group", "1-0", {}, None, 1)
            assert await record_processed(session, other) is True

    async def test_rolled_back_record_is_forgotten(self, db: Database) -> None:
        """A handler that fails rolls its record back, so the redelivery applies it."""
        message = Message("jobs", "g", "7-0", {}, None, 1)

        async def failing(session: Any, message: Message) -> None:
            raise RuntimeError("boom")

        with pytest.raises(RuntimeError):
            await effectively_once(db, failing)(message)
        applied: list[str] = []

        async def apply(session: Any, message: Message) -> None:
            applied.append(message.id)

        await effectively_once(db, apply)(message)
        await effectively_once(db, apply)(message)
        assert applied == ["7-0"]


async def make_effect_table(db: Database) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE effect (message_id VARCHAR(64), value INTEGER)"))


async def effects(db: Database) -> dict[str, int]:
    async with db.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT message_id, count(*) FROM effect GROUP BY message_id")
        )
        return {row[0]: row[1] for row in rows}


def start_consumer(backend: Backend, redis_url: str, prefix: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", WORKER, "consume", backend.url, redis_url, prefix, "jobs", "a"],
        stdout=subprocess.PIPE,
        env=worker_env(),
    )


class TestConsumerKilled:
    @pytest.mark.parametrize("after_commit", [False, True], ids=["before-commit", "after-commit"])
    async def test_message_redelivered_effect_applied_once(
        self,
        backend: Backend,
        db: Database,
        redis: Redis,
        redis_url: str,
        prefix: str,
        *,
        after_commit: bool,
    ) -> None:
        """A consumer SIGKILLed mid-handler: another gets the message; each effect applied once."""
        await make_effect_table(db)
        payloads = [{"n": n} for n in range(5)]
        payloads[2] = {"n": 2, "hang": True, "after_commit": after_commit}
        await publish(db, redis_url, prefix, payloads)
        process = start_consumer(backend, redis_url, prefix)
        try:
            assert process.stdout is not None
            lines = []
            while not lines or not lines[-1].startswith((b"HANDLING", b"COMMITTED")):
                line = await asyncio.to_thread(process.stdout.readline)
                assert line, "the consumer exited early"
                lines.append(line)
        finally:
            process.send_signal(signal.SIGKILL)
            await asyncio.to_thread(process.wait)
            if process.stdout is not None:
                process.stdout.close()
        stuck = lines[-1].split()[1].decode()
        assert (await redis.xpending(prefix + "jobs", "g"))["pending"] >= 1

        async def apply(session: Any, message: Message) -> None:
            await session.execute(
                text("INSERT INTO effect (message_id, value) VALUES (:m, :v)"),
                {"m": message.id, "v": message.payload["n"]},
            )

        redelivered: list[Message] = []
        once = effectively_once(db, apply)

        async def handler(message: Message) -> None:
            redelivered.append(message)
            await once(message)

        async with consumer(redis_url, prefix, handler, consumer="b") as c:

            async def drained() -> bool:
                await c.run_once()
                return (await redis.xpending(prefix + "jobs", "g"))["pending"] == 0

            await until(drained, "the redelivery")
        assert stuck in {m.id for m in redelivered if m.deliveries > 1}
        counts = await effects(db)
        assert len(counts) == 5
        assert set(counts.values()) == {1}
        async with db.session() as session:
            recorded = (
                await session.execute(text("SELECT count(*) FROM underlay_processed_message"))
            ).scalar_one()
        assert recorded == 5
        assert ProcessedMessage.__tablename__ == "underlay_processed_message"
