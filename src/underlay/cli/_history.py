"""Read the migration scripts and the database's current revision for ``underlay history``."""

from __future__ import annotations

from pathlib import Path

from underlay.migrations import make_config  # needs the alembic extra: imported first

from alembic.runtime.migration import MigrationContext  # isort: skip
from alembic.script import ScriptDirectory  # isort: skip
from sqlalchemy.engine import Connection

from underlay.database import Database

__all__ = ["current_revisions", "revisions"]


def revisions(location: Path) -> list[tuple[str, str | None, str, bool]]:
    """Return ``(revision, down_revision, message, is_head)`` from the newest to the oldest."""
    scripts = ScriptDirectory.from_config(make_config(location))
    heads = set(scripts.get_heads())
    found = []
    for script in scripts.walk_revisions("base", "heads"):
        down = script.down_revision
        shown = down if isinstance(down, str) or down is None else ", ".join(down)
        found.append((script.revision, shown, script.doc or "", script.revision in heads))
    return found


def _current(connection: Connection) -> tuple[str, ...]:
    return tuple(MigrationContext.configure(connection).get_current_heads())


async def current_revisions(url: str) -> tuple[str, ...]:
    """Return the revisions the database is at (none for an unmigrated database)."""
    database = Database(url)
    try:
        async with database.engine.connect() as conn:
            return await conn.run_sync(_current)
    finally:
        await database.dispose()
