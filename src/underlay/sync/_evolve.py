"""Schema evolution on the client: renamed columns in the outbox, backfills of new tables.

Two things change under a client that keeps its data across an application upgrade:

* a synced column is renamed: pending outbox entries and shadow rows still name the old
  column; `apply_renames` moves them to the new name (in-flight entries are resent exactly
  as they were frozen, and the server reads the old name through the same registry entry);
* a table (or a column of one) becomes synced: the client's cursor is past every row it
  skipped while it did not know them; `plan_backfill` names the tables to pull again from
  the start, with a cursor of their own, while the main cursor carries on.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from underlay.sync._registry import SyncRegistry

__all__ = ["apply_renames", "plan_backfill", "record_tables", "signature"]


def signature(registry: SyncRegistry) -> dict[str, list[str]]:
    """Return the synced tables and, per table, the columns this client syncs."""
    return {spec.name: sorted(spec.adapters) for spec in registry.specs()}


async def _get(conn: AsyncConnection, key: str) -> str | None:
    value = (
        await conn.execute(text("SELECT value FROM underlay_sync_state WHERE key = :k"), {"k": key})
    ).scalar_one_or_none()
    return None if value is None else str(value)


async def record_tables(conn: AsyncConnection, registry: SyncRegistry) -> None:
    """Note that every table and column of ``registry`` is covered by the main cursor."""
    await conn.execute(
        text(
            "INSERT INTO underlay_sync_state (key, value) VALUES ('tables', :v)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        ),
        {"v": json.dumps(signature(registry), sort_keys=True)},
    )
    await conn.execute(text("DELETE FROM underlay_sync_state WHERE key = 'backfill_cursor'"))


async def plan_backfill(
    conn: AsyncConnection, registry: SyncRegistry, *, has_cursor: bool
) -> list[str]:
    """Return the tables to pull from the start because the registry grew since the cursor.

    A client without a cursor pulls everything anyway, and a client that never recorded its
    tables (made before backfills existed) is taken to have had all of them.
    """
    known_value = await _get(conn, "tables")
    if not has_cursor or known_value is None:
        await record_tables(conn, registry)
        return []
    known: dict[str, list[str]] = json.loads(known_value)
    current = signature(registry)
    grown = []
    for spec in registry.specs():
        if spec.name not in known:
            grown.append(spec.name)
            continue
        # a renamed column kept its values locally: it needs no backfill
        had = {spec.renamed.get(c, c) for c in known[spec.name]}
        if not set(current[spec.name]) <= had:
            grown.append(spec.name)
    if not grown and known != current:
        await record_tables(conn, registry)  # only tables or columns were dropped
    return grown


async def apply_renames(conn: AsyncConnection, registry: SyncRegistry) -> int:
    """Move pending outbox entries and shadow rows to the current column names.

    Returns:
        How many outbox entries and shadow rows were rewritten.
    """
    rewritten = 0
    for spec in registry.specs():
        if not spec.renamed:
            continue
        entries = await conn.execute(
            text(
                "SELECT mutation_id, changed FROM underlay_sync_outbox"
                " WHERE table_name = :t AND state = 'pending'"
            ),
            {"t": spec.name},
        )
        updates: list[dict[str, Any]] = []
        for mutation_id, changed in entries:
            old = json.loads(changed)
            new = spec.current_names(old)
            if new != old:
                updates.append({"c": json.dumps(new), "m": mutation_id})
        if updates:
            await conn.execute(
                text("UPDATE underlay_sync_outbox SET changed = :c WHERE mutation_id = :m"),
                updates,
            )
        shadows = await conn.execute(
            text("SELECT row_id, data FROM underlay_sync_shadow WHERE table_name = :t"),
            {"t": spec.name},
        )
        shadow_updates: list[dict[str, Any]] = []
        for row_id, data in shadows:
            if data is None:
                continue
            old = json.loads(data)
            new = spec.current_names(old)
            if new != old:
                shadow_updates.append({"d": json.dumps(new), "t": spec.name, "r": row_id})
        if shadow_updates:
            await conn.execute(
                text(
                    "UPDATE underlay_sync_shadow SET data = :d"
                    " WHERE table_name = :t AND row_id = :r"
                ),
                shadow_updates,
            )
        rewritten += len(updates) + len(shadow_updates)
    return rewritten
