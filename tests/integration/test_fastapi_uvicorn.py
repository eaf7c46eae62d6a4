"""underlay.fastapi under a real uvicorn process, driven over TCP by httpx.

Every failed commit must reach the client as a 4xx/5xx problem, and the database must hold
exactly what the 2xx answers promised. The old ``Depends(db.get_session)`` wiring is served
too, as a regression test showing why the dependency exists.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import MetaData, func, select

from tests.conftest import Backend
from tests.integration.web_app import Account, WebBase
from underlay import Database

ROOT = Path(__file__).resolve().parents[2]
PORTS = range(8100, 8110)
PROBLEM = "application/problem+json"


@pytest.fixture
def metadata() -> MetaData:
    return WebBase.metadata


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def serve(url: str, *, mode: str = "safe") -> Iterator[str]:
    """Run the test app in a uvicorn process on a free loopback port; yield its base URL."""
    env = {
        **os.environ,
        "UNDERLAY_WEB_URL": url,
        "UNDERLAY_WEB_MODE": mode,
        "PYTHONPATH": str(ROOT),
    }
    for port in PORTS:
        if not _port_free(port):
            continue
        with tempfile.TemporaryFile() as log:
            process = subprocess.Popen(
                [
                    sys.executable, "-m", "uvicorn", "tests.integration.web_app:create_app",
                    "--factory", "--host", "127.0.0.1", "--port", str(port),
                    "--log-level", "warning", "--no-access-log",
                ],
                cwd=ROOT, env=env, stdout=log, stderr=log,
            )  # fmt: skip
            try:
                base = f"http://127.0.0.1:{port}"
                if _wait_ready(process, base):
                    yield base
                    return
                log.seek(0)
                output = log.read().decode(errors="replace")
                if "address already in use" not in output:
                    raise RuntimeError(f"uvicorn did not start:\n{output}")
            finally:
                process.terminate()
                try:
                    process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    raise RuntimeError(f"no free port in {PORTS}")


def _wait_ready(process: subprocess.Popen[bytes], base: str) -> bool:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            response = httpx.get(f"{base}/health", timeout=2)
            # another xdist worker's server may hold the port our process is failing to bind
            if response.status_code == 200 and response.json()["pid"] == process.pid:
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    return False


async def _seed(db: Database, count: int) -> None:
    """Accounts 1 .. count (ids from the table's own key generator, as the app's are)."""
    async with db.session() as session:
        for i in range(1, count + 1):
            session.add(Account(email=f"seed{i}@x.io"))
            await session.flush()


async def _accounts(db: Database) -> dict[str, Account]:
    async with db.session() as session:
        rows = (await session.execute(select(Account))).scalars().all()
    return {row.email: row for row in rows}


def _assert_problem(response: httpx.Response, status: int, code: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    assert {"type", "title", "status"} <= body.keys()
    if code is not None:
        assert body["code"] == code
    text = response.text.lower()
    for leak in ("select", "insert", "update ", "web_accounts", "sqlalchemy", "asyncpg", "sqlite"):
        assert leak not in text, f"{leak!r} leaked into {response.text}"


async def _reads_after_patches(base: str, *, id: int, count: int) -> int:
    """PATCH then GET ``count`` times; return how many GETs showed the PATCH's value."""
    fresh = 0
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        etag = (await client.get(f"/accounts/{id}")).headers["etag"]
        for step in range(count):
            patch = await client.patch(
                f"/accounts/{id}", json={"name": f"n{step}"}, headers={"If-Match": etag}
            )
            assert patch.status_code == 200, patch.text
            etag = patch.headers["etag"]
            read = await client.get(f"/accounts/{id}")
            fresh += read.json()["name"] == f"n{step}" and read.headers["etag"] == etag
    return fresh


class TestErrorsUnderUvicorn:
    async def test_failures_become_problems_and_nothing_more_is_stored(
        self, db: Database, backend: Backend
    ) -> None:
        """Duplicate, stale / missing If-Match, serialization failure, pool timeout, killed
        connection (PostgreSQL): each a problem answer, and none of them stored anything."""
        await _seed(db, 2)
        with serve(backend.url) as base:
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                assert (await client.post("/accounts", json={"email": "a@x.io"})).status_code == 201
                duplicate = await client.post("/accounts", json={"email": "a@x.io"})
                _assert_problem(duplicate, 409, "duplicate")
                assert duplicate.json()["instance"] == "/accounts"

                first = await client.patch(
                    "/accounts/1", json={"name": "one"}, headers={"If-Match": 'W/"1"'}
                )
                assert (first.status_code, first.headers["etag"]) == (200, 'W/"2"')
                stale = await client.patch(
                    "/accounts/1", json={"name": "two"}, headers={"If-Match": 'W/"1"'}
                )
                _assert_problem(stale, 412, "stale-version")
                # the unit-of-work route: the version check fails inside the commit
                stale_at_commit = await client.patch(
                    "/accounts/1/orm", json={"name": "three"}, headers={"If-Match": 'W/"1"'}
                )
                _assert_problem(stale_at_commit, 412, "stale-version")
                _assert_problem(await client.patch("/accounts/1", json={"name": "x"}), 428)
                _assert_problem(
                    await client.delete("/accounts/1", headers={"If-Match": 'W/"1"'}), 412
                )
                _assert_problem(await client.get("/accounts/99"), 404, "not-found")

                race = await client.post("/accounts/2/race")
                _assert_problem(race, 409, "serialization-failure")

                timeout = await client.get("/pool-timeout")
                _assert_problem(timeout, 503, "database-unavailable")
                assert timeout.headers["retry-after"] == "1"

                invalid = await client.get("/accounts", params={"order_by": "secret"})
                _assert_problem(invalid, 422, "validation")
                assert invalid.json()["errors"][0]["loc"] == ["query", "order_by"]
                bad_cursor = await client.get("/accounts", params={"after": "garbage"})
                _assert_problem(bad_cursor, 400, "invalid-query")

                if backend.is_postgres:
                    # the session's backend is terminated between its flush and the commit
                    killed = await client.post("/accounts/2/killed")
                    _assert_problem(killed, 503, "database-unavailable")
                    assert killed.headers["retry-after"] == "1"
                    # the pool replaced the dead connection: the app keeps working
                    again = await client.get("/accounts/2")
                    assert (again.status_code, again.json()["balance"]) == (200, 0)

        rows = await _accounts(db)
        assert sorted(rows) == ["a@x.io", "seed1@x.io", "seed2@x.io"]
        assert (rows["seed1@x.io"].name, rows["seed1@x.io"].version) == ("one", 2)
        assert (rows["seed2@x.io"].name, rows["seed2@x.io"].balance) == ("won the race", 0)

    async def test_database_holds_what_2xx_promised(self, db: Database, backend: Backend) -> None:
        """Several concurrent clients: every 2xx write is stored, nothing else is. Then 100
        cached GETs, each right after a successful PATCH, all return the new value."""
        await _seed(db, 5)  # 1-4 for the workload, 5 for the reads after patches
        created: list[str] = []
        patched: dict[int, list[tuple[int, str]]] = {i: [] for i in range(1, 5)}
        statuses: list[int] = []

        async def client_run(number: int, base: str) -> None:
            rng = random.Random(number)
            async with httpx.AsyncClient(base_url=base, timeout=60) as client:
                for step in range(50):
                    if rng.random() < 0.4:
                        email = f"user{rng.randrange(25)}@x.io"
                        answer = await client.post("/accounts", json={"email": email})
                        statuses.append(answer.status_code)
                        if answer.is_success:
                            created.append(email)
                        continue
                    id = rng.randrange(1, 5)
                    current = await client.get(f"/accounts/{id}")
                    name = f"c{number}s{step}"
                    answer = await client.patch(
                        f"/accounts/{id}",
                        json={"name": name},
                        headers={"If-Match": current.headers["etag"]},
                    )
                    statuses.append(answer.status_code)
                    if answer.is_success:
                        patched[id].append((answer.json()["version"], name))
                    else:
                        assert answer.headers["content-type"] == PROBLEM

        with serve(backend.url) as base:
            await asyncio.gather(*(client_run(n, base) for n in range(4)))
            fresh = await _reads_after_patches(base, id=5, count=100)
        assert fresh == 100

        assert len(statuses) == 200
        assert set(statuses) <= {200, 201, 409, 412}, sorted(set(statuses))
        assert 409 in statuses  # the email pool is small enough to collide
        rows = await _accounts(db)
        assert len(created) == len(set(created))
        assert sorted(email for email in rows if email.startswith("user")) == sorted(created)
        for id, successes in patched.items():
            row = rows[f"seed{id}@x.io"]
            versions = sorted(version for version, _ in successes)
            assert versions == list(range(2, len(successes) + 2))
            assert row.version == len(successes) + 1
            if successes:
                assert row.name == max(successes)[1]


class TestCursorsAcrossProcesses:
    async def test_cursor_from_one_worker_works_in_another(
        self, db: Database, backend: Backend, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A next-page cursor minted by one uvicorn process is accepted by another."""
        monkeypatch.delenv("UNDERLAY_CURSOR_SECRET", raising=False)
        await _seed(db, 5)
        with serve(backend.url) as first, serve(backend.url) as second:
            async with httpx.AsyncClient(timeout=30) as client:
                page1 = (
                    await client.get(f"{first}/accounts", params={"limit": 2, "order_by": "email"})
                ).json()
                page2 = await client.get(
                    f"{second}/accounts",
                    params={"limit": 2, "order_by": "email", "after": page1["next"]},
                )
                assert page2.status_code == 200, page2.text
                assert page2.json()["pid"] != page1["pid"]
                page3 = await client.get(
                    f"{first}/accounts",
                    params={"limit": 2, "order_by": "email", "after": page2.json()["next"]},
                )
        emails = page1["emails"] + page2.json()["emails"] + page3.json()["emails"]
        assert emails == [f"seed{i}@x.io" for i in range(1, 6)]


class TestLegacyGetSession:
    async def test_old_pattern_answers_2xx_for_a_lost_write(
        self, db: Database, backend: Backend
    ) -> None:
        """Regression: with Depends(db.get_session) the commit runs after the response."""
        with serve(backend.url, mode="legacy") as base:
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                assert (await client.post("/accounts", json={"email": "a@x.io"})).status_code == 201
                duplicate = await client.post("/accounts", json={"email": "a@x.io"})
        # leaving serve() stops uvicorn, which lets the request (and its failed commit) finish
        # first; a request after the duplicate on the same connection would race the server
        # closing it when the commit fails
        assert duplicate.status_code == 201  # the client was told the row was stored
        async with db.session() as session:
            count = await session.scalar(select(func.count()).select_from(Account))
        assert count == 1  # but it was not
