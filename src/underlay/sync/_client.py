"""`SyncClient`: the SQLite side: outbox, push-then-pull loop, page application."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
import weakref
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from uuid import UUID

from pydantic_core import to_jsonable_python
from sqlalchemy import bindparam, event, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from underlay.database import Database
from underlay.sync._apply import Mode, RowApplier, pending_keys
from underlay.sync._client_schema import CLIENT_SQL, client_table_sql
from underlay.sync._errors import SyncTransportError
from underlay.sync._evolve import apply_renames, plan_backfill, record_tables
from underlay.sync._hlc import Clock
from underlay.sync._registry import SyncRegistry, TableSpec
from underlay.sync._transport import SyncTransport
from underlay.sync._wire import (
    Mutation,
    MutationResult,
    PullRequest,
    PullResponse,
    PushRequest,
    PushResponse,
    RowState,
)

__all__ = ["HOOK_POINTS", "SyncClient", "SyncReport"]

_T = TypeVar("_T")

#: Crash points a test can hook (`SyncClient(hook=...)`), in the order a sync reaches them.
HOOK_POINTS = (
    "after_mark_inflight",
    "after_push_response",
    "mid_page_apply",
    "before_cursor_store",
    "after_cursor_store",
)

Hook = Callable[[str], Awaitable[None] | None]

_LOCKS: weakref.WeakKeyDictionary[Database, asyncio.Lock] = weakref.WeakKeyDictionary()


@dataclass
class SyncReport:
    """What one `SyncClient.sync` did.

    Attributes:
        pushed: Mutations the server answered (applied, resolved, rejected or noop).
        pulled: Rows written locally from pulled pages.
        conflicts: Results of mutations that met a concurrent change, with their resolution.
        rejected: Results of mutations the server refused; their rows were reverted.
        resynced: Whether the server asked for (and got) a full resync.
    """

    pushed: int = 0
    pulled: int = 0
    conflicts: list[MutationResult] = field(default_factory=list)
    rejected: list[MutationResult] = field(default_factory=list)
    resynced: bool = False


class SyncClient:
    """Keep a local SQLite `Database` in sync with a `SyncServer`.

    Local writes go through the usual repositories and sessions; triggers record each
    change in an outbox in the same SQLite transaction, so reads and writes work with no
    network at all. `sync` pushes the outbox, then pulls the server's changes.

    Args:
        database: The local SQLite database; the synced models' tables must exist.
        registry: The same registry the server uses.
        transport: How to reach the server.
        batch_size: Mutations per push, and rows per pulled page.
        retries: Attempts per request before `sync` gives up with `SyncTransportError`.
        backoff: Base delay in seconds between attempts (exponential, with full jitter).
        hook: Called with the name of each crash point the sync reaches (tests use it
            to crash the process there).
    """

    def __init__(
        self,
        database: Database,
        registry: SyncRegistry,
        *,
        transport: SyncTransport,
        batch_size: int = 500,
        retries: int = 4,
        backoff: float = 0.05,
        hook: Hook | None = None,
    ) -> None:
        if database.engine.dialect.name != "sqlite":
            raise ValueError("SyncClient needs a SQLite database")
        self.database = database
        self.registry = registry
        self.transport = transport
        self.batch_size = batch_size
        self.retries = retries
        self.backoff = backoff
        self.hook = hook
        self.client_id: UUID | None = None
        self._acked: set[tuple[str, str]] = set()
        dialect = database.engine.dialect
        self._pk_bind = {
            spec.name: spec.pk.type.bind_processor(dialect) for spec in registry.specs()
        }

        @event.listens_for(database.engine.sync_engine, "connect")
        def _durable(dbapi_connection: Any, _record: Any) -> None:
            # A commit the OS lost would let SQLite hand out a mutation id again.
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute("PRAGMA synchronous = FULL")
            finally:
                cursor.close()

    @property
    def _lock(self) -> asyncio.Lock:
        lock = _LOCKS.get(self.database)
        if lock is None:
            lock = _LOCKS[self.database] = asyncio.Lock()
        return lock

    async def install(self) -> None:
        """Create the sync tables and (re-create) the outbox triggers; safe on every start.

        Run it after the application's own migrations: it also moves outbox entries and
        merge bases of columns the registry lists as ``renamed`` to their new names.
        """
        async with self.database.engine.begin() as conn:
            for statement in CLIENT_SQL:
                await conn.exec_driver_sql(statement)
            for spec in self.registry.specs():
                for statement in client_table_sql(spec):
                    await conn.exec_driver_sql(statement)
            await conn.execute(
                text("INSERT OR IGNORE INTO underlay_sync_state VALUES ('client_id', :v)"),
                {"v": str(uuid.uuid4())},
            )
            await conn.execute(text("DELETE FROM underlay_sync_state WHERE key = 'applying'"))
            await apply_renames(conn, self.registry)
            value = await _state(conn, "client_id")
        self.client_id = UUID(value)

    # -- helpers ------------------------------------------------------------------------------

    def _key(self, spec: TableSpec, row_id: UUID) -> str:
        bind = self._pk_bind[spec.name]
        return str(bind(row_id) if bind is not None else row_id)

    async def _hook(self, point: str) -> None:
        if self.hook is not None:
            result = self.hook(point)
            if result is not None:
                await result

    async def _retrying(self, call: Callable[[], Awaitable[_T]]) -> _T:
        for attempt in range(self.retries):
            try:
                return await call()
            except SyncTransportError:
                if attempt == self.retries - 1:
                    raise
                # Full jitter: clients that failed together do not retry together.
                await asyncio.sleep(random.uniform(0, self.backoff * 2**attempt))  # noqa: S311 - jitter, not security
        raise AssertionError("unreachable")  # pragma: no cover

    # -- the loop -----------------------------------------------------------------------------

    async def sync(self) -> SyncReport:
        """Push every pending local change, then pull until the server has nothing newer.

        Tables (or columns) this client's registry syncs since its cursor last moved are
        backfilled first: pulled from the start with a cursor of their own.

        One sync runs per local database at a time; a second call waits for the first.

        Returns:
            What was pushed, pulled, resolved and rejected.

        Raises:
            SyncTransportError: The server could not be reached after the retries; nothing
                is lost, the next sync resends the same mutations.
            ClientSchemaTooOldError: The server no longer accepts this schema version.
        """
        async with self._lock:
            if self.client_id is None:
                await self.install()
            report = SyncReport()
            self._acked = set()
            while batch := await self._next_batch():
                request = PushRequest(client_id=self._client_id, mutations=batch)
                response = await self._retrying(lambda r=request: self.transport.push(r))  # type: ignore[misc]  # bound per batch
                await self._hook("after_push_response")
                await self._apply_push(response, report)
            await self._pull_all(report)
            return report

    @property
    def _client_id(self) -> UUID:
        if self.client_id is None:  # pragma: no cover - sync() installs first
            raise RuntimeError("call install() first")
        return self.client_id

    # -- push ---------------------------------------------------------------------------------

    async def _next_batch(self) -> list[Mutation]:
        async with self.database.engine.begin() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT payload FROM underlay_sync_outbox WHERE state = 'inflight'"
                        " ORDER BY mutation_id LIMIT :n"
                    ),
                    {"n": self.batch_size},
                )
            ).all()
            if rows:  # a push that got no answer: resend exactly the same mutations
                return [Mutation.model_validate_json(r.payload) for r in rows]
            pending = (
                await conn.execute(
                    text(
                        "SELECT mutation_id, table_name, row_id, op, base_version, changed,"
                        " written_ms FROM underlay_sync_outbox WHERE state = 'pending'"
                        " ORDER BY mutation_id LIMIT :n"
                    ),
                    {"n": self.batch_size},
                )
            ).all()
            batch = await self._freeze(conn, pending)
        if batch:
            await self._hook("after_mark_inflight")
        return batch

    async def _freeze(self, conn: AsyncConnection, pending: Sequence[Any]) -> list[Mutation]:
        """Turn pending entries into mutations with the rows' current values; mark them sent.

        The payload is stored with the entry, so a resend after a lost reply carries exactly
        the same mutation (the server recognises it by id and content).
        """
        by_table: dict[str, list[Any]] = defaultdict(list)
        for entry in pending:
            by_table[entry.table_name].append(entry)
        current: dict[tuple[str, str], dict[str, Any]] = {}
        shadows: dict[tuple[str, str], dict[str, Any]] = {}
        for table, entries in by_table.items():
            spec = self.registry.spec(table)
            if spec is None:
                continue  # the table is no longer synced
            ids = [_pk_value(spec, e.row_id) for e in entries]
            result = await conn.execute(select(*spec.data_columns).where(spec.pk.in_(ids)))
            for found in result.mappings():
                current[(table, self._key(spec, found[spec.pk.name]))] = dict(found)
            result = await conn.execute(
                text(
                    "SELECT row_id, data FROM underlay_sync_shadow"
                    " WHERE table_name = :t AND row_id IN :ids"
                ).bindparams(bindparam("ids", expanding=True)),
                {"t": table, "ids": [e.row_id for e in entries]},
            )
            shadows.update(
                {(table, r.row_id): spec.current_names(json.loads(r.data or "{}")) for r in result}
            )
        hlc = await _state(conn, "hlc")
        clock = Clock.parse(hlc)
        batch: list[Mutation] = []
        updates: list[dict[str, Any]] = []
        dropped: list[int] = []
        for entry in pending:
            row = current.get((entry.table_name, entry.row_id))
            if row is None:
                dropped.append(entry.mutation_id)
                continue
            keys = list(json.loads(entry.changed))
            shadow = shadows.get((entry.table_name, entry.row_id))
            mutation = Mutation(
                mutation_id=entry.mutation_id,
                tx_group=entry.mutation_id,
                table=entry.table_name,
                id=row[self._spec(entry.table_name).pk.name],
                op=entry.op,
                base_version=entry.base_version,
                changed={k: to_jsonable_python(row[k]) for k in keys if k in row},
                base_values=None if shadow is None else {k: shadow.get(k) for k in keys},
                hlc=clock.tick(int(entry.written_ms), self._client_id),
                schema_version=self.registry.schema_version,
            )
            batch.append(mutation)
            updates.append({"p": mutation.model_dump_json(), "m": entry.mutation_id})
        if updates:
            await conn.execute(
                text(
                    "UPDATE underlay_sync_outbox SET state = 'inflight', payload = :p"
                    " WHERE mutation_id = :m"
                ),
                updates,
            )
            await _set_state(conn, "hlc", clock.dump())
        if dropped:
            await conn.execute(
                text("DELETE FROM underlay_sync_outbox WHERE mutation_id IN :ids").bindparams(
                    bindparam("ids", expanding=True)
                ),
                {"ids": dropped},
            )
        return batch

    def _spec(self, table: str) -> TableSpec:
        spec = self.registry.spec(table)
        if spec is None:  # pragma: no cover - callers filter unknown tables first
            raise ValueError(f"table {table!r} is not synced")
        return spec

    async def _apply_push(self, response: PushResponse, report: SyncReport) -> None:
        async with self.database.engine.begin() as conn:
            await _begin_apply(conn)
            ids = [r.mutation_id for r in response.results]
            entries = {}
            if ids:
                acked = await conn.execute(
                    text(
                        "DELETE FROM underlay_sync_outbox WHERE mutation_id IN :ids"
                        " RETURNING mutation_id, table_name, row_id"
                    ).bindparams(bindparam("ids", expanding=True)),
                    {"ids": ids},
                )
                entries = {r.mutation_id: (r.table_name, r.row_id) for r in acked}
            rows: dict[str, list[tuple[str, RowState]]] = defaultdict(list)
            for result in response.results:
                entry = entries.get(result.mutation_id)
                if entry is None:
                    continue  # answered before (a duplicate reply)
                table, row_id = entry
                self._acked.add(entry)
                spec = self.registry.spec(table)
                if spec is None:  # pragma: no cover - the table left the registry mid-flight
                    continue
                report.pushed += 1
                await self._record_result(conn, spec, row_id, result, report)
                if result.status == "rejected":
                    await self._revert(conn, spec, row_id)
                elif result.row is None:
                    await self._forget(conn, spec, row_id)
                else:
                    if result.status in {"applied", "noop"} or (
                        result.conflict is not None
                        and result.conflict.resolution in {"kept_local", "merged"}
                    ):
                        # Later edits of this row were made on top of our change, which the
                        # server now has: they are based on its new version.
                        await conn.execute(
                            text(
                                "UPDATE underlay_sync_outbox SET base_version = :v"
                                " WHERE table_name = :t AND row_id = :r AND state = 'pending'"
                                " AND base_version < :v"
                            ),
                            {"v": result.row.version, "t": table, "r": row_id},
                        )
                    rows[table].append((row_id, result.row))
            for table, changes in rows.items():
                await RowApplier(conn, self._spec(table)).apply(changes, "reply")
            await _set_state(conn, "last_acked_mutation_id", str(response.last_mutation_id))
            await _end_apply(conn)

    async def _record_result(
        self,
        conn: AsyncConnection,
        spec: TableSpec,
        row_id: str,
        result: MutationResult,
        report: SyncReport,
    ) -> None:
        if result.status == "rejected":
            report.rejected.append(result)
        elif result.conflict is not None and result.status != "noop":
            report.conflicts.append(result)
        else:
            return
        conflict = result.conflict
        await conn.execute(
            text(
                "INSERT INTO underlay_sync_conflicts (mutation_id, table_name, row_id,"
                " status, kind, policy, resolution, error) VALUES"
                " (:m, :t, :r, :s, :k, :p, :res, :e)"
            ),
            {
                "m": result.mutation_id,
                "t": spec.name,
                "r": row_id,
                "s": result.status,
                "k": conflict.kind if conflict else None,
                "p": conflict.policy if conflict else None,
                "res": conflict.resolution if conflict else None,
                "e": result.error,
            },
        )

    async def _revert(self, conn: AsyncConnection, spec: TableSpec, row_id: str) -> None:
        # The rejected change and every later edit built on it go; the row returns to what the
        # server last said.
        await conn.execute(
            text("DELETE FROM underlay_sync_outbox WHERE table_name = :t AND row_id = :r"),
            {"t": spec.name, "r": row_id},
        )
        shadow = (
            await conn.execute(
                text("SELECT data FROM underlay_sync_shadow WHERE table_name = :t AND row_id = :r"),
                {"t": spec.name, "r": row_id},
            )
        ).scalar_one_or_none()
        if shadow is None:
            await conn.execute(spec.table.delete().where(spec.pk == _pk_value(spec, row_id)))
            return
        await RowApplier(conn, spec).write_rows([(json.loads(shadow), frozenset())])

    async def _forget(self, conn: AsyncConnection, spec: TableSpec, row_id: str) -> None:
        if row_id not in await pending_keys(conn, spec.name, [row_id]):
            await conn.execute(spec.table.delete().where(spec.pk == _pk_value(spec, row_id)))
        await conn.execute(
            text("DELETE FROM underlay_sync_shadow WHERE table_name = :t AND row_id = :r"),
            {"t": spec.name, "r": row_id},
        )

    # -- pull -----------------------------------------------------------------------------------

    async def _pull_all(self, report: SyncReport) -> None:
        async with self.database.engine.begin() as conn:
            cursor = await _state(conn, "cursor")
            resyncing = await _state(conn, "resyncing") == "1"
            backfill = await plan_backfill(conn, self.registry, has_cursor=cursor is not None)
            backfill_cursor = await _state(conn, "backfill_cursor")
        if backfill:
            await self._backfill(backfill, backfill_cursor, report)
        while True:
            request = PullRequest(
                client_id=self._client_id,
                schema_version=self.registry.schema_version,
                cursor=cursor,
                limit=self.batch_size,
            )
            response = await self._retrying(lambda r=request: self.transport.pull(r))  # type: ignore[misc]  # bound per page
            if response.resync_required:
                report.resynced = True
                cursor, resyncing = None, True
                await self._start_resync()
                continue
            await self._apply_page(response, report, resyncing=resyncing)
            cursor = response.cursor
            if not response.has_more:
                break
        if resyncing:
            await self._finish_resync()

    async def _backfill(self, tables: list[str], cursor: str | None, report: SyncReport) -> None:
        """Pull ``tables`` from the start (they became synced after the main cursor passed).

        The pages carry a cursor of their own; the tables count as covered by the main cursor
        once the last page is in, in the same transaction.
        """
        while True:
            request = PullRequest(
                client_id=self._client_id,
                schema_version=self.registry.schema_version,
                cursor=cursor,
                tables=tables,
                limit=self.batch_size,
            )
            response = await self._retrying(lambda r=request: self.transport.pull(r))  # type: ignore[misc]  # bound per page
            if response.resync_required:
                cursor = None  # a new epoch or purged tombstones: start this backfill again
                continue
            await self._apply_page(
                response, report, resyncing=False, mode="backfill", backfilled=tables
            )
            cursor = response.cursor
            if not response.has_more:
                return

    async def _start_resync(self) -> None:
        async with self.database.engine.begin() as conn:
            await conn.execute(text("UPDATE underlay_sync_shadow SET unseen = 1"))
            await _set_state(conn, "resyncing", "1")
            await conn.execute(text("DELETE FROM underlay_sync_state WHERE key = 'cursor'"))
            await record_tables(conn, self.registry)  # the resync covers every table

    async def _finish_resync(self) -> None:
        # Rows the server no longer has (purged, or out of scope) are swept, unless they
        # carry local changes still to be pushed.
        async with self.database.engine.begin() as conn:
            await _begin_apply(conn)
            gone = (
                await conn.execute(
                    text("SELECT table_name, row_id FROM underlay_sync_shadow WHERE unseen = 1")
                )
            ).all()
            for table_name, row_id in gone:
                spec = self.registry.spec(table_name)
                # A row this sync just pushed is on the server even when the pull's horizon
                # held it back (a transaction still running elsewhere): keep it.
                if spec is not None and (table_name, row_id) not in self._acked:
                    await self._forget(conn, spec, row_id)
            await conn.execute(text("DELETE FROM underlay_sync_state WHERE key = 'resyncing'"))
            await _end_apply(conn)

    async def _apply_page(
        self,
        response: PullResponse,
        report: SyncReport,
        *,
        resyncing: bool,
        mode: Mode | None = None,
        backfilled: list[str] | None = None,
    ) -> None:
        by_table: dict[str, list[tuple[str, RowState]]] = defaultdict(list)
        for change in response.changes:
            spec = self.registry.spec(change.table)
            if spec is not None:  # else a table this client does not sync (yet)
                by_table[change.table].append((self._key(spec, change.id), change))
        async with self.database.engine.begin() as conn:
            await _begin_apply(conn)
            for index, (table, changes) in enumerate(by_table.items()):
                applier = RowApplier(conn, self._spec(table))
                report.pulled += await applier.apply(
                    changes, mode or ("resync" if resyncing else "pull")
                )
                if index == 0:
                    await self._hook("mid_page_apply")
            await self._hook("before_cursor_store")
            if backfilled is None:
                if response.cursor is not None:
                    await _set_state(conn, "cursor", response.cursor)
            elif response.has_more and response.cursor is not None:
                await _set_state(conn, "backfill_cursor", response.cursor)
            else:
                await record_tables(conn, self.registry)
            await _end_apply(conn)
        await self._hook("after_cursor_store")

    # -- inspection -------------------------------------------------------------------------

    async def pending_count(self) -> int:
        """Return how many local changes wait to be pushed (pending or in flight)."""
        async with self.database.engine.connect() as conn:
            count = (
                await conn.execute(text("SELECT count(*) FROM underlay_sync_outbox"))
            ).scalar_one()
            await conn.rollback()
        return int(count)


async def _state(conn: AsyncConnection, key: str) -> str | None:
    value = (
        await conn.execute(text("SELECT value FROM underlay_sync_state WHERE key = :k"), {"k": key})
    ).scalar_one_or_none()
    return None if value is None else str(value)


async def _set_state(conn: AsyncConnection, key: str, value: str) -> None:
    await conn.execute(
        text(
            "INSERT INTO underlay_sync_state (key, value) VALUES (:k, :v)"
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        ),
        {"k": key, "v": value},
    )


async def _begin_apply(conn: AsyncConnection) -> None:
    # Also the transaction's first write, so it takes SQLite's write lock at once.
    await _set_state(conn, "applying", "1")
    # A page may hold a child before its parent (the parent changed later): check the
    # foreign keys at commit, when the whole page is in.
    await conn.exec_driver_sql("PRAGMA defer_foreign_keys = ON")


async def _end_apply(conn: AsyncConnection) -> None:
    await conn.execute(text("DELETE FROM underlay_sync_state WHERE key = 'applying'"))


def _pk_value(spec: TableSpec, row_id: str) -> Any:
    return spec.adapters[spec.pk.name].validate_python(row_id)
