"""`SyncServer`: the PostgreSQL side: install, pull, push, touch and tombstone collection."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from sqlalchemy import ColumnElement, Text, cast, literal_column, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from underlay._imports import require
from underlay.database import Database
from underlay.sync._ddl import SERVER_SQL, table_sql
from underlay.sync._errors import ClientSchemaTooOldError
from underlay.sync._push import PushApplier
from underlay.sync._registry import SyncRegistry, TableSpec
from underlay.sync._wire import (
    Cursor,
    PullRequest,
    PullResponse,
    PushRequest,
    PushResponse,
    RowState,
)

if TYPE_CHECKING:
    from fastapi import APIRouter

__all__ = ["SyncServer", "needs_resync"]

# Serialises concurrent install() calls (DDL on the same tables would deadlock).
_INSTALL_LOCK = 0x756E_6C61_7973_796E


def _default_identify(user: Any) -> str:
    return str(getattr(user, "id", user))


def quoted(spec: TableSpec) -> str:
    """Return the table's name quoted for raw SQL fragments."""
    return '"' + spec.name.replace('"', '""') + '"'


class SyncServer:
    """Serve pulls and pushes for the models of a `SyncRegistry` from a PostgreSQL database.

    Args:
        database: The server's `Database` (PostgreSQL 13 or later).
        registry: The synced models and their rules.
        min_client_schema: The oldest client schema version still accepted; older clients get
            `ClientSchemaTooOldError` (HTTP 426) and keep their outbox.
        identify: Returns a stable id for the user object the application authenticated;
            a client id stays bound to the user that first pushed with it. Default: its
            ``id`` attribute (or the object itself), as text.
        max_clock_skew: How far ahead of the server's clock a client's hybrid logical clock
            may run before it is clamped (``"lww"`` tables).
    """

    def __init__(
        self,
        database: Database,
        registry: SyncRegistry,
        *,
        min_client_schema: int | None = None,
        identify: Callable[[Any], str] = _default_identify,
        max_clock_skew: timedelta = timedelta(minutes=5),
    ) -> None:
        if database.engine.dialect.name != "postgresql":
            raise ValueError("SyncServer needs a PostgreSQL database (13 or later)")
        self.database = database
        self.registry = registry
        self.min_client_schema = (
            registry.schema_version if min_client_schema is None else min_client_schema
        )
        self.identify = identify
        self.max_clock_skew = max_clock_skew
        self._push = PushApplier(self)

    # -- set-up -----------------------------------------------------------------------------

    async def install(self) -> None:
        """Create the sync tables, columns, indexes and triggers; safe to run again.

        The synced models' tables must exist already (``create_all`` or migrations). For
        production, prefer the Alembic helpers in `underlay.sync.migrations`.
        """
        async with self.database.engine.begin() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _INSTALL_LOCK})
            for statement in SERVER_SQL:
                await conn.exec_driver_sql(statement)
            for spec in self.registry.specs():
                for statement in table_sql(spec.name):
                    await conn.exec_driver_sql(statement)

    def check_schema(self, schema_version: int) -> None:
        """Raise `ClientSchemaTooOldError` if ``schema_version`` is below the accepted range."""
        if schema_version < self.min_client_schema:
            raise ClientSchemaTooOldError(
                schema_version=schema_version, min_client_schema=self.min_client_schema
            )

    # -- pull -------------------------------------------------------------------------------

    async def pull(self, request: PullRequest, *, user: Any) -> PullResponse:
        """Return the next page of changes in ``user``'s scope after the request's cursor.

        All tables are read in one REPEATABLE READ, read-only transaction: one snapshot, so
        one horizon. Only rows whose transaction finished before the snapshot's ``xmin`` are
        returned; anything still running stamps an xid at or above it, so it sorts after
        every cursor handed out here and cannot be skipped.

        Args:
            request: The client's cursor, page size and optional table filter.
            user: The authenticated user; decides the scope.

        Returns:
            The page, the cursor to store with it, and whether more pages follow.

        Raises:
            ClientSchemaTooOldError: The client's schema is older than accepted.
        """
        self.check_schema(request.schema_version)
        specs = self._specs(request.tables)
        limit = request.limit
        async with self.database.engine.connect() as plain:
            conn = await plain.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                await conn.exec_driver_sql("SET TRANSACTION READ ONLY")
                meta = await self._snapshot_meta(conn)
                cursor = Cursor.decode(request.cursor) if request.cursor else None
                if request.cursor is not None and (cursor is None or needs_resync(cursor, **meta)):
                    return PullResponse(
                        changes=[], cursor=None, has_more=False, resync_required=True
                    )
                after = (0, 0) if cursor is None else (cursor.xid, cursor.seq)
                # One row more than the page per table: whether more follow is then known
                # without a last, empty round trip.
                per_table = [
                    await self._pull_table(conn, spec, after, limit + 1, user) for spec in specs
                ]
        merged = list(heapq.merge(*per_table, key=lambda item: (item[0], item[1])))
        has_more = len(merged) > limit
        page = merged[:limit]
        next_cursor: Cursor | None
        if has_more and page:
            last = page[-1]
            next_cursor = Cursor(meta["epoch"], last[0], last[1])
        elif has_more:  # pragma: no cover - a page of limit >= 1 rows is never empty
            next_cursor = cursor
        else:
            # Everything below the horizon was sent: the next pull starts at the horizon.
            next_cursor = Cursor(meta["epoch"], meta["xmin"], 0)
        return PullResponse(
            changes=[state for _, _, state in page],
            cursor=None if next_cursor is None else next_cursor.encode(),
            has_more=has_more,
        )

    async def _snapshot_meta(self, conn: AsyncConnection) -> dict[str, Any]:
        row = (
            await conn.execute(
                text(
                    "SELECT pg_snapshot_xmin(s)::text AS xmin, pg_snapshot_xmax(s)::text AS xmax,"
                    " (SELECT value FROM underlay_sync_meta WHERE key = 'server_epoch') AS epoch,"
                    " (SELECT value FROM underlay_sync_meta WHERE key = 'gc_horizon') AS gc"
                    " FROM pg_current_snapshot() AS s"
                )
            )
        ).one()
        gc_xid, _, gc_seq = row.gc.partition(".")
        return {
            "xmin": int(row.xmin),
            "xmax": int(row.xmax),
            "epoch": row.epoch,
            "gc_horizon": (int(gc_xid), int(gc_seq or 0)),
        }

    async def _pull_table(
        self,
        conn: AsyncConnection,
        spec: TableSpec,
        after: tuple[int, int],
        limit: int,
        user: Any,
    ) -> list[tuple[int, int, RowState]]:
        q = quoted(spec)
        xid: ColumnElement[Any] = literal_column(f"{q}.sync_xid")
        seq: ColumnElement[Any] = literal_column(f"{q}.sync_seq")
        # asyncpg has no codec for xid8: it travels as text and is cast on the server.
        stmt = (
            select(*spec.data_columns, cast(xid, Text).label("_sync_xid"), seq.label("_sync_seq"))
            .where(
                text(
                    f"({q}.sync_xid, {q}.sync_seq) > (CAST(CAST(:cx AS text) AS xid8), :cs)"
                ).bindparams(cx=str(after[0]), cs=after[1]),
                text(f"{q}.sync_xid < pg_snapshot_xmin(pg_current_snapshot())"),
            )
            .order_by(xid, seq)
            .limit(limit)
        )
        if spec.scope is not None and (condition := spec.scope(user)) is not None:
            stmt = stmt.where(condition)
        rows = (await conn.execute(stmt)).mappings().all()
        return [
            (int(row["_sync_xid"]), int(row["_sync_seq"]), row_state(spec, row)) for row in rows
        ]

    def _specs(self, tables: Iterable[str] | None) -> list[TableSpec]:
        if tables is None:
            return self.registry.specs()
        specs = []
        for name in tables:
            spec = self.registry.spec(name)
            if spec is None:
                raise ValueError(f"table {name!r} is not synced")
            specs.append(spec)
        return specs

    # -- push -------------------------------------------------------------------------------

    async def push(self, request: PushRequest, *, user: Any) -> PushResponse:
        """Apply a client's mutations, each transaction group in one database transaction.

        A mutation id the server has recorded for this client is answered from the ledger
        (``duplicate=True``) and never applied twice.

        Args:
            request: The mutations, in mutation id order.
            user: The authenticated user; decides the scope and owns the client id.

        Returns:
            One result per mutation, in request order.

        Raises:
            ClientSchemaTooOldError: A mutation was made under a schema older than accepted.
            MutationIdReusedError: A recorded mutation id came back with other content.
            SyncPermissionError: The client id belongs to another user.
        """
        for mutation in request.mutations:
            self.check_schema(mutation.schema_version)
        return await self._push.push(request, user)

    def fastapi_router(self, *, get_user: Callable[..., Any]) -> APIRouter:
        """Return a FastAPI router with ``POST /pull`` and ``POST /push`` for this server.

        Mount it with ``app.include_router(server.fastapi_router(get_user=...),
        prefix="/sync")``. Authentication is the application's: ``get_user`` is a FastAPI
        dependency returning the user (raise 401 there). Errors map to 426 (client schema
        too old), 409 (mutation id reused), 403 (client id of another user) and 400.

        Args:
            get_user: The dependency that authenticates the request.

        Returns:
            The router.
        """
        require("fastapi", extra="sync")
        from underlay.sync._http import sync_router  # noqa: PLC0415 - FastAPI is optional

        return sync_router(self, get_user)

    # -- maintenance ------------------------------------------------------------------------

    async def touch(self, model: type[Any], ids: Iterable[UUID]) -> int:
        """Re-stamp rows without a new version, so every client pulls them again.

        Use it when rows enter a scope (moved to a shared project) or after a backfill.

        Returns:
            The number of rows touched.
        """
        spec = self._spec_of(model)
        id_list = list(ids)
        if not id_list:
            return 0
        async with self.database.engine.begin() as conn:
            await conn.execute(text("SELECT set_config('underlay.sync_touch', 'on', true)"))
            result = await conn.execute(
                spec.table.update().where(spec.pk.in_(id_list)).values({spec.pk.name: spec.pk})
            )
        return int(result.rowcount)

    async def collect_tombstones(self, *, retention: timedelta = timedelta(days=90)) -> int:
        """Delete tombstones older than ``retention`` and raise the GC horizon past them.

        Clients whose cursor is below the new horizon get ``resync_required`` on their next
        pull. ``retention`` must cover the longest time a client may stay offline.

        Returns:
            The number of rows purged.
        """
        purged = 0
        horizon: tuple[int, int] = (0, 0)
        async with self.database.engine.begin() as conn:
            await conn.execute(text("SELECT set_config('underlay.sync_gc', 'on', true)"))
            current = (
                await conn.execute(
                    text("SELECT value FROM underlay_sync_meta WHERE key = 'gc_horizon' FOR UPDATE")
                )
            ).scalar_one()
            cur_xid, _, cur_seq = current.partition(".")
            horizon = (int(cur_xid), int(cur_seq))
            for spec in self.registry.specs():
                purge = (
                    f"DELETE FROM {quoted(spec)}"  # noqa: S608 - the registry's table name, quoted
                    " WHERE deleted_at < now() - CAST(:retention AS interval)"
                    " AND sync_xid < pg_snapshot_xmin(pg_current_snapshot())"
                    " RETURNING sync_xid::text, sync_seq"
                )
                rows = (
                    await conn.execute(
                        text(purge),
                        {"retention": retention},
                    )
                ).all()
                purged += len(rows)
                for xid, seq in rows:
                    horizon = max(horizon, (int(xid), int(seq)))
            await conn.execute(
                text("UPDATE underlay_sync_meta SET value = :v WHERE key = 'gc_horizon'"),
                {"v": f"{horizon[0]}.{horizon[1]}"},
            )
        return purged

    async def bump_epoch(self) -> None:
        """Start a new history: every client's next pull answers ``resync_required``.

        Run it after restoring the database from a backup.
        """
        async with self.database.engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE underlay_sync_meta SET value ="
                    " md5(random()::text || clock_timestamp()::text) WHERE key = 'server_epoch'"
                )
            )

    def _spec_of(self, model: type[Any]) -> TableSpec:
        spec = self.registry.spec(model.__table__.name)
        if spec is None or spec.model is not model:
            raise ValueError(f"{model.__name__} is not registered for sync")
        return spec


def needs_resync(
    cursor: Cursor, *, epoch: str, xmin: int, xmax: int, gc_horizon: tuple[int, int]
) -> bool:
    """Return whether a client at ``cursor`` must pull everything again.

    It must when the history changed (another ``epoch``: a restore), when tombstones it has
    not seen were purged (below ``gc_horizon``), or when the cursor is from a future this
    server never reached (an xid above ``xmax``, what a restore without an epoch bump
    leaves). A cursor equal to ``xmax`` is the one a pull hands out when the server is idle
    (the horizon of a snapshot with no transaction running), not one from the future.
    """
    del xmin  # part of the snapshot's description, not of the decision
    return cursor.epoch != epoch or cursor.xid > xmax or (cursor.xid, cursor.seq) < gc_horizon


def row_state(spec: TableSpec, row: Any) -> RowState:
    """Return the wire form of a server row (a mapping with the model's columns)."""
    return RowState(
        table=spec.name,
        id=row[spec.pk.name],
        version=row["version"],
        deleted=row["deleted_at"] is not None,
        data=spec.to_json(row),
    )
