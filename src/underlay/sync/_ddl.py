"""The server's sync tables and triggers (PostgreSQL 13 or later), as SQL statements.

Used by `SyncServer.install` and by the Alembic helpers, so both create the same objects.
"""

from __future__ import annotations

__all__ = ["DROP_TABLE_SQL", "SERVER_SQL", "table_sql"]

#: Shared objects: the stamp sequence, the bookkeeping tables and the trigger functions.
SERVER_SQL: tuple[str, ...] = (
    "CREATE SEQUENCE IF NOT EXISTS underlay_sync_seq",
    """CREATE TABLE IF NOT EXISTS underlay_sync_meta (
        key text PRIMARY KEY,
        value text NOT NULL)""",
    """INSERT INTO underlay_sync_meta (key, value)
        VALUES ('server_epoch', md5(random()::text || clock_timestamp()::text)),
               ('gc_horizon', '0.0')
        ON CONFLICT (key) DO NOTHING""",
    """CREATE TABLE IF NOT EXISTS underlay_sync_clients (
        client_id uuid PRIMARY KEY,
        user_id text NOT NULL,
        last_mutation_id bigint NOT NULL DEFAULT 0,
        schema_version integer NOT NULL DEFAULT 0,
        last_seen_at timestamptz NOT NULL DEFAULT now())""",
    """CREATE TABLE IF NOT EXISTS underlay_sync_mutation_results (
        client_id uuid NOT NULL,
        mutation_id bigint NOT NULL,
        digest text NOT NULL,
        status text NOT NULL,
        result jsonb NOT NULL,
        created_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (client_id, mutation_id))""",
    """CREATE TABLE IF NOT EXISTS underlay_sync_conflicts (
        id bigserial PRIMARY KEY,
        client_id uuid NOT NULL,
        mutation_id bigint NOT NULL,
        table_name text NOT NULL,
        row_id uuid NOT NULL,
        kind text NOT NULL,
        policy text NOT NULL,
        resolution text NOT NULL,
        base jsonb,
        local jsonb,
        remote jsonb,
        resolved jsonb,
        reason text,
        created_at timestamptz NOT NULL DEFAULT now())""",
    # Every write stamps the row with its transaction's top-level xid (xid8, so the right one
    # inside a savepoint too) and a sequence number, and moves the version; a sync push names
    # itself in the transaction-local setting underlay.sync_origin.
    """CREATE OR REPLACE FUNCTION underlay_sync_stamp() RETURNS trigger
    LANGUAGE plpgsql AS $$
    DECLARE
        origin text := coalesce(current_setting('underlay.sync_origin', true), '');
    BEGIN
        NEW.sync_xid := pg_current_xact_id();
        NEW.sync_seq := nextval('underlay_sync_seq');
        IF TG_OP = 'UPDATE'
           AND coalesce(current_setting('underlay.sync_touch', true), '') = 'on' THEN
            NEW.version := OLD.version;
            NEW.origin_client_id := OLD.origin_client_id;
            NEW.origin_mutation_id := OLD.origin_mutation_id;
            NEW.hlc := OLD.hlc;
            RETURN NEW;
        END IF;
        IF TG_OP = 'INSERT' THEN
            NEW.version := 1;
        ELSE
            NEW.version := OLD.version + 1;
        END IF;
        IF origin <> '' THEN
            NEW.origin_client_id := split_part(origin, '/', 1)::uuid;
            NEW.origin_mutation_id := split_part(origin, '/', 2)::bigint;
            NEW.hlc := nullif(split_part(origin, '/', 3), '');
        ELSE
            NEW.origin_client_id := NULL;
            NEW.origin_mutation_id := NULL;
            NEW.hlc := lpad(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint::text,
                            15, '0') || ':00000:server';
        END IF;
        -- A hybrid logical clock: a change orders after the one it replaces, also when the
        -- writer's clock is behind it (the server's clock went back, a slow device).
        IF TG_OP = 'UPDATE' AND NEW.hlc IS NOT NULL AND OLD.hlc IS NOT NULL
           AND left(NEW.hlc, 21) <= left(OLD.hlc, 21) THEN
            NEW.hlc := split_part(OLD.hlc, ':', 1) || ':'
                || lpad((split_part(OLD.hlc, ':', 2)::bigint + 1)::text, 5, '0') || ':'
                || coalesce(nullif(split_part(NEW.hlc, ':', 3), ''), 'server');
        END IF;
        RETURN NEW;
    END $$""",
    """CREATE OR REPLACE FUNCTION underlay_sync_no_delete() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        IF coalesce(current_setting('underlay.sync_gc', true), '') = 'on' THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION 'rows of the synced table % are soft-deleted, never deleted', TG_TABLE_NAME
            USING ERRCODE = '23514', HINT = 'set deleted_at instead (repository.delete)';
    END $$""",
)


def table_sql(table: str) -> tuple[str, ...]:
    """Return the statements that add the change-feed columns and triggers to ``table``."""
    quoted = '"' + table.replace('"', '""') + '"'
    index = '"' + f"{table}_sync_cursor".replace('"', '""') + '"'
    return (
        f"""ALTER TABLE {quoted}
            ADD COLUMN IF NOT EXISTS sync_xid xid8 NOT NULL DEFAULT pg_current_xact_id(),
            ADD COLUMN IF NOT EXISTS sync_seq bigint NOT NULL
                DEFAULT nextval('underlay_sync_seq'),
            ADD COLUMN IF NOT EXISTS origin_client_id uuid,
            ADD COLUMN IF NOT EXISTS origin_mutation_id bigint,
            ADD COLUMN IF NOT EXISTS hlc text""",
        f"CREATE INDEX IF NOT EXISTS {index} ON {quoted} (sync_xid, sync_seq)",
        f"DROP TRIGGER IF EXISTS underlay_sync_stamp ON {quoted}",
        f"""CREATE TRIGGER underlay_sync_stamp BEFORE INSERT OR UPDATE ON {quoted}
            FOR EACH ROW EXECUTE FUNCTION underlay_sync_stamp()""",
        f"DROP TRIGGER IF EXISTS underlay_sync_no_delete ON {quoted}",
        f"""CREATE TRIGGER underlay_sync_no_delete BEFORE DELETE ON {quoted}
            FOR EACH ROW EXECUTE FUNCTION underlay_sync_no_delete()""",
    )


#: Statements that remove the shared objects (after every table's triggers are gone).
DROP_TABLE_SQL: tuple[str, ...] = (
    "DROP TABLE IF EXISTS underlay_sync_conflicts",
    "DROP TABLE IF EXISTS underlay_sync_mutation_results",
    "DROP TABLE IF EXISTS underlay_sync_clients",
    "DROP TABLE IF EXISTS underlay_sync_meta",
    "DROP FUNCTION IF EXISTS underlay_sync_no_delete() CASCADE",
    "DROP FUNCTION IF EXISTS underlay_sync_stamp() CASCADE",
    "DROP SEQUENCE IF EXISTS underlay_sync_seq",
)
