"""A Hypothesis state machine: random local and server writes, syncs, faults and crashes.

Every run ends with each client equal to the server within its scope, every outbox entry
answered by exactly one ledger entry, no mutation written to the server twice (an audit
trigger records every write a mutation makes), every resolved or rejected mutation recorded
as a conflict on both sides, and nothing left in any outbox.

By default (CI) the machine runs the ``sync-ci`` settings below; the ``slow`` variant
(``--run-slow``) runs ``sync-deep``: more and longer histories.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from sqlalchemy import text
from sqlalchemy.pool import NullPool

from tests.integration.sync.conftest import ALICE, make_registry, server_rows, settle
from tests.integration.sync.models import SyncBase, Task
from underlay import Database, SQLAlchemyRepository
from underlay.sync import InProcessTransport, SyncClient, SyncServer, SyncTransportError
from underlay.sync.testing import FaultyTransport

PROFILES = {
    "sync-ci": settings(
        # No shrinking in CI: a failing history is printed as generated (shrinking one can
        # take minutes of database round trips); rerun it with the printed seed to shrink.
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
        max_examples=10,
        stateful_step_count=20,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    ),
    "sync-deep": settings(
        max_examples=80,
        stateful_step_count=40,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        database=None,
    ),
}
# SQLite files in memory-backed storage when there is some: the machine crashes clients by
# exceptions (the process-kill crashes are test_sync_crash.py's), so fsyncs buy nothing here.
SCRATCH = "/dev/shm" if os.path.isdir("/dev/shm") else None  # noqa: S108 - scratch files only
# An entry in flight leaves the outbox only when its answer is applied (a rejection's
# revert and a cancelled create remove pending entries only).
CLIENT_AUDIT_SQL = (
    "CREATE TABLE test_acked (mutation_id INTEGER PRIMARY KEY)",
    """CREATE TRIGGER test_acked AFTER DELETE ON underlay_sync_outbox
        WHEN OLD.state = 'inflight' BEGIN INSERT INTO test_acked VALUES (OLD.mutation_id); END""",
)
AUDIT_SQL = (
    """CREATE TABLE IF NOT EXISTS sync_test_audit (
        client_id uuid NOT NULL, mutation_id bigint NOT NULL, version int NOT NULL)""",
    """CREATE OR REPLACE FUNCTION sync_test_audit() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.origin_mutation_id IS NOT NULL
           AND (TG_OP = 'INSERT' OR NEW.version <> OLD.version) THEN
            INSERT INTO sync_test_audit
                VALUES (NEW.origin_client_id, NEW.origin_mutation_id, NEW.version);
        END IF;
        RETURN NULL;
    END $$""",
    "DROP TRIGGER IF EXISTS sync_test_audit ON sync_task",
    """CREATE TRIGGER sync_test_audit AFTER INSERT OR UPDATE ON sync_task
        FOR EACH ROW EXECUTE FUNCTION sync_test_audit()""",
)
CRASH_POINTS = [
    "after_mark_inflight",
    "after_push_response",
    "mid_page_apply",
    "before_cursor_store",
]
FAULTS = ["drop_request", "drop_response", "duplicate", "error_5xx", "cut_page"]
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
        self.tmp = tempfile.TemporaryDirectory(dir=SCRATCH)
        self.registry = make_registry(policy="lww")
        self.server_db = Database(self.url, pool_size=3, max_overflow=2)
        self.server = SyncServer(self.server_db, self.registry)
        self.crash_at: dict[int, str | None] = {0: None, 1: None}
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
                    " underlay_sync_mutation_results, underlay_sync_conflicts, sync_test_audit"
                )
            )
        for index in range(2):
            database = Database(f"sqlite+aiosqlite:///{Path(self.tmp.name) / f'c{index}.db'}")
            await database.create_all(SyncBase.metadata)
            self.dbs.append(database)
            self.clients.append(await self._open(index))
            async with database.engine.begin() as conn:
                for statement in CLIENT_AUDIT_SQL:
                    await conn.exec_driver_sql(statement)

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

    @rule(pick=st.integers(0, 5), title=titles, action=st.sampled_from(["edit", "delete", "add"]))
    def server_write(self, pick: int, title: str, action: str) -> None:
        async def go() -> None:
            ids = await self._ids(self.server_db)
            async with self.server_db.session() as session:
                repository = TaskRepository(session)
                if not ids or action == "add":
                    session.add(Task(owner_id=1, title=title))
                elif action == "delete":
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
        event(f"sync, {operation} fault: {fault}")
        if fault is not None:
            self.transports[index].fail_next(operation, fault)  # type: ignore[arg-type]
        try:
            self.run(self.clients[index].sync())
        except (SyncTransportError, CrashError):
            return

    @rule(index=st.integers(0, 1), point=st.sampled_from(CRASH_POINTS))
    def crash_during_sync_and_reopen(self, index: int, point: str) -> None:
        event(f"crash at {point}")
        self.crash_at[index] = point

        async def go() -> None:
            with contextlib.suppress(CrashError):
                await self.clients[index].sync()
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
            for client in self.clients:
                await settle(self.server_db)
                await client.sync()
        expected = await server_rows(self.server_db, ALICE)
        for index, database in enumerate(self.dbs):
            rows = await _rows(database)
            assert rows == expected, f"client {index} differs from the server"
            assert await self.clients[index].pending_count() == 0
        async with self.server_db.engine.connect() as conn:
            ledger = (
                await conn.execute(
                    text(
                        "SELECT client_id, mutation_id FROM underlay_sync_mutation_results"
                        " ORDER BY 1, 2"
                    )
                )
            ).all()
        for client, database in zip(self.clients, self.dbs, strict=True):
            # Every entry that was sent was answered, and its answer applied, exactly once:
            # the entries acknowledged locally are exactly the client's ledger entries.
            async with database.engine.connect() as conn:
                acked = (
                    await conn.execute(text("SELECT mutation_id FROM test_acked ORDER BY 1"))
                ).scalars()
                assert list(acked) == [m for c, m in ledger if c == client.client_id]
        await self._check_audit()
        for index, database in enumerate(self.dbs):
            await self._check_recorded(self.clients[index], database)

    async def _check_audit(self) -> None:
        """No mutation wrote twice; every write a mutation made is in the ledger."""
        async with self.server_db.engine.connect() as conn:
            twice = (
                await conn.execute(
                    text(
                        "SELECT client_id, mutation_id FROM sync_test_audit"
                        " GROUP BY 1, 2 HAVING count(*) > 1"
                    )
                )
            ).all()
            unrecorded = (
                await conn.execute(
                    text(
                        "SELECT a.client_id, a.mutation_id FROM sync_test_audit a"
                        " LEFT JOIN underlay_sync_mutation_results r USING (client_id, mutation_id)"
                        " WHERE r.status IS NULL OR r.status NOT IN ('applied', 'resolved')"
                    )
                )
            ).all()
        assert twice == [], f"mutations applied twice: {twice}"
        assert unrecorded == [], f"writes without a ledger entry: {unrecorded}"

    async def _check_recorded(self, client: SyncClient, database: Database) -> None:
        """Every resolved or rejected mutation is a conflict record, server and client side."""
        async with self.server_db.engine.connect() as conn:
            server_side = (
                await conn.execute(
                    text(
                        "SELECT r.mutation_id, r.status, c.id IS NOT NULL"
                        " FROM underlay_sync_mutation_results r LEFT JOIN underlay_sync_conflicts c"
                        " USING (client_id, mutation_id) WHERE r.client_id = :c"
                        " AND r.status IN ('resolved', 'rejected') ORDER BY 1"
                    ),
                    {"c": client.client_id},
                )
            ).all()
        assert all(recorded for _, status, recorded in server_side if status == "resolved")
        async with database.engine.connect() as conn:
            client_side = (
                await conn.execute(
                    text(
                        "SELECT mutation_id, status FROM underlay_sync_conflicts"
                        " WHERE status IN ('resolved', 'rejected') ORDER BY 1"
                    )
                )
            ).all()
        assert [(m, s) for m, s, _ in server_side] == [tuple(r) for r in client_side]


async def _rows(database: Database) -> dict[Any, dict[str, Any]]:
    from tests.integration.sync.conftest import live_rows

    return await live_rows(database)


@pytest.fixture
def audited(server_schema: str) -> Iterator[str]:
    """The server schema with an audit trigger on sync_task (dropped afterwards)."""

    async def run(statements: tuple[str, ...]) -> None:
        database = Database(server_schema, poolclass=NullPool)
        try:
            async with database.engine.begin() as conn:
                for statement in statements:
                    await conn.exec_driver_sql(statement)
        finally:
            await database.dispose()

    asyncio.run(run(AUDIT_SQL))
    try:
        yield server_schema
    finally:
        asyncio.run(
            run(
                (
                    "DROP TRIGGER IF EXISTS sync_test_audit ON sync_task",
                    "DROP TABLE IF EXISTS sync_test_audit",
                    "DROP FUNCTION IF EXISTS sync_test_audit()",
                )
            )
        )


def run_machine(url: str, profile: str) -> None:
    SyncMachine.url = url
    machine = SyncMachine.TestCase
    machine.settings = PROFILES[profile]
    machine().runTest()


def test_state_machine(audited: str) -> None:
    """Random histories of writes, syncs, faults and crashes always converge (I1-I6)."""
    run_machine(audited, "sync-ci")


@pytest.mark.slow
def test_state_machine_long(audited: str) -> None:
    """The long variant (``--run-slow``): more and longer histories."""
    run_machine(audited, "sync-deep")
