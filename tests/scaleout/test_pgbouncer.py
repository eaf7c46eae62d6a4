"""PgBouncer in transaction mode: concurrent units of work from two processes all succeed."""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from tests import services
from underlay import Database

pytestmark = pytest.mark.scaleout

# One process: 20 tasks x 25 units of work, each a session with a few differently shaped
# statements (new prepared statements per shape) and a write; prints how many succeeded.
_WORKER = textwrap.dedent(
    """
    import asyncio, json, sys
    from sqlalchemy import text
    from underlay import Database

    async def main(url, mode):
        options = {"pgbouncer": True} if mode == "pgbouncer" else {}
        db = Database(url, pool_size=5, max_overflow=5, **options)
        ok = 0
        errors = []

        async def unit(task, number):
            nonlocal ok
            try:
                async with db.session() as session:
                    await session.execute(
                        text("SELECT CAST(:a AS int) + CAST(:b AS int)"), {"a": task, "b": number}
                    )
                    await session.execute(text(f"SELECT {number % 5} AS shape_{number % 5}"))
                    await session.execute(
                        text("INSERT INTO units (task, number) VALUES (:t, :n)"),
                        {"t": task, "n": number},
                    )
                ok += 1
            except Exception as exc:
                errors.append(type(exc).__name__)

        async def task(task_number):
            for number in range(25):
                await unit(task_number, number)

        await asyncio.gather(*(task(n) for n in range(20)))
        await db.dispose()
        print(json.dumps({"ok": ok, "errors": sorted(set(errors))}))

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


@pytest.fixture
async def bouncer_url(pgbouncer: dict[str, str], pg_pair: dict[str, str]) -> AsyncIterator[str]:
    """A fresh database on the private primary, reached through PgBouncer."""
    name = f"bouncer_{uuid.uuid4().hex[:10]}"
    primary = pg_pair["SCALEOUT_PRIMARY_URL"]
    await services._admin(primary, f'CREATE DATABASE "{name}"')
    await services._admin(
        make_url(primary).set(database=name).render_as_string(hide_password=False),
        "CREATE TABLE units (id serial PRIMARY KEY, task int NOT NULL, number int NOT NULL)",
    )
    try:
        yield (
            make_url(pgbouncer["SCALEOUT_PGBOUNCER_URL"])
            .set(database=name)
            .render_as_string(hide_password=False)
        )
    finally:
        await services._admin(primary, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _run_two(url: str, mode: str) -> list[dict[str, object]]:
    async def one() -> dict[str, object]:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _WORKER,
            url,
            mode,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        assert process.returncode == 0, err.decode()
        result: dict[str, object] = json.loads(out.decode().strip().splitlines()[-1])
        return result

    return list(await asyncio.gather(one(), one()))


class TestTransactionPooling:
    async def test_two_processes_all_units_succeed(self, bouncer_url: str) -> None:
        """pgbouncer=True: 500 of 500 units in each of two concurrent processes."""
        results = await _run_two(bouncer_url, "pgbouncer")
        assert [result["ok"] for result in results] == [500, 500], results

    async def test_url_settings_alone_work(self, bouncer_url: str) -> None:
        """A URL carrying both statement-cache settings needs no pgbouncer flag."""
        url = bouncer_url + "?prepared_statement_cache_size=0&statement_cache_size=0"
        database = Database(url)
        try:
            assert database.pgbouncer is True
            async with database.session() as session:
                for _ in range(3):
                    await session.execute(text("INSERT INTO units (task, number) VALUES (1, 1)"))
        finally:
            await database.dispose()

    async def test_defaults_fail_control(self, bouncer_url: str) -> None:
        """The control: asyncpg's defaults through PgBouncer lose units of work."""
        results = await _run_two(bouncer_url, "defaults")
        assert sum(int(str(result["ok"])) for result in results) < 1000, results
