"""Run the blog example's migrations from Python: upgrade, drift check, stairway, offline SQL."""

import asyncio
import sys
import tempfile
from pathlib import Path

from sqlalchemy import inspect

ROOT = Path(__file__).resolve().parents[2]
# The blog's env.py imports its models (blog.models): make that package importable.
sys.path.insert(0, str(ROOT / "examples" / "blog"))

from underlay import Database  # noqa: E402
from underlay.migrations import check, stairway, upgrade, upgrade_sql  # noqa: E402

MIGRATIONS = ROOT / "examples" / "blog" / "migrations"


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with Database(f"sqlite+aiosqlite:///{tmp}/blog.db") as db:
            # Safe inside a running event loop: it runs on this loop's connection.
            await upgrade(db, "head", script_location=MIGRATIONS)
            # Raises MigrationDriftError, listing the differences, if the models moved on.
            await check(db, script_location=MIGRATIONS)
            async with db.engine.connect() as conn:
                tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
        assert {"users", "posts", "alembic_version"} <= set(tables)

        # On an empty, throwaway database: every revision up, down and up again.
        walked = await stairway(
            f"sqlite+aiosqlite:///{tmp}/stairway.db", script_location=MIGRATIONS
        )
        assert walked == ["0001"]

    # Offline mode: the SQL a DBA would run, for any dialect, without a connection.
    sql = upgrade_sql("postgresql+asyncpg://", script_location=MIGRATIONS)
    assert (
        "CREATE UNIQUE INDEX uq_users_email_live ON users (email) WHERE deleted_at IS NULL" in sql
    )
    print(f"tables: {sorted(tables)}; stairway walked {walked}; offline SQL {len(sql)} chars")


asyncio.run(main())
