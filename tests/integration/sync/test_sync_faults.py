"""Network faults, retries, concurrency: nothing applied twice, nothing lost (T01-T04, T08, T09,
T32, T33)."""

from __future__ import annotations

import asyncio
import logging
import uuid

import pytest
from sqlalchemy import func, select, text

from tests.integration.sync.conftest import ALICE, ClientFactory, server_rows
from tests.integration.sync.models import Task
from underlay import Database, SQLAlchemyRepository
from underlay.sync import (
    InProcessTransport,
    Mutation,
    PushRequest,
    SyncClient,
    SyncServer,
    SyncTransportError,
)
from underlay.sync.testing import FaultyTransport


class TaskRepository(SQLAlchemyRepository[Task]):
    pass


async def ledger_count(database: Database) -> int:
    async with database.engine.connect() as conn:
        return int(
            (
                await conn.execute(text("SELECT count(*) FROM underlay_sync_mutation_results"))
            ).scalar_one()
        )


async def create(db: Database, title: str, owner: int = 1) -> uuid.UUID:
    async with db.session() as session:
        return (await TaskRepository(session).save(Task(owner_id=owner, title=title))).id


async def server_version(database: Database, task_id: uuid.UUID) -> int:
    async with database.engine.connect() as conn:
        return int(
            (
                await conn.execute(select(Task.__table__.c.version).where(Task.id == task_id))
            ).scalar_one()
        )


class TestLostMessages:
    async def test_request_lost_is_resent_and_applied_once(
        self, make_client: ClientFactory, server_db: Database
    ) -> None:
        """T01: a push that never arrived is resent by the retry and applied once."""
        a = await make_client("a")
        task_id = await create(a.db, "t")
        a.transport.fail_next("push", "drop_request")
        report = await a.sync()
        assert report.pushed == 1
        assert await server_version(server_db, task_id) == 1
        assert await ledger_count(server_db) == 1

    async def test_reply_lost_after_commit_is_answered_from_the_ledger(
        self, make_client: ClientFactory, server_db: Database
    ) -> None:
        """T02: the server committed, the answer was lost; the resend gets the stored result."""
        a = await make_client("a")
        task_id = await create(a.db, "t")
        async with a.db.session() as session:
            await TaskRepository(session).update(task_id, {"title": "edited"})
        a.transport.fail_next("push", "drop_response")
        await a.sync()
        assert a.transport.calls[:2] == ["push", "push"]
        assert await server_version(server_db, task_id) == 1
        assert (await server_rows(server_db, ALICE))[task_id]["title"] == "edited"
        assert await ledger_count(server_db) == 1
        assert await a.client.pending_count() == 0

    async def test_same_push_twice_at_once_applies_once(
        self, server: SyncServer, server_db: Database
    ) -> None:
        """T03: two copies of one push race; the second is answered as a duplicate."""
        client_id, task_id = uuid.uuid4(), uuid.uuid4()
        mutation = Mutation(
            mutation_id=1,
            tx_group=1,
            table="sync_task",
            id=task_id,
            op="upsert",
            base_version=0,
            changed={"owner_id": 1, "title": "once"},
            schema_version=1,
        )
        request = PushRequest(client_id=client_id, mutations=[mutation])
        first, second = await asyncio.gather(
            server.push(request, user=ALICE), server.push(request, user=ALICE)
        )
        outcomes = sorted([first.results[0].duplicate, second.results[0].duplicate])
        assert outcomes == [False, True]
        assert first.results[0].status == second.results[0].status == "applied"
        assert await server_version(server_db, task_id) == 1
        assert await ledger_count(server_db) == 1

    async def test_duplicate_delivery_of_a_push(
        self, make_client: ClientFactory, server_db: Database
    ) -> None:
        """T03 over a transport: a request delivered twice is applied once."""
        a = await make_client("a")
        task_id = await create(a.db, "t")
        a.transport.fail_next("push", "duplicate")
        await a.sync()
        assert await server_version(server_db, task_id) == 1
        assert await ledger_count(server_db) == 1

    async def test_pull_cut_mid_page_keeps_the_cursor(
        self, make_client: ClientFactory, server_db: Database
    ) -> None:
        """T04: a page lost in transit is pulled again from the same cursor; applies once."""
        a = await make_client("a")
        b = await make_client("b")
        for i in range(3):
            await create(a.db, f"t{i}")
        await a.sync()
        b.transport.fail_next("pull", "cut_page", "drop_response")
        report = await b.sync()
        assert report.pulled == 3
        assert await b.rows() == await server_rows(server_db, ALICE)


class TestRetries:
    async def test_5xx_storm_keeps_the_outbox_and_the_ids(
        self, make_client: ClientFactory, server_db: Database
    ) -> None:
        """T08: every retry fails: sync raises, the same mutation ids are sent next time."""
        a = await make_client("a")
        task_id = await create(a.db, "t")
        a.transport.fail_next("push", *["error_5xx"] * a.client.retries)
        with pytest.raises(SyncTransportError) as raised:
            await a.sync()
        assert raised.value.status == 503
        assert await a.client.pending_count() == 1
        async with a.db.engine.connect() as conn:
            before = (
                await conn.execute(text("SELECT mutation_id, payload FROM underlay_sync_outbox"))
            ).one()
        await a.sync()
        async with server_db.engine.connect() as conn:
            applied = (
                await conn.execute(text("SELECT mutation_id FROM underlay_sync_mutation_results"))
            ).scalar_one()
        assert applied == before.mutation_id
        assert await server_version(server_db, task_id) == 1

    async def test_thousands_queued_are_pushed_in_bounded_batches(
        self, make_client: ClientFactory, server_db: Database
    ) -> None:
        """T09: a long outbox goes out in batches of at most batch_size mutations."""
        a = await make_client("a")
        a.client.batch_size = 40
        async with a.db.session() as session:
            await TaskRepository(session).insert_many(
                [{"id": uuid.uuid4(), "owner_id": 1, "title": f"t{i}"} for i in range(100)]
            )
        report = await a.sync()
        assert report.pushed == 100
        assert a.transport.calls.count("push") == 3
        async with server_db.engine.connect() as conn:
            count = (await conn.execute(select(func.count()).select_from(Task))).scalar_one()
        assert count == 100

    async def test_two_sync_loops_on_one_database_take_turns(
        self, make_client: ClientFactory, server: SyncServer
    ) -> None:
        """T33: a second sync on the same local database waits for the first."""
        a = await make_client("a")
        await create(a.db, "t")
        second = SyncClient(
            a.db, a.client.registry, transport=FaultyTransport(InProcessTransport(server, ALICE))
        )
        await second.install()
        a.transport.fail_next("push", "hold")
        first_run = asyncio.create_task(a.client.sync())
        await a.transport.held.wait()
        second_run = asyncio.create_task(second.sync())
        for _ in range(20):
            await asyncio.sleep(0)  # let the second sync run as far as it can
        assert not second_run.done()
        assert second.transport.calls == []  # type: ignore[attr-defined]
        a.transport.release()
        await first_run
        report = await second_run
        assert report.pushed == 0  # the first sync pushed everything


async def lock_waiters(database: Database) -> int:
    """Return how many sessions of this database wait for a lock right now."""
    async with database.engine.connect() as conn:
        return int(
            (
                await conn.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock'"
                    )
                )
            ).scalar_one()
        )


async def wait_for_lock_waiters(database: Database, count: int) -> None:
    async with asyncio.timeout(30):
        while await lock_waiters(database) < count:
            await asyncio.sleep(0.01)  # polling a condition, not timing a race


class TestConcurrentPushes:
    async def test_pushes_locking_rows_in_opposite_orders_never_deadlock(
        self,
        make_client: ClientFactory,
        server_db: Database,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """T32: two pushes writing X, Y and Y, X; the one queued first on Y must not deadlock.

        A third session holds Y. B's push (Y first) queues on it; A's push (X first) then
        queues too. Without one global lock order, A holds X while B, granted Y, waits for X:
        a deadlock PostgreSQL breaks after ``deadlock_timeout`` and the push is retried.
        """
        a, b = await make_client("a"), await make_client("b")
        x, y = await create(a.db, "x"), await create(a.db, "y")
        await a.sync()
        await b.sync()
        for client, order in ((a, (x, y)), (b, (y, x))):
            for task_id in order:
                async with client.db.session() as session:
                    await TaskRepository(session).update(task_id, {"title": f"{client.path.stem}"})
        caplog.set_level(logging.DEBUG, logger="underlay.retry")
        async with server_db.engine.connect() as holder:
            await holder.begin()
            await holder.execute(text("SELECT 1 FROM sync_task WHERE id = :y FOR UPDATE"), {"y": y})
            b_push = asyncio.create_task(b.client.sync())
            await wait_for_lock_waiters(server_db, 1)
            a_push = asyncio.create_task(a.client.sync())
            await wait_for_lock_waiters(server_db, 2)
            await holder.rollback()
        b_report, a_report = await b_push, await a_push
        assert not [r for r in caplog.records if r.name == "underlay.retry"]  # no deadlock
        assert b_report.pushed == a_report.pushed == 2
        assert len(a_report.conflicts) == 2  # B got there first: server_wins keeps B's edits
        await a.sync()
        assert {t["title"] for t in (await a.rows()).values()} == {"b"}
