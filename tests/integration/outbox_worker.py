"""Subprocess entry points for the outbox fault tests: a relay and a consumer to SIGKILL.

``python -m tests.integration.outbox_worker relay DB_URL REDIS_URL PREFIX``
"""

from __future__ import annotations

import asyncio
import sys

from underlay import Database
from underlay.outbox import OutboxRelay


async def relay(db_url: str, redis_url: str, prefix: str) -> None:
    db = Database(db_url)
    async with OutboxRelay(db, redis_url, prefix=prefix, batch_size=37, poll_interval=0.01) as r:
        print("READY", flush=True)
        await r.run()


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "relay":
        asyncio.run(relay(*args))
