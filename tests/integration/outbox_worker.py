"""Subprocess entry points for the outbox fault tests: a relay and a consumer to SIGKILL.

``python -m tests.integration.outbox_worker relay DB_URL REDIS_URL PREFIX``
``python -m tests.integration.outbox_worker consume DB_URL REDIS_URL PREFIX STREAM NAME``

The consumer applies each message once through `effectively_once`, writing an ``effect``
row; for messages whose payload has ``"hang": true`` it prints ``HANDLING <id>`` (or
``COMMITTED <id>`` when ``"after_commit"`` is set, after the effect committed) and then
waits forever inside the handler, so the test can kill it mid-handler.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from sqlalchemy import text

from underlay import Database
from underlay.outbox import Message, OutboxRelay, StreamConsumer, effectively_once


async def relay(db_url: str, redis_url: str, prefix: str) -> None:
    db = Database(db_url)
    async with OutboxRelay(db, redis_url, prefix=prefix, batch_size=37, poll_interval=0.01) as r:
        print("READY", flush=True)
        await r.run()


async def consume(db_url: str, redis_url: str, prefix: str, stream: str, name: str) -> None:
    db = Database(db_url)

    async def apply(session: Any, message: Message) -> None:
        await session.execute(
            text("INSERT INTO effect (message_id, value) VALUES (:m, :v)"),
            {"m": message.id, "v": message.payload["n"]},
        )
        if message.payload.get("hang") and not message.payload.get("after_commit"):
            print(f"HANDLING {message.id}", flush=True)
            await asyncio.Event().wait()

    once = effectively_once(db, apply)

    async def handler(message: Message) -> None:
        await once(message)
        if message.payload.get("hang") and message.payload.get("after_commit"):
            print(f"COMMITTED {message.id}", flush=True)
            await asyncio.Event().wait()

    consumer = StreamConsumer(
        stream, handler, group="g", url=redis_url, prefix=prefix, consumer=name, block=0.05
    )
    async with consumer:
        print("READY", flush=True)
        await consumer.run()


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "relay":
        asyncio.run(relay(*args))
    else:
        asyncio.run(consume(*args))
