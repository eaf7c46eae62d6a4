"""A Hypothesis state machine: random local and server writes, syncs, faults and crashes.

Every run ends with each client equal to the server within its scope, every outbox entry
answered by exactly one ledger entry, and nothing left in any outbox.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from sqlalchemy import text

from tests.integration.sync.conftest import ALICE, make_registry, server_rows, settle
from tests.integration.sync.models import SyncBase, Task
from underlay import Database, SQLAlchemyRepository
from underlay.sync import InProcessTransport, SyncClient, SyncServer, SyncTransportError
from underlay.sync.testing import FaultyTransport

SLOW = os.environ.get("UNDERLAY_SYNC_SLOW") == "1"
CRASH_POINTS = [
    "after_mark_inflight",
    "after_push_response",
    "mid_page_apply",
    "before_cursor_store",
]
FAULTS = ["drop_request", "drop_response", "duplicate", "error_5xx"]
titles = st.sampled_from(["a", "b", "c", "d"])


class TaskRepository(SQLAlchemyRepository[Task]):
    pass


class CrashError(Exception):
    """Stands in for the process dying: the local transaction in progress rolls back."""


class SyncMachine(RuleBasedStateMachine):
    url: str = ""

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.tmp = tempfile.TemporaryDirectory()
        self.registry = make_registry(policy="lww")
        self.server_db = Database(self.url, pool_size=3, max_overflow=2)
        self.server = SyncServer(self.server_db, self.registry)
        self.crash_at: dict[int, str | None] = {0: None, 1: None}
        self.pushed = {0: 0, 1: 0}
        self.dbs: list[Database] = []
        self.clients: list[SyncClient] = []
        self.transports: list[FaultyTransport] = []
        self.run(self._setup())

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    async def _setup(self) -> None:
        async with self.server_db.engine.begin() as conn:
            await conn.execute(
                text(
                    "TRUNCATE sync_task, sync_project, underlay_sync_clients,"
                    " underlay_sync_mutation_results, underlay_sync_conflicts"
                )
            )
        for index in range(2):
            database = Database(f"sqlite+aiosqlite:///{Path(self.tmp.name) / f'c{index}.db'}")
            await database.create_all(SyncBase.metadata)
            self.dbs.append(database)
            self.clients.append(await self._open(index))

    async def _open(self, index: int) -> SyncClient:
        def hook(point: str) -> None:
            if self.crash_at[index] == point:
                self.crash_at[index] = None
                raise CrashError(point)

        transport = FaultyTransport(InProcessTransport(self.server, ALICE))
        if len(self.transports) > index:
            self.transports[index] = transport
        else:
            self.transports.append(transport)
        client = SyncClient(
            self.dbs[index], self.registry, transport=transport, hook=hook, backoff=0.0
        )
        await client.install()
        return client

    async def _ids(self, database: Database) -> list[uuid.UUID]:
        async with database.session() as session:
            return sorted(t.id for t in await TaskRepository(session).list_all())

    # -- rules ------------------------------------------------------------------------------

    @rule(index=st.integers(0, 1), title=titles)
    def local_create(self, index: int, title: str) -> None:
        async def go() -> None:
            async with self.dbs[index].session() as session:
                session.add(Task(owner_id=1, title=title))

        self.run(go())

    @rule(index=st.integers(0, 1), pick=st.integers(0, 5), title=titles)
    def local_edit(self, index: int, pick: int, title: str) -> None:
        async def go() -> None:
            ids = await self._ids(self.dbs[index])
            if ids:
                async with self.dbs[index].session() as session:
                    await TaskRepository(session).update(ids[pick % len(ids)], {"title": title})

        self.run(go())

    @rule(index=st.integers(0, 1), pick=st.integers(0, 5))
    def local_delete(self, index: int, pick: int) -> None:
        async def go() -> None:
            ids = await self._ids(self.dbs[index])
            if ids:
                async with self.dbs[index].session() as session:
                    await TaskRepository(session).delete(ids[pick % len(ids)])

        self.run(go())

    @rule(pick=st.integers(0, 5), title=titles, remove=st.booleans())
    def server_write(self, pick: int, title: str, remove: bool) -> None:
        async def go() -> None:
            ids = await self._ids(self.server_db)
            async with self.server_db.session() as session:
                repository = TaskRepository(session)
                if not ids:
                    session.add(Task(owner_id=1, title=title))
                elif remove:
                    await repository.delete(ids[pick % len(ids)])
                else:
                    await repository.update(ids[pick % len(ids)], {"title": title})

        self.run(go())

    @rule(
        index=st.integers(0, 1),
        fault=st.sampled_from([None, *FAULTS]),
        operation=st.sampled_from(["push", "pull"]),
    )
    def sync(self, index: int, fault: str | None, operation: str) -> None:
        if fault is not None:
            self.transports[index].fail_next(operation, fault)  # type: ignore[arg-type]
        try:
            report = self.run(self.clients[index].sync())
        except (SyncTransportError, CrashError):
            return
        self.pushed[index] += report.pushed

    @rule(index=st.integers(0, 1), point=st.sampled_from(CRASH_POINTS))
    def crash_during_sync_and_reopen(self, index: int, point: str) -> None:
        self.crash_at[index] = point

        async def go() -> None:
            try:
                report = await self.clients[index].sync()
                self.pushed[index] += report.pushed
            except CrashError:
                pass
            self.crash_at[index] = None
            await self.dbs[index].dispose()
            self.clients[index] = await self._open(index)

        self.run(go())

    @invariant()
    def outbox_never_holds_two_pending_entries_for_a_row(self) -> None:
        async def go() -> None:
            for database in self.dbs:
                async with database.engine.connect() as conn:
                    doubled = (
                        await conn.execute(
                            text(
                                "SELECT count(*) FROM (SELECT 1 FROM underlay_sync_outbox"
                                " WHERE state = 'pending' GROUP BY table_name, row_id"
                                " HAVING count(*) > 1)"
                            )
                        )
                    ).scalar_one()
                    await conn.rollback()
                assert doubled == 0

        self.run(go())

    def teardown(self) -> None:
        try:
            self.run(self._converge())
        finally:
            for database in self.dbs:
                self.run(database.dispose())
            self.run(self.server_db.dispose())
            self.loop.close()
            self.tmp.cleanup()

    async def _converge(self) -> None:
        for _ in range(2):
            for index, client in enumerate(self.clients):
                await settle(self.server_db)
                self.pushed[index] += (await client.sync()).pushed
        expected = await server_rows(self.server_db, ALICE)
        for index, database in enumerate(self.dbs):
            rows = await _rows(database)
            assert rows == expected, f"client {index} differs from the server"
            assert await self.clients[index].pending_count() == 0
        async with self.server_db.engine.connect() as conn:
            ledger = dict(
                (
                    await conn.execute(
                        text(
                            "SELECT client_id::text, count(*) FROM underlay_sync_mutation_results"
                            " GROUP BY client_id"
                        )
                    )
                ).all()
            )
        for index, client in enumerate(self.clients):
            # every outbox entry was answered once: one ledger row per acknowledged entry
            assert ledger.get(str(client.client_id), 0) == self.pushed[index]


async def _rows(database: Database) -> dict[Any, dict[str, Any]]:
    from tests.integration.sync.conftest import live_rows

    return await live_rows(database)


def test_state_machine(server_schema: str) -> None:
    """Random histories of writes, syncs, faults and crashes always converge (I1-I6)."""
    SyncMachine.url = server_schema
    machine = SyncMachine.TestCase
    machine.settings = settings(
        max_examples=25 if SLOW else 2,
        stateful_step_count=30 if SLOW else 10,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    machine().runTest()


@pytest.mark.slow
def test_state_machine_long(server_schema: str) -> None:
    """The long variant (UNDERLAY_SYNC_SLOW=1): more and longer histories."""
    SyncMachine.url = server_schema
    machine = SyncMachine.TestCase
    machine.settings = settings(
        max_examples=60,
        stateful_step_count=40,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    )
    machine().runTest()
