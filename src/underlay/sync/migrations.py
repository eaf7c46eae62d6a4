"""Alembic helpers that create the server's sync objects inside your migrations.

Call them from a migration's ``upgrade()`` (needs the ``alembic`` extra)::

    from underlay.sync.migrations import enable_sync, install_sync

    def upgrade() -> None:
        install_sync(op)              # once: sequence, bookkeeping tables, trigger functions
        enable_sync(op, "task")       # per synced table, after the table exists

The statements are the ones `SyncServer.install` runs, so a database set up by migrations and
one set up by ``install()`` are the same. underlay's drift check ignores these objects.
"""

from __future__ import annotations

from typing import Any

from underlay.sync._ddl import DROP_TABLE_SQL, SERVER_SQL, table_sql

__all__ = ["disable_sync", "enable_sync", "install_sync", "uninstall_sync"]


def install_sync(op: Any) -> None:
    """Create the sequence, bookkeeping tables and trigger functions (idempotent).

    Args:
        op: Alembic's ``op`` (``alembic.op``) inside a migration.
    """
    for statement in SERVER_SQL:
        op.execute(statement)


def enable_sync(op: Any, table: str) -> None:
    """Add the change-feed columns, index and triggers to ``table`` (idempotent).

    Args:
        op: Alembic's ``op`` inside a migration.
        table: The synced table's name.
    """
    for statement in table_sql(table):
        op.execute(statement)


def disable_sync(op: Any, table: str) -> None:
    """Remove the triggers, index and change-feed columns from ``table`` (a downgrade).

    Args:
        op: Alembic's ``op`` inside a migration.
        table: The synced table's name.
    """
    quoted = '"' + table.replace('"', '""') + '"'
    op.execute(f"DROP TRIGGER IF EXISTS underlay_sync_stamp ON {quoted}")
    op.execute(f"DROP TRIGGER IF EXISTS underlay_sync_no_delete ON {quoted}")
    op.execute(
        f"ALTER TABLE {quoted} DROP COLUMN IF EXISTS sync_xid, DROP COLUMN IF EXISTS sync_seq,"
        " DROP COLUMN IF EXISTS origin_client_id, DROP COLUMN IF EXISTS origin_mutation_id,"
        " DROP COLUMN IF EXISTS hlc"
    )


def uninstall_sync(op: Any) -> None:
    """Drop the shared sync objects (after `disable_sync` on every table).

    Args:
        op: Alembic's ``op`` inside a migration.
    """
    for statement in DROP_TABLE_SQL:
        op.execute(statement)
