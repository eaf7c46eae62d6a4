"""A client killed between any two local steps loses nothing and applies nothing twice (T05-T07)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from sqlalchemy import text

from tests.integration.sync.conftest import ALICE, ClientFactory, server_rows
from tests.integration.sync.crash_child import KILLED
from tests.integration.sync.models import Task
from underlay import Database

ROOT = Path(__file__).resolve().parents[3]


async def run_child(path: Path, postgres_url: str, point: str) -> int:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tests.integration.sync.crash_child",
        str(path),
        postgres_url,
        point,
        cwd=ROOT,
    )
    return await process.wait()


async def ledger(database: Database) -> list[int]:
    async with database.engine.connect() as conn:
        rows = await conn.execute(
            text("SELECT mutation_id FROM underlay_sync_mutation_results ORDER BY 1")
        )
        return [r[0] for r in rows]


# Two points by default (a lost reply, a torn page); every point with UNDERLAY_SYNC_SLOW=1.
POINTS = [
    pytest.param("after_mark_inflight", marks=pytest.mark.slow, id="after_mark_inflight"),
    pytest.param("after_push_response", id="after_push_response"),
    pytest.param("mid_page_apply", id="mid_page_apply"),
    pytest.param("before_cursor_store", marks=pytest.mark.slow, id="before_cursor_store"),
    pytest.param("after_cursor_store", marks=pytest.mark.slow, id="after_cursor_store"),
]


@pytest.mark.parametrize("point", POINTS)
async def test_killed_client_reopens_and_converges(
    point: str, make_client: ClientFactory, server_db: Database
) -> None:
    """T05/T07: killed at a crash point, the reopened client resends and converges, once."""
    async with server_db.session() as session:
        session.add_all(Task(owner_id=1, title=f"server {i}") for i in range(3))
    client = await make_client("crashing")
    url = server_db.url.render_as_string(hide_password=False)
    assert await run_child(client.path, url, point) == KILLED
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
    make_client: ClientFactory, server_db: Database
) -> None:
    """T06/I5: the row and its outbox entry commit together or not at all."""
    client = await make_client("crashing")
    url = server_db.url.render_as_string(hide_password=False)
    assert await run_child(client.path, url, "before_local_commit") == KILLED
    await client.db.dispose()
    assert await client.rows() == {}
    assert await client.client.pending_count() == 0
    async with client.db.session() as session:
        session.add(Task(owner_id=1, title="after the crash"))
    assert await client.client.pending_count() == 1
