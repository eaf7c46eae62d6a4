"""The pull cursor: rows committed out of order are never skipped (T10-T15, T34, T36)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from tests.integration.sync.conftest import ALICE, settle
from tests.integration.sync.models import Task
from underlay import ConstraintError, Database, SQLAlchemyRepository
from underlay.sync import PullRequest, SyncServer

CLIENT = uuid.uuid4()


class TaskRepository(SQLAlchemyRepository[Task]):
    pass


async def pull_all(
    server: SyncServer, cursor: str | None, limit: int = 100
) -> tuple[list[Any], str | None]:
    """Pull pages until ``has_more`` is false; return the rows and the final cursor."""
    rows: list[Any] = []
    await settle(server.database)
    while True:
        page = await server.pull(
            PullRequest(client_id=CLIENT, schema_version=1, cursor=cursor, limit=limit),
            user=ALICE,
        )
        assert not page.resync_required
        rows.extend(page.changes)
        cursor = page.cursor
        if not page.has_more:
            return rows, cursor


async def pull_now(server: SyncServer, cursor: str | None) -> tuple[list[Any], str | None]:
    """One pull without waiting for the horizon (while this test holds it back itself)."""
    page = await server.pull(
        PullRequest(client_id=CLIENT, schema_version=1, cursor=cursor, limit=100), user=ALICE
    )
    return page.changes, page.cursor


def row(title: str) -> dict[str, Any]:
    return {"id": uuid.uuid4(), "owner_id": 1, "title": title}


class TestOutOfOrderCommits:
    async def test_naive_updated_at_cursor_loses_the_row_the_xid_cursor_keeps(
        self, server: SyncServer, server_db: Database
    ) -> None:
        """T10/T15: A inserts first and commits after B; updated_at skips A, the xid cursor not."""
        table = Task.__table__
        first, second = row("A, slow"), row("B, fast")
        async with server_db.engine.connect() as conn_a, server_db.engine.connect() as conn_b:
            await conn_a.begin()
            await conn_a.execute(insert(table).values(first))  # stamped first, not committed
            await conn_b.begin()
            await conn_b.execute(insert(table).values(second))
            await conn_b.commit()

            seen, cursor = await pull_now(server, None)
            naive = await naive_pull(server_db, None)
            assert [r.title for r in naive] == ["B, fast"]
            naive_cursor = naive[-1].updated_at
            assert [r.data["title"] for r in seen] == []  # A holds the horizon back: B waits

            await conn_a.commit()

        later, _ = await pull_all(server, cursor)
        assert sorted(r.data["title"] for r in later) == ["A, slow", "B, fast"]
        assert await naive_pull(server_db, naive_cursor) == []  # A is lost for good

    async def test_updates_and_soft_deletes_committed_out_of_order(
        self, server: SyncServer, server_db: Database
    ) -> None:
        """T11: an UPDATE and a soft DELETE that commit late are delivered on the next pull."""
        first, second = row("one"), row("two")
        async with server_db.engine.begin() as conn:
            await conn.execute(insert(Task.__table__).values([first, second]))
        _, cursor = await pull_all(server, None)
        table = Task.__table__
        async with server_db.engine.connect() as conn_a, server_db.engine.connect() as conn_b:
            await conn_a.begin()
            await conn_a.execute(
                update(table).where(table.c.id == first["id"]).values(title="one, edited")
            )
            await conn_b.begin()
            await conn_b.execute(
                update(table)
                .where(table.c.id == second["id"])
                .values(deleted_at=datetime.now().astimezone())
            )
            await conn_b.commit()
            _, cursor = await pull_now(server, cursor)
            await conn_a.commit()
        rows, _ = await pull_all(server, cursor)
        by_title = {r.data["title"]: r for r in rows}
        assert set(by_title) == {"one, edited", "two"}
        assert by_title["two"].deleted
        assert by_title["one, edited"].version == 2

    async def test_a_writer_in_another_database_stalls_then_resumes(
        self, server: SyncServer, server_db: Database
    ) -> None:
        """T12: a transaction with an xid in another database holds the horizon; no row is lost."""
        other = Database(
            make_url(str(server_db.url.render_as_string(hide_password=False))).set(
                database="postgres"
            ),
            poolclass=NullPool,
        )
        try:
            async with other.engine.connect() as long_writer:
                await long_writer.begin()
                await long_writer.execute(text("SELECT pg_current_xact_id()"))
                async with server_db.engine.begin() as conn:
                    await conn.execute(insert(Task.__table__).values(row("after")))
                stalled, cursor = await pull_now(server, None)
                assert stalled == []
                await long_writer.rollback()
            resumed, _ = await pull_all(server, cursor)
            assert [r.data["title"] for r in resumed] == ["after"]
        finally:
            await other.dispose()

    async def test_pages_inside_one_transaction_continue_exactly(
        self, server: SyncServer, server_db: Database
    ) -> None:
        """T13/T14: a transaction larger than the page is split on (xid, seq), none twice."""
        rows = [row(f"r{i}") for i in range(7)]
        async with server_db.engine.begin() as conn:
            await conn.execute(insert(Task.__table__).values(rows))
        pulled, _ = await pull_all(server, None, limit=3)
        assert sorted(r.data["title"] for r in pulled) == sorted(r["title"] for r in rows)
        assert len({r.id for r in pulled}) == 7


class TestServerClock:
    async def test_server_clock_going_back_loses_nothing(
        self, server: SyncServer, server_db: Database
    ) -> None:
        """T36: after the server clock goes back, writes are pulled and order after older ones.

        The row below was written while the clock ran an hour ahead (its timestamps and
        clock are put there behind the triggers' back). A later write, at the real time, is
        behind both: an ``updated_at`` cursor never sees it, the xid cursor does, and the
        row's hybrid logical clock still moves forward, so ``lww`` treats the new write as
        the newer one.
        """
        ahead = datetime.now().astimezone() + timedelta(hours=1)
        ahead_hlc = f"{int(ahead.timestamp() * 1000):015d}:00000:server"
        first, later = row("written while the clock was ahead"), row("written after")
        async with server_db.engine.begin() as conn:
            await conn.execute(insert(Task.__table__).values(first))
        async with server_db.engine.begin() as conn:
            await conn.execute(text("SET LOCAL session_replication_role = replica"))
            await conn.execute(
                text("UPDATE sync_task SET updated_at = :t, hlc = :h WHERE id = :i"),
                {"t": ahead, "h": ahead_hlc, "i": first["id"]},
            )
        seen, cursor = await pull_all(server, None)
        assert [r.id for r in seen] == [first["id"]]
        naive = await naive_pull(server_db, None)
        naive_cursor = naive[-1].updated_at
        assert naive_cursor == ahead

        async with server_db.session() as session:  # the clock is back to the real time
            session.add(Task(**later))
            await TaskRepository(session).update(first["id"], {"title": "edited after"})

        assert await naive_pull(server_db, naive_cursor) == []  # both lost to updated_at
        changes, _ = await pull_all(server, cursor)
        assert {r.data["title"] for r in changes} == {"written after", "edited after"}
        async with server_db.engine.connect() as conn:
            hlc = (
                await conn.execute(
                    text("SELECT hlc FROM sync_task WHERE id = :i"), {"i": first["id"]}
                )
            ).scalar_one()
        assert hlc > ahead_hlc  # the edit orders after the change it replaced


async def naive_pull(database: Database, after: datetime | None) -> list[Any]:
    """The cursor the notes warn about: ``updated_at > cursor``."""
    table = Task.__table__
    stmt = table.select().order_by(table.c.updated_at)
    if after is not None:
        stmt = stmt.where(table.c.updated_at > after)
    async with database.engine.connect() as conn:
        return list((await conn.execute(stmt)).all())


class TestTriggers:
    async def test_every_write_path_bumps_version_and_restamps(
        self, server: SyncServer, server_db: Database
    ) -> None:
        """T34/I7: ORM, Core, upsert and raw SQL writes bump the version and are pulled."""
        task_id = uuid.uuid4()
        async with server_db.session() as session:
            await TaskRepository(session).save(Task(id=task_id, owner_id=1, title="orm"))
        _, cursor = await pull_all(server, None)
        versions = []
        writes = [
            lambda s: TaskRepository(s).update(task_id, {"title": "repository"}),
            lambda s: s.execute(
                update(Task.__table__).where(Task.__table__.c.id == task_id).values(title="core")
            ),
            lambda s: TaskRepository(s).upsert(
                {"id": task_id, "owner_id": 1, "title": "upsert"}, conflict_on=["id"]
            ),
            lambda s: s.execute(
                text("UPDATE sync_task SET title = 'raw', version = 1 WHERE id = :i"),
                {"i": task_id},
            ),
        ]
        for write in writes:
            async with server_db.session() as session:
                await write(session)
            changes, cursor = await pull_all(server, cursor)
            assert len(changes) == 1
            versions.append((changes[0].data["title"], changes[0].version))
        assert versions == [("repository", 2), ("core", 3), ("upsert", 4), ("raw", 5)]

    async def test_hard_delete_outside_gc_fails(
        self, server: SyncServer, server_db: Database
    ) -> None:
        """I7: a hard delete of a synced row is refused; tombstones are rows."""
        task_id = uuid.uuid4()
        async with server_db.session() as session:
            await TaskRepository(session).save(Task(id=task_id, owner_id=1))
        with pytest.raises(ConstraintError):
            async with server_db.session() as session:
                await TaskRepository(session).hard_delete(task_id)
