"""The Alembic helpers create what `SyncServer.install` creates, and the drift check ignores it."""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy import insert

from tests.integration.sync.conftest import ALICE, make_registry, settle
from tests.integration.sync.models import SyncBase, Task
from underlay import Database
from underlay.migrations import check, init, revision, upgrade
from underlay.sync import PullRequest, SyncServer

ENV_PY = """
from tests.integration.sync.models import SyncBase
from underlay.migrations import run_migrations

run_migrations(SyncBase.metadata)
"""

SYNC_REVISION = '''"""enable sync"""
from alembic import op

from underlay.sync.migrations import enable_sync, install_sync

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    install_sync(op)
    for table in ("sync_project", "sync_task"):
        enable_sync(op, table)


def downgrade() -> None:
    from underlay.sync.migrations import disable_sync, uninstall_sync

    for table in ("sync_project", "sync_task"):
        disable_sync(op, table)
    uninstall_sync(op)
'''


async def test_migrated_server_syncs_and_has_no_drift(tmp_path: Path, server_schema: str) -> None:
    """Tables from autogenerate plus the sync helpers: pulls work, `check` sees no drift."""
    database = Database(server_schema)
    try:
        async with database.engine.begin() as conn:
            await conn.exec_driver_sql("DROP SCHEMA public CASCADE")
            await conn.exec_driver_sql("CREATE SCHEMA public")
        location = init(tmp_path / "migrations")
        (location / "env.py").write_text(ENV_PY)
        await revision(database, "initial", script_location=location, rev_id="0001")
        (location / "versions" / "0002_enable_sync.py").write_text(SYNC_REVISION)
        await upgrade(database, "head", script_location=location)
        await check(database, script_location=location)  # the sync columns are not drift
        task_id = uuid.uuid4()
        async with database.engine.begin() as conn:
            await conn.execute(insert(Task.__table__).values(id=task_id, owner_id=1, title="m"))
        await settle(database)
        page = await SyncServer(database, make_registry()).pull(
            PullRequest(client_id=uuid.uuid4(), schema_version=1), user=ALICE
        )
        assert [c.id for c in page.changes] == [task_id]
    finally:
        # leave the schema as the module fixture made it for the next modules
        async with database.engine.begin() as conn:
            await conn.exec_driver_sql("DROP SCHEMA public CASCADE")
            await conn.exec_driver_sql("CREATE SCHEMA public")
        await database.create_all(SyncBase.metadata)
        await SyncServer(database, make_registry()).install()
        await database.dispose()
