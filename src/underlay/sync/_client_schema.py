"""The client's SQLite bookkeeping tables and the triggers that fill its outbox.

The trigger SQL is built from the registry's table and column names, each quoted (`_q`,
`_lit`); no value from outside the application reaches it.
"""

# ruff: noqa: S608

from __future__ import annotations

from underlay.sync._registry import TableSpec

__all__ = ["CLIENT_SQL", "client_table_sql", "local_columns"]

CLIENT_SQL: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS underlay_sync_state (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL)""",
    # mutation ids only grow (AUTOINCREMENT never reuses one, even after the newest is gone)
    """CREATE TABLE IF NOT EXISTS underlay_sync_outbox (
        mutation_id INTEGER PRIMARY KEY AUTOINCREMENT,
        table_name TEXT NOT NULL,
        row_id TEXT NOT NULL,
        op TEXT NOT NULL,
        base_version INTEGER NOT NULL,
        changed TEXT NOT NULL,
        written_ms INTEGER NOT NULL,
        payload TEXT,
        state TEXT NOT NULL DEFAULT 'pending')""",
    """CREATE INDEX IF NOT EXISTS underlay_sync_outbox_row
        ON underlay_sync_outbox (table_name, row_id, state)""",
    """CREATE TABLE IF NOT EXISTS underlay_sync_shadow (
        table_name TEXT NOT NULL,
        row_id TEXT NOT NULL,
        version INTEGER NOT NULL,
        deleted INTEGER NOT NULL,
        data TEXT,
        unseen INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (table_name, row_id))""",
    """CREATE TABLE IF NOT EXISTS underlay_sync_conflicts (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        mutation_id INTEGER NOT NULL,
        table_name TEXT NOT NULL,
        row_id TEXT NOT NULL,
        status TEXT NOT NULL,
        kind TEXT,
        policy TEXT,
        resolution TEXT,
        error TEXT,
        seen INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now')))""",
)

_NOW_MS = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
_NOT_APPLYING = "NOT EXISTS (SELECT 1 FROM underlay_sync_state WHERE key = 'applying')"


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _lit(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def local_columns(spec: TableSpec) -> list[str]:
    """Return the columns a local change is sent for (all but key, version and timestamps)."""
    system = {spec.pk.name, "version", "deleted_at", "created_at", "updated_at"}
    return [c.name for c in spec.data_columns if c.name not in system]


def client_table_sql(spec: TableSpec) -> tuple[str, ...]:
    """Return the statements (re)creating ``spec``'s outbox triggers on the client."""
    table, name = _q(spec.name), _lit(spec.name)
    pk = f"NEW.{_q(spec.pk.name)}"
    columns = local_columns(spec)
    everything = "json_object(" + ", ".join(f"{_lit(c)}, 1" for c in columns) + ")"
    paths = "".join(
        f", CASE WHEN NEW.{_q(c)} IS OLD.{_q(c)} THEN {_lit('$.' + _json_key(c))}"
        f" ELSE '$.\"~\"' END"
        for c in columns
    )
    diff = f"json_remove({everything}{paths})"
    op = "CASE WHEN NEW.deleted_at IS NULL THEN 'upsert' ELSE 'delete' END"
    row = f"table_name = {name} AND row_id = {pk}"
    shadow = f"(SELECT 1 FROM underlay_sync_shadow WHERE {row})"
    inflight = f"(SELECT 1 FROM underlay_sync_outbox WHERE {row} AND state = 'inflight')"
    pending = f"(SELECT 1 FROM underlay_sync_outbox WHERE {row} AND state = 'pending')"

    def body(changed: str, worth_sending: str) -> str:
        return f"""
            -- a create never sent, deleted again: nothing to tell the server
            DELETE FROM underlay_sync_outbox WHERE {row} AND state = 'pending'
                AND base_version = 0 AND NEW.deleted_at IS NOT NULL
                AND NOT EXISTS {shadow} AND NOT EXISTS {inflight};
            -- a change merges into the row's pending entry, never into one in flight
            UPDATE underlay_sync_outbox
                SET changed = json_patch(changed, {changed}), op = {op},
                    written_ms = {_NOW_MS}
                WHERE {row} AND state = 'pending';
            INSERT INTO underlay_sync_outbox
                (table_name, row_id, op, base_version, changed, written_ms)
            SELECT {name}, {pk}, {op},
                coalesce((SELECT version FROM underlay_sync_shadow WHERE {row}), 0),
                {changed}, {_NOW_MS}
            WHERE NOT EXISTS {pending} AND ({worth_sending})
                AND (NEW.deleted_at IS NULL OR EXISTS {shadow} OR EXISTS {inflight});
        """

    trigger = _q(f"underlay_sync_{spec.name}")
    return (
        f'DROP TRIGGER IF EXISTS {trigger[:-1]}_ai"',
        f'DROP TRIGGER IF EXISTS {trigger[:-1]}_au"',
        f'DROP TRIGGER IF EXISTS {trigger[:-1]}_bd"',
        f"""CREATE TRIGGER {trigger[:-1]}_ai" AFTER INSERT ON {table}
            WHEN {_NOT_APPLYING}
            BEGIN {body(everything, "1")} END""",
        f"""CREATE TRIGGER {trigger[:-1]}_au" AFTER UPDATE ON {table}
            WHEN {_NOT_APPLYING}
            BEGIN {body(diff, f"{diff} <> '{{}}' OR NEW.deleted_at IS NOT OLD.deleted_at")} END""",
        f"""CREATE TRIGGER {trigger[:-1]}_bd" BEFORE DELETE ON {table}
            WHEN {_NOT_APPLYING}
            BEGIN SELECT RAISE(ABORT, 'rows of a synced table are soft-deleted, never deleted');
            END""",
    )


def _json_key(column: str) -> str:
    return '"' + column.replace('"', '\\"') + '"'
