"""A client killed between any two local steps loses nothing and applies nothing twice (T05-T07).

Every crash point of `HOOK_POINTS` is a real process death (``os._exit`` in a forked child,
no clean-up), then the file is reopened by this process.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.integration.sync.conftest import ALICE, ClientFactory, server_rows
from tests.integration.sync.crash_child import KILLED
from tests.integration.sync.models import Task
from underlay import Database
from underlay.sync._client import HOOK_POINTS

ROOT = Path(__file__).resolve().parents[3]


class Forker:
    """A process that has imported the client once and forks one per crash (see crash_child)."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.sync.crash_child", "--serve"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, path: Path, postgres_url: str, point: str) -> int:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(f"{path} {postgres_url} {point}\n")
        self.process.stdin.flush()
        answer = self.process.stdout.readline()
        assert answer, "the crash server died"
        return int(answer)

    def close(self) -> None:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.close()  # the server's loop ends at end of input
        self.process.wait(timeout=60)
        self.process.stdout.close()


@pytest.fixture(scope="module")
def forker() -> Iterator[Forker]:
    started = Forker()
    try:
        yield started
    finally:
        started.close()


async def run_child(forker: Forker, path: Path, postgres_url: str, point: str) -> int:
    """Run a client in a forked process that dies at ``point``; return its exit status."""
    return await asyncio.to_thread(forker.run, path, postgres_url, point)


async def ledger(database: Database) -> list[int]:
    async with database.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT mutation_id FROM underlay_sync_mutation_results ORDER BY 1")
        )
        return [r[0] for r in rows]


@pytest.mark.parametrize("point", HOOK_POINTS)
async def test_killed_client_reopens_and_converges(
    point: str, make_client: ClientFactory, server_db: Database, forker: Forker
) -> None:
    """T05/T07: killed at a crash point, the reopened client resends and converges, once."""
    async with server_db.session() as session:
        session.add_all(Task(owner_id=1, title=f"server {i}") for i in range(3))
    client = await make_client("crashing")
    url = server_db.url.render_as_string(hide_password=False)
    assert await run_child(forker, client.path, url, point) == KILLED
    await client.db.dispose()  # reopen: a new engine on the file the dead process left
    report = await client.sync()
    assert report.rejected == []
    rows = await client.rows()
    assert rows == await server_rows(server_db, ALICE)
    assert len(rows) == 4
    assert await ledger(server_db) == [1]  # one mutation, applied once
    assert await client.client.pending_count() == 0
    async with server_db.engine.connect() as conn:
        versions = (await conn.execute(text("SELECT DISTINCT version FROM sync_task"))).all()
    assert versions == [(1,)]


async def test_killed_before_the_local_commit_leaves_neither_row_nor_entry(
    make_client: ClientFactory, server_db: Database, forker: Forker
) -> None:
    """T06/I5: the row and its outbox entry commit together or not at all."""
    client = await make_client("crashing")
    url = server_db.url.render_as_string(hide_password=False)
    assert await run_child(forker, client.path, url, "before_local_commit") == KILLED
    await client.db.dispose()
    assert await client.rows() == {}
    assert await client.client.pending_count() == 0
    async with client.db.session() as session:
        session.add(Task(owner_id=1, title="after the crash"))
    assert await client.client.pending_count() == 1
