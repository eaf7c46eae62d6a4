"""Replaced history: restores, tombstone GC, scope entry, page order (T16-T19, T29, T37)."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import text

from tests.integration.sync.conftest import ALICE, BOB, ClientFactory, server_rows, settle
from tests.integration.sync.models import Project, Task
from underlay import Database, SQLAlchemyRepository
from underlay.sync import PullResponse, RowState, SyncReport, SyncServer


class TaskRepository(SQLAlchemyRepository[Task]):
    pass


class TestResync:
    async def test_server_restore_forces_a_resync_and_keeps_the_outbox(
        self, make_client: ClientFactory, server: SyncServer, server_db: Database
    ) -> None:
        """T16: a new epoch answers resync_required; pending local edits survive it."""
        a = await make_client("a")
        async with a.db.session() as session:
            kept = (await TaskRepository(session).save(Task(owner_id=1, title="kept"))).id
        await a.sync()
        await server.bump_epoch()
        async with server_db.engine.begin() as conn:  # the "restore" lost a row
            await conn.execute(text("SET LOCAL underlay.sync_gc = 'on'"))
            await conn.execute(text("DELETE FROM sync_task WHERE id = :i"), {"i": kept})
        async with a.db.session() as session:
            pending = (await TaskRepository(session).save(Task(owner_id=1, title="offline"))).id
        report = await a.sync()
        assert report.resynced
        rows = await a.rows()
        assert pending in rows  # pushed, then pulled back
        assert kept not in rows  # swept: the server no longer has it
        assert rows == await server_rows(server_db, ALICE)

    async def test_cursor_below_the_gc_horizon_resyncs(
        self, make_client: ClientFactory, server: SyncServer, server_db: Database
    ) -> None:
        """T17: tombstones purged past a client's cursor: it resyncs; pending rows are kept."""
        a = await make_client("a")
        b = await make_client("b")
        async with a.db.session() as session:
            doomed = (await TaskRepository(session).save(Task(owner_id=1, title="doomed"))).id
        await a.sync()
        await b.sync()
        async with a.db.session() as session:
            await TaskRepository(session).delete(doomed)
        await a.sync()
        await settle(server_db)
        assert await server.collect_tombstones(retention=timedelta(0)) == 1
        async with b.db.session() as session:
            local = (await TaskRepository(session).save(Task(owner_id=1, title="b offline"))).id
        await settle(server_db)
        async with server_db.engine.connect() as long_writer:
            # a transaction elsewhere holds the horizon below the push this sync makes
            await long_writer.begin()
            await long_writer.execute(text("SELECT pg_current_xact_id()"))
            report = await b.client.sync()
            await long_writer.rollback()
        assert report.resynced
        rows = await b.rows()
        assert doomed not in rows
        assert local in rows  # pushed by this sync, held back by the horizon: not swept
        await b.sync()
        assert await b.rows() == await server_rows(server_db, ALICE)

    async def test_row_entering_the_scope_is_delivered(
        self, make_client: ClientFactory, server: SyncServer, server_db: Database
    ) -> None:
        """T18: a row moved into a user's scope, or touched, reaches that user's client."""
        a = await make_client("a", ALICE)
        task_id = uuid.uuid4()
        async with server_db.session() as session:
            await TaskRepository(session).save(Task(id=task_id, owner_id=BOB.id, title="bob's"))
        await a.sync()
        assert await a.rows() == {}
        async with server_db.engine.begin() as conn:
            await conn.execute(
                text("UPDATE sync_task SET owner_id = 1 WHERE id = :i"), {"i": task_id}
            )
        await a.sync()
        assert task_id in await a.rows()
        async with a.db.engine.begin() as conn:  # lose the local copy behind the sync's back
            await conn.execute(text("INSERT INTO underlay_sync_state VALUES ('applying', '1')"))
            await conn.execute(text("DELETE FROM sync_task"))
            await conn.execute(text("DELETE FROM underlay_sync_shadow"))
            await conn.execute(text("DELETE FROM underlay_sync_state WHERE key = 'applying'"))
        assert await server.touch(Task, [task_id]) == 1
        await a.sync()
        assert task_id in await a.rows()

    async def test_child_before_parent_in_one_page(
        self, make_client: ClientFactory, server_db: Database
    ) -> None:
        """T19: a task pulled before its (later re-stamped) project applies: FKs are deferred."""
        project_id, task_id = uuid.uuid4(), uuid.uuid4()
        async with server_db.session() as session:
            session.add(Project(id=project_id, owner_id=1, name="p"))
        async with server_db.session() as session:
            session.add(Task(id=task_id, owner_id=1, project_id=project_id, title="child"))
        async with server_db.engine.begin() as conn:
            await conn.execute(
                text("UPDATE sync_project SET name = 'renamed' WHERE id = :i"), {"i": project_id}
            )
        a = await make_client("a")
        await a.sync()
        assert (await a.rows())[task_id]["project_id"] == project_id
        assert (await a.rows(Project))[project_id]["id"] == project_id


class TestStaleInput:
    async def test_a_row_older_than_the_shadow_is_skipped(
        self, make_client: ClientFactory, server_db: Database
    ) -> None:
        """T29/I4: a late page with an older version never overwrites a newer local row."""
        a = await make_client("a")
        async with a.db.session() as session:
            task = await TaskRepository(session).save(Task(owner_id=1, title="v1"))
        await a.sync()
        async with a.db.session() as session:
            await TaskRepository(session).update(task.id, {"title": "v2"})
        await a.sync()
        old = RowState(
            table="sync_task",
            id=task.id,
            version=1,
            deleted=False,
            data={"id": str(task.id), "owner_id": 1, "title": "v1", "done": False},
        )
        report = SyncReport()
        await a.client._apply_page(
            PullResponse(changes=[old], cursor=None, has_more=False), report, resyncing=False
        )
        assert report.pulled == 0
        assert (await a.rows())[task.id]["title"] == "v2"

    async def test_unknown_columns_from_a_newer_server_are_stripped(
        self, make_client: ClientFactory
    ) -> None:
        """T37: a column this client's schema lacks is ignored, the rest applies."""
        a = await make_client("a")
        task_id = uuid.uuid4()
        newer = RowState(
            table="sync_task",
            id=task_id,
            version=1,
            deleted=False,
            data={"id": str(task_id), "owner_id": 1, "title": "t", "done": False, "color": "red"},
        )
        report = SyncReport()
        await a.client._apply_page(
            PullResponse(changes=[newer], cursor=None, has_more=False), report, resyncing=False
        )
        assert (await a.rows())[task_id]["title"] == "t"
