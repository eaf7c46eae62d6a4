"""Apply server rows to the client's database in batches: shadow first, local edits kept."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from typing import Any, Literal

from sqlalchemy import bindparam, select, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from underlay.sync._registry import TableSpec
from underlay.sync._wire import RowState

__all__ = ["Mode", "RowApplier", "pending_keys"]

Mode = Literal["pull", "resync", "reply", "backfill"]


async def pending_keys(
    conn: AsyncConnection, table: str, row_ids: Iterable[str]
) -> dict[str, frozenset[str]]:
    """Return, per row, the columns with local changes the server has not acknowledged."""
    ids = list(row_ids)
    keys: dict[str, set[str]] = defaultdict(set)
    for chunk in _chunks(ids):
        rows = await conn.execute(
            text(
                "SELECT row_id, op, changed FROM underlay_sync_outbox"
                " WHERE table_name = :t AND row_id IN :ids"
            ).bindparams(bindparam("ids", expanding=True)),
            {"t": table, "ids": chunk},
        )
        for row_id, op, changed in rows:
            keys[row_id].update(json.loads(changed))
            if op == "delete":
                keys[row_id].add("deleted_at")
    return {k: frozenset(v) for k, v in keys.items()}


def _chunks(ids: list[str], size: int = 500) -> Iterable[list[str]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


class RowApplier:
    """Write a batch of server rows for one table in a few statements.

    Each row is skipped when the shadow already holds its version (``"pull"``), replaces the
    shadow whatever its version (``"resync"``), or rewrites the local row from the newest
    server state known (``"reply"``: a push result, where our change may have lost).
    Columns with unacknowledged local edits keep their local values (a rebase).
    """

    def __init__(self, conn: AsyncConnection, spec: TableSpec) -> None:
        self.conn = conn
        self.spec = spec

    async def apply(self, changes: list[tuple[str, RowState]], mode: Mode) -> int:
        """Apply ``(row_id, state)`` pairs; return how many rows were written."""
        if not changes:
            return 0
        spec, conn = self.spec, self.conn
        ids = [row_id for row_id, _ in changes]
        shadows: dict[str, tuple[int, str | None]] = {}
        for chunk in _chunks(ids):
            result = await conn.execute(
                text(
                    "SELECT row_id, version, data FROM underlay_sync_shadow"
                    " WHERE table_name = :t AND row_id IN :ids"
                ).bindparams(bindparam("ids", expanding=True)),
                {"t": spec.name, "ids": chunk},
            )
            shadows.update({r.row_id: (r.version, r.data) for r in result})
        keep = await pending_keys(conn, spec.name, ids)
        shadow_writes: list[dict[str, Any]] = []
        rows: list[tuple[str, dict[str, Any]]] = []
        for row_id, state in changes:
            shadow = shadows.get(row_id)
            if shadow is not None and mode != "resync" and shadow[0] >= state.version:
                if mode == "pull" or (mode == "backfill" and shadow[0] > state.version):
                    continue  # our own echo, or older than what we have
                if mode == "backfill":
                    # the same version again, now with the columns this client lacked
                    shadow_writes.append(_shadow_write(spec.name, row_id, state))
                    rows.append((row_id, state.data or {}))
                    continue
                rows.append((row_id, json.loads(shadow[1] or "{}")))
                continue
            shadow_writes.append(_shadow_write(spec.name, row_id, state))
            rows.append((row_id, state.data or {}))
        if shadow_writes:
            await conn.execute(
                text(
                    "INSERT INTO underlay_sync_shadow (table_name, row_id, version, deleted,"
                    " data, unseen) VALUES (:t, :r, :v, :d, :data, 0)"
                    " ON CONFLICT (table_name, row_id) DO UPDATE SET version = excluded.version,"
                    " deleted = excluded.deleted, data = excluded.data, unseen = 0"
                ),
                shadow_writes,
            )
        await self.write_rows([(data, keep.get(row_id, frozenset())) for row_id, data in rows])
        return len(rows)

    async def write_rows(self, rows: list[tuple[dict[str, Any], frozenset[str]]]) -> None:
        """Upsert local rows from server data, keeping the listed columns' local values."""
        if not rows:
            return
        spec, conn = self.spec, self.conn
        pk = spec.pk
        converted = []
        for data, keep in rows:
            values = spec.from_json(spec.current_names(data))
            values.pop("version", None)
            converted.append((values, keep))
        existing: set[Any] = set()
        keys = [values[pk.name] for values, _ in converted]
        for start in range(0, len(keys), 500):
            result = await conn.execute(select(pk).where(pk.in_(keys[start : start + 500])))
            existing.update(result.scalars())
        groups: dict[tuple[frozenset[str], frozenset[str]], list[dict[str, Any]]] = defaultdict(
            list
        )
        for values, keep in converted:
            if values[pk.name] not in existing and values.get("deleted_at") is not None:
                continue  # the tombstone of a row we never had: the shadow is enough
            groups[(frozenset(values), keep)].append({**values, "version": 1})
        for (columns, keep), batch in groups.items():
            stmt = sqlite_insert(spec.table)
            updates: dict[str, Any] = {
                c: stmt.excluded[c] for c in columns if c != pk.name and c not in keep
            }
            updates["version"] = spec.table.c.version + 1
            await conn.execute(stmt.on_conflict_do_update(index_elements=[pk], set_=updates), batch)


def _shadow_write(table: str, row_id: str, state: RowState) -> dict[str, Any]:
    return {
        "t": table,
        "r": row_id,
        "v": state.version,
        "d": int(state.deleted),
        "data": json.dumps(state.data or {}),
    }
