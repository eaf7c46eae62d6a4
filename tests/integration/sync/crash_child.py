"""A client process that dies (``os._exit``) at a chosen point; run by test_sync_crash.py.

``python -m tests.integration.sync.crash_child PATH URL POINT`` runs one client and dies at
POINT. ``python -m tests.integration.sync.crash_child --serve`` imports everything once and
then forks a fresh child per line ``PATH URL POINT`` read from stdin, answering each with the
child's exit status: a crash costs a fork, not an interpreter start and the imports.
"""

from __future__ import annotations

import asyncio
import os
import sys

from tests.integration.sync.conftest import ALICE, make_registry
from tests.integration.sync.models import Task
from underlay import Database
from underlay.sync import InProcessTransport, SyncClient, SyncServer

KILLED = 137


async def main(sqlite_path: str, postgres_url: str, point: str) -> None:
    registry = make_registry()
    server_db = Database(postgres_url)
    local = Database(f"sqlite+aiosqlite:///{sqlite_path}")

    def die(reached: str) -> None:
        if reached == point:
            os._exit(KILLED)  # like kill -9: no clean-up, no rollback, no flush

    client = SyncClient(
        local, registry, transport=InProcessTransport(SyncServer(server_db, registry), ALICE)
    )
    client.hook = die
    await client.install()
    async with local.session() as session:
        session.add(Task(owner_id=1, title="from the crashing client"))
        if point == "before_local_commit":
            await session.flush()  # the row and its outbox entry are written, not committed
            os._exit(KILLED)
    await client.sync()
    os._exit(0)


def serve() -> None:
    """Fork a child per request line; no event loop or thread exists here before a fork."""
    for line in sys.stdin:
        path, url, point = line.split()
        pid = os.fork()
        if pid == 0:
            try:
                asyncio.run(main(path, url, point))
            finally:
                os._exit(1)  # main() always exits itself; anything else is a failure
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["--serve"]:
        serve()
    else:
        asyncio.run(main(*sys.argv[1:4]))
