"""Sync over real HTTP: the FastAPI router under uvicorn, httpx clients, the example app."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI, Header, HTTPException

from tests.integration.sync.conftest import ALICE, User, server_rows, settle
from tests.integration.sync.models import SyncBase, Task
from underlay import Database, SQLAlchemyRepository
from underlay.sync import (
    ClientSchemaTooOldError,
    HttpTransport,
    SyncClient,
    SyncPermissionError,
    SyncRegistry,
    SyncServer,
    SyncTransportError,
)

ROOT = Path(__file__).resolve().parents[3]


class TaskRepository(SQLAlchemyRepository[Task]):
    pass


async def current_user(x_user: str | None = Header(default=None)) -> User:
    if x_user is None:
        raise HTTPException(401, "who are you?")
    return User(int(x_user))


@pytest.fixture
async def http_url(server: SyncServer) -> AsyncIterator[str]:
    """The sync router served by a real uvicorn on loopback."""
    app = FastAPI()
    app.include_router(server.fastapi_router(get_user=current_user), prefix="/sync")
    port = free_port()
    web = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    serving = asyncio.create_task(web.serve())
    while not web.started:
        if serving.done():
            serving.result()  # raises why it could not start
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}/sync"
    finally:
        web.should_exit = True
        await serving


async def http_client(
    tmp_path: Path, name: str, url: str, registry: SyncRegistry, user: str | None = "1"
) -> tuple[Database, SyncClient, HttpTransport]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / name}.db")
    await database.create_all(SyncBase.metadata)
    transport = HttpTransport(url, headers={"X-User": user} if user else None)
    client = SyncClient(database, registry, transport=transport, retries=2, backoff=0.001)
    await client.install()
    return database, client, transport


class TestHttp:
    async def test_two_clients_converge_over_http(
        self, http_url: str, tmp_path: Path, registry: SyncRegistry, server_db: Database
    ) -> None:
        """Offline edits of two clients meet on the server and reach both, over HTTP."""
        a_db, a, a_http = await http_client(tmp_path, "a", http_url, registry)
        b_db, b, b_http = await http_client(tmp_path, "b", http_url, registry)
        try:
            for database, title in ((a_db, "from a"), (b_db, "from b")):
                async with database.session() as session:
                    await TaskRepository(session).save(Task(owner_id=1, title=title))
            for client in (a, b, a):
                await settle(server_db)
                await client.sync()
            expected = await server_rows(server_db, ALICE)
            assert len(expected) == 2
            for database in (a_db, b_db):
                async with database.session() as session:
                    local = await TaskRepository(session).list_all()
                assert {t.title for t in local} == {"from a", "from b"}
        finally:
            for closing in (a_http, b_http):
                await closing.aclose()
            for database in (a_db, b_db):
                await database.dispose()

    async def test_http_errors_map_to_sync_errors(
        self, http_url: str, tmp_path: Path, registry: SyncRegistry, server: SyncServer
    ) -> None:
        """401 is a permission error, 426 a schema error, a dead server a transport error."""
        database, anonymous, transport = await http_client(
            tmp_path, "anon", http_url, registry, user=None
        )
        try:
            with pytest.raises(SyncPermissionError):
                await anonymous.sync()
            server.min_client_schema = 2
            old_db, old, old_http = await http_client(tmp_path, "old", http_url, registry)
            with pytest.raises(ClientSchemaTooOldError) as raised:
                await old.sync()
            assert raised.value.min_client_schema == 2
            await old_http.aclose()
            await old_db.dispose()
            dead = HttpTransport(f"http://127.0.0.1:{free_port()}/sync", timeout=2)
            offline = SyncClient(database, registry, transport=dead, retries=1)
            with pytest.raises(SyncTransportError):
                await offline.sync()
            await dead.aclose()
        finally:
            await transport.aclose()
            await database.dispose()


async def run(*args: str, env: dict[str, str] | None = None) -> str:
    """Run the example's command-line client in a process of its own; return its output."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, *args, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    assert process.returncode == 0, out
    return out.decode()


async def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run the example's command-line client in this process (same code, no interpreter start)."""
    from examples.sync import client

    capsys.readouterr()
    await client.main(client.parse(list(argv)))
    return capsys.readouterr().out


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_example_clients_edit_offline_and_converge(
    tmp_path: Path, server_schema: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The example: two CLI clients add notes offline, sync over HTTP and list the same notes.

    The server is the example app under a real uvicorn process; the clients talk HTTP to it.
    Most client commands run in this process through the CLI's own entry point; the last
    one runs as its own process, as a user would start it.
    """
    port = free_port()
    env = {**os.environ, "SYNC_DATABASE_URL": server_schema}
    url = f"http://127.0.0.1:{port}/sync"
    base = ["--user", "ada", "--url", url]
    a, b = ["--db", str(tmp_path / "a.db")], ["--db", str(tmp_path / "b.db")]
    # offline: the server is not even started yet
    assert "added" in await cli(capsys, *base, *a, "add", "from laptop")
    assert "added" in await cli(capsys, *base, *b, "add", "from phone")
    assert "added" in await cli(capsys, *base, *b, "add", "phone, deleted later")
    listed = await cli(capsys, *base, *b, "list")
    doomed = next(line.split()[1] for line in listed.splitlines() if "deleted later" in line)
    await cli(capsys, *base, *b, "delete", doomed)  # a create, then its delete: nothing to send
    web = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "uvicorn",
        "examples.sync.server:app",
        "--port",
        str(port),
        "--log-level",
        "warning",
        cwd=ROOT,
        env=env,
    )
    try:
        await wait_for_port(port, web)
        assert "pushed 1" in await cli(capsys, *base, *a, "sync")
        await settle_url(server_schema)
        assert "pushed 1" in await cli(capsys, *base, *b, "sync")
        await settle_url(server_schema)
        listed_a = await cli(capsys, *base, *a, "sync", "list")
        listed_b = await run("-m", "examples.sync.client", *base, *b, "list", env=env)
        notes_a = re.findall(r"^note .*$", listed_a, re.M)
        assert [n.split(" ", 2)[2] for n in notes_a] == ["from laptop", "from phone"]
        assert notes_a == re.findall(r"^note .*$", listed_b, re.M)
    finally:
        web.terminate()
        await web.wait()


async def wait_for_port(port: int, process: asyncio.subprocess.Process) -> None:
    async with asyncio.timeout(60):
        while True:
            assert process.returncode is None, "the example server exited"
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return


async def settle_url(url: str) -> None:
    database = Database(url)
    try:
        await settle(database)
    finally:
        await database.dispose()
