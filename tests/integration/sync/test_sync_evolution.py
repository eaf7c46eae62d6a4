"""Clients that upgrade: new synced tables and columns are backfilled, renames keep the
outbox (T38, T39)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import String, select, text, update
from sqlalchemy.orm import Mapped, mapped_column

from tests.integration.models import new_base
from tests.integration.sync.conftest import ALICE, ClientFactory, settle
from tests.integration.sync.models import Project, SyncBase, Task
from underlay import (
    Database,
    SoftDeleteMixin,
    SQLAlchemyRepository,
    TimestampMixin,
    VersionedMixin,
)
from underlay.sync import InProcessTransport, SyncClient, SyncRegistry, SyncServer
from underlay.sync.testing import FaultyTransport

OldTaskBase = new_base()
OldDocBase = new_base()
NewDocBase = new_base()


class TaskWithoutNote(SoftDeleteMixin, VersionedMixin, TimestampMixin, OldTaskBase):
    """``sync_task`` as an older client release mapped it: no ``note`` yet."""

    __tablename__ = "sync_task"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    owner_id: Mapped[int] = mapped_column(index=True)
    project_id: Mapped[uuid.UUID | None] = mapped_column(default=None)
    title: Mapped[str] = mapped_column(String(200), default="")
    done: Mapped[bool] = mapped_column(default=False)


class DocV1(SoftDeleteMixin, VersionedMixin, OldDocBase):
    __tablename__ = "sync_doc"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    owner_id: Mapped[int] = mapped_column()
    note: Mapped[str] = mapped_column(String(200), default="")


class DocV2(SoftDeleteMixin, VersionedMixin, NewDocBase):
    """The next release renamed ``note`` to ``details``."""

    __tablename__ = "sync_doc"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    owner_id: Mapped[int] = mapped_column()
    details: Mapped[str] = mapped_column(String(200), default="")


class TaskRepository(SQLAlchemyRepository[Task]):
    pass


def registry_of(*models: type[Any], **options: Any) -> SyncRegistry:
    registry = SyncRegistry(schema_version=1)
    for model in models:
        registry.register(model, scope=lambda user, m=model: m.owner_id == user.id, **options)
    return registry


class TestBackfill:
    async def test_a_table_synced_by_a_newer_release_is_backfilled(
        self, make_client: ClientFactory, server_db: Database
    ) -> None:
        """T38: rows of a table the client skipped before it synced it arrive after the upgrade."""
        project_id, task_id = uuid.uuid4(), uuid.uuid4()
        async with server_db.session() as session:
            session.add(Project(id=project_id, owner_id=1, name="p"))
            session.add(Task(id=task_id, owner_id=1, title="before the upgrade"))
        old = await make_client("c", registry_=registry_of(Project))
        await old.sync()
        assert await old.rows() == {}  # the pulls passed the task by: not synced yet
        assert project_id in await old.rows(Project)
        async with server_db.session() as session:
            await TaskRepository(session).save(Task(owner_id=1, title="after the upgrade"))

        new = await make_client("c", registry_=registry_of(Project, Task))  # same file
        await new.sync()
        titles = {row["title"] for row in (await new.rows()).values()}
        assert titles == {"before the upgrade", "after the upgrade"}
        again = await new.client.sync()
        assert (again.pushed, again.pulled) == (0, 0)  # the backfill is done, not repeated

    async def test_a_column_synced_by_a_newer_release_is_backfilled(
        self, tmp_path: Path, server: SyncServer, server_db: Database
    ) -> None:
        """T38: a column the old release lacked is filled in for rows it already had."""
        task_id = uuid.uuid4()
        async with server_db.session() as session:
            session.add(Task(id=task_id, owner_id=1, title="t", note="server note"))
        local = Database(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
        try:
            await local.create_all(OldTaskBase.metadata)
            await settle(server_db)
            old = SyncClient(
                local,
                registry_of(TaskWithoutNote),
                transport=InProcessTransport(server, ALICE),
            )
            await old.install()
            await old.sync()
            async with local.engine.begin() as conn:  # the new release's migration
                await conn.execute(text("ALTER TABLE sync_task ADD COLUMN note VARCHAR(200)"))
            new = SyncClient(local, registry_of(Task), transport=InProcessTransport(server, ALICE))
            await new.install()
            report = await new.sync()
            assert report.pulled == 1
            async with local.engine.connect() as conn:
                note = (
                    await conn.execute(select(Task.__table__.c.note).where(Task.id == task_id))
                ).scalar_one()
            assert note == "server note"
        finally:
            await local.dispose()


@pytest.fixture
async def doc_server(server_db: Database) -> AsyncIterator[SyncServer]:
    """A server with a ``sync_doc`` table in its first release (``note``)."""
    await server_db.create_all(OldDocBase.metadata)
    server = SyncServer(server_db, registry_of(DocV1))
    await server.install()
    try:
        yield server
    finally:
        async with server_db.engine.begin() as conn:
            await conn.execute(text("DROP TABLE sync_doc"))


class TestRename:
    async def test_a_renamed_column_keeps_pending_and_in_flight_changes(
        self, tmp_path: Path, doc_server: SyncServer, server_db: Database
    ) -> None:
        """T39: changes queued under the old column name are sent under the new one.

        One edit is in flight (its push was lost) and one is pending when both sides rename
        ``note`` to ``details``; after the upgrade both reach the server's ``details``.
        """
        local = Database(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
        try:
            await local.create_all(OldDocBase.metadata)
            transport = FaultyTransport(InProcessTransport(doc_server, ALICE))
            old = SyncClient(local, registry_of(DocV1), transport=transport, retries=1)
            await old.install()
            sent, queued = uuid.uuid4(), uuid.uuid4()
            async with local.session() as session:
                session.add_all([DocV1(id=sent, owner_id=1), DocV1(id=queued, owner_id=1)])
            await old.sync()
            async with local.engine.begin() as conn:
                await conn.execute(update(DocV1).where(DocV1.id == sent).values(note="in flight"))
            transport.fail_next("push", "drop_request")
            with pytest.raises(Exception, match="drop_request"):
                await old.sync()
            async with local.engine.begin() as conn:
                await conn.execute(update(DocV1).where(DocV1.id == queued).values(note="pending"))

            # the release that renames the column, on both sides
            for database in (server_db, local):
                async with database.engine.begin() as conn:
                    await conn.execute(text("ALTER TABLE sync_doc RENAME COLUMN note TO details"))
            renamed = registry_of(DocV2, renamed={"note": "details"})
            server = SyncServer(server_db, renamed)
            new = SyncClient(local, renamed, transport=InProcessTransport(server, ALICE))
            await new.install()
            report = await new.sync()
            assert report.rejected == []
            async with server_db.engine.connect() as conn:
                on_server = dict(
                    (await conn.execute(text("SELECT id, details FROM sync_doc"))).all()
                )
            assert on_server == {sent: "in flight", queued: "pending"}
            async with local.engine.connect() as conn:
                here = dict((await conn.execute(select(DocV2.id, DocV2.details))).all())
            assert here == on_server
        finally:
            await local.dispose()


def test_renaming_to_an_unknown_column_is_refused() -> None:
    """T39: ``renamed`` must point at a column the model has."""
    with pytest.raises(ValueError, match="unknown columns"):
        registry_of(DocV2, renamed={"note": "nope"})


_ = SyncBase  # the module fixture creates the shared tables from it
