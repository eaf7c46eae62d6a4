"""Round trips: local writes reach the server and other clients, server writes reach clients."""

from __future__ import annotations

import uuid

from sqlalchemy import text

from tests.integration.sync.conftest import ALICE, BOB, ClientFactory, server_rows
from tests.integration.sync.models import Task
from underlay import Database, SQLAlchemyRepository


class TaskRepository(SQLAlchemyRepository[Task]):
    pass


class TestRoundTrip:
    async def test_local_create_reaches_server_and_other_client(
        self, make_client: ClientFactory, server_db: Database
    ) -> None:
        """A row created offline on one client is on the server and on the user's other client."""
        a = await make_client("a")
        b = await make_client("b")
        async with a.db.session() as session:
            task = await TaskRepository(session).save(Task(owner_id=1, title="write"))
        report = await a.sync()
        assert report.pushed == 1
        assert (await server_rows(server_db, ALICE))[task.id]["title"] == "write"
        report_b = await b.sync()
        assert report_b.pulled == 1
        assert await b.rows() == await server_rows(server_db, ALICE)

    async def test_update_and_delete_round_trip(
        self, make_client: ClientFactory, server_db: Database
    ) -> None:
        """Updates and soft deletes made on a client apply on the server with a new version."""
        a = await make_client("a")
        b = await make_client("b")
        async with a.db.session() as session:
            task = await TaskRepository(session).save(Task(owner_id=1, title="one"))
        await a.sync()
        await b.sync()
        async with b.db.session() as session:
            await TaskRepository(session).update(task.id, {"title": "two", "done": True})
        await b.sync()
        await a.sync()
        assert (await a.rows())[task.id]["title"] == "two"
        async with a.db.session() as session:
            await TaskRepository(session).delete(task.id)
        await a.sync()
        await b.sync()
        assert await b.rows() == {}
        async with server_db.engine.connect() as conn:
            version, deleted = (
                await conn.execute(
                    text("SELECT version, deleted_at IS NOT NULL FROM sync_task WHERE id = :i"),
                    {"i": task.id},
                )
            ).one()
        assert (version, deleted) == (3, True)

    async def test_scope_keeps_users_apart(
        self, make_client: ClientFactory, server_db: Database
    ) -> None:
        """A client sees only its user's rows."""
        a = await make_client("a", ALICE)
        b = await make_client("b", BOB)
        async with a.db.session() as session:
            await TaskRepository(session).save(Task(owner_id=1, title="alice's"))
        async with b.db.session() as session:
            await TaskRepository(session).save(Task(owner_id=2, title="bob's"))
        await a.sync()
        await b.sync()
        await a.sync()
        assert [r["title"] for r in (await a.rows()).values()] == ["alice's"]
        assert [r["title"] for r in (await b.rows()).values()] == ["bob's"]

    async def test_server_write_reaches_client(
        self, make_client: ClientFactory, server_db: Database
    ) -> None:
        """Rows written on the server by the ORM are pulled."""
        a = await make_client("a")
        task_id = uuid.uuid4()
        async with server_db.session() as session:
            await TaskRepository(session).save(Task(id=task_id, owner_id=1, title="server"))
        await a.sync()
        assert (await a.rows())[task_id]["title"] == "server"
