"""The transactional outbox: emit in a transaction, relay to Redis, consume exactly once."""

import asyncio
import os
import tempfile
import uuid
from pathlib import Path

from redis.asyncio import Redis
from sqlalchemy import String, func, select
from sqlalchemy.orm import Mapped, mapped_column

from underlay import Base, Database
from underlay.outbox import Message, OutboxRelay, StreamConsumer, effectively_once, emit

REDIS_URL = os.environ.get("UNDERLAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = f"outbox-example-{uuid.uuid4().hex}:"  # keys of this run only


class Order(Base):
    __tablename__ = "orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    item: Mapped[str] = mapped_column(String(50))


class Invoice(Base):
    __tablename__ = "invoices"
    id: Mapped[int] = mapped_column(primary_key=True)
    order_id: Mapped[int]


async def main() -> None:
    path = Path(tempfile.mkdtemp()) / "shop.db"
    async with Database(f"sqlite+aiosqlite:///{path}") as db:
        await db.create_all(Base.metadata)  # the outbox tables come with underlay.outbox

        # 1. The order and its event commit together, or neither does.
        async with db.session() as session:
            order = Order(item="book")
            session.add(order)
            await session.flush()
            await emit(session, "orders", {"id": order.id, "item": order.item}, key=str(order.id))

        # 2. The relay publishes committed events to the Redis stream PREFIX + "orders".
        async with OutboxRelay(db, REDIS_URL, prefix=PREFIX) as relay:
            published = await relay.run_once()
        print("published", published)

        # 3. A consumer group applies each message once: the message id is recorded in the
        #    same transaction as the invoice, so a redelivery changes nothing.
        async def bill(session, message: Message) -> None:
            session.add(Invoice(order_id=message.payload["id"]))

        handler = effectively_once(db, bill)
        async with StreamConsumer(
            "orders", handler, group="billing", url=REDIS_URL, prefix=PREFIX
        ) as consumer:
            handled = await consumer.run_once()
        print("handled", handled)

        async with db.session() as session:
            invoices = await session.scalar(select(func.count()).select_from(Invoice))
        assert (published, handled, invoices) == (1, 1, 1)

    async with Redis.from_url(REDIS_URL) as redis:
        keys = [key async for key in redis.scan_iter(match=f"{PREFIX}*")]
        await redis.delete(*keys)


asyncio.run(main())
