"""`SyncClient`: the SQLite side: outbox, push-then-pull loop, page application."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from uuid import UUID

from pydantic_core import to_jsonable_python
from sqlalchemy import event, select, text
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from underlay.database import Database
from underlay.sync._client_schema import CLIENT_SQL, client_table_sql
from underlay.sync._errors import SyncTransportError
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
    "after_push_sent",
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
        hook: Called with each point of `HOOK_POINTS` as the sync reaches it (tests use it
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
        """Create the sync tables and (re-create) the outbox triggers; safe on every start."""
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
            batch: list[Mutation] = []
            for entry in pending:
                mutation = await self._freeze(conn, entry)
                if mutation is None:
                    await conn.execute(
                        text("DELETE FROM underlay_sync_outbox WHERE mutation_id = :m"),
                        {"m": entry.mutation_id},
                    )
                    continue
                await conn.execute(
                    text(
                        "UPDATE underlay_sync_outbox SET state = 'inflight', payload = :p"
                        " WHERE mutation_id = :m"
                    ),
                    {"p": mutation.model_dump_json(), "m": entry.mutation_id},
                )
                batch.append(mutation)
        if batch:
            await self._hook("after_mark_inflight")
        return batch

    async def _freeze(self, conn: AsyncConnection, entry: Any) -> Mutation | None:
        spec = self.registry.spec(entry.table_name)
        if spec is None:
            return None  # the table is no longer synced
        row = (
            (
                await conn.execute(
                    select(*spec.data_columns).where(spec.pk == _pk_value(spec, entry.row_id))
                )
            )
            .mappings()
            .one_or_none()
        )
        if row is None:
            return None
        changed_keys = list(json.loads(entry.changed))
        changed = {k: to_jsonable_python(row[k]) for k in changed_keys if k in row}
        shadow = (
            await conn.execute(
                text("SELECT data FROM underlay_sync_shadow WHERE table_name = :t AND row_id = :r"),
                {"t": spec.name, "r": entry.row_id},
            )
        ).scalar_one_or_none()
        base_values = None
        if shadow is not None:
            data = json.loads(shadow)
            base_values = {k: data.get(k) for k in changed_keys}
        return Mutation(
            mutation_id=entry.mutation_id,
            tx_group=entry.mutation_id,
            table=spec.name,
            id=row[spec.pk.name],
            op=entry.op,
            base_version=entry.base_version,
            changed=changed,
            base_values=base_values,
            hlc=await self._tick(conn, int(entry.written_ms)),
            schema_version=self.registry.schema_version,
        )

    async def _tick(self, conn: AsyncConnection, written_ms: int) -> str:
        last = await _state(conn, "hlc")
        last_ms, counter = (0, 0)
        if last is not None:
            ms_text, _, counter_text = last.partition(":")
            last_ms, counter = int(ms_text), int(counter_text)
        if written_ms > last_ms:
            last_ms, counter = written_ms, 0
        else:
            counter += 1
        await _set_state(conn, "hlc", f"{last_ms}:{counter}")
        return f"{last_ms:015d}:{counter:05d}:{self._client_id}"

    async def _apply_push(self, response: PushResponse, report: SyncReport) -> None:
        async with self.database.engine.begin() as conn:
            await _begin_apply(conn)
            for result in response.results:
                await self._apply_result(conn, result, report)
            await _set_state(conn, "last_acked_mutation_id", str(response.last_mutation_id))
            await _end_apply(conn)

    async def _apply_result(
        self, conn: AsyncConnection, result: MutationResult, report: SyncReport
    ) -> None:
        entry = (
            await conn.execute(
                text(
                    "DELETE FROM underlay_sync_outbox WHERE mutation_id = :m"
                    " RETURNING table_name, row_id, payload"
                ),
                {"m": result.mutation_id},
            )
        ).one_or_none()
        if entry is None:
            return  # answered before (a duplicate reply)
        report.pushed += 1
        spec = self.registry.spec(entry.table_name)
        if spec is None:  # pragma: no cover - the table left the registry mid-flight
            return
        row_id = entry.row_id
        if result.conflict is not None and result.status != "noop":
            report.conflicts.append(result)
        if result.status == "rejected" or result.conflict is not None:
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
                    "k": result.conflict.kind if result.conflict else None,
                    "p": result.conflict.policy if result.conflict else None,
                    "res": result.conflict.resolution if result.conflict else None,
                    "e": result.error,
                },
            )
        if result.status == "rejected":
            report.rejected.append(result)
            await self._revert(conn, spec, row_id)
            return
        ours = result.status in {"applied", "noop"} or (
            result.conflict is not None and result.conflict.resolution in {"kept_local", "merged"}
        )
        if result.row is None:
            await self._forget(conn, spec, row_id)
            return
        if ours:
            # Later edits of this row were made on top of our change: the server has it now.
            await conn.execute(
                text(
                    "UPDATE underlay_sync_outbox SET base_version = :v WHERE table_name = :t"
                    " AND row_id = :r AND state = 'pending' AND base_version < :v"
                ),
                {"v": result.row.version, "t": spec.name, "r": row_id},
            )
        await self._apply_row(conn, spec, result.row, mode="reply")

    async def _revert(self, conn: AsyncConnection, spec: TableSpec, row_id: str) -> None:
        # The rejected change and every later edit built on it go; the row returns to what the
        # server last said.
        await conn.execute(
            text("DELETE FROM underlay_sync_outbox WHERE table_name = :t AND row_id = :r"),
            {"t": spec.name, "r": row_id},
        )
        shadow = (
            await conn.execute(
                text(
                    "SELECT version, deleted, data FROM underlay_sync_shadow"
                    " WHERE table_name = :t AND row_id = :r"
                ),
                {"t": spec.name, "r": row_id},
            )
        ).one_or_none()
        if shadow is None:
            await conn.execute(spec.table.delete().where(spec.pk == _pk_value(spec, row_id)))
            return
        await self._write_row(conn, spec, json.loads(shadow.data), keep=frozenset())

    async def _forget(self, conn: AsyncConnection, spec: TableSpec, row_id: str) -> None:
        pending = await self._pending_keys(conn, spec, row_id)
        if pending is None:
            await conn.execute(spec.table.delete().where(spec.pk == _pk_value(spec, row_id)))
        await conn.execute(
            text("DELETE FROM underlay_sync_shadow WHERE table_name = :t AND row_id = :r"),
            {"t": spec.name, "r": row_id},
        )

    # -- pull -----------------------------------------------------------------------------------

    async def _pull_all(self, report: SyncReport) -> None:
        async with self.database.engine.connect() as conn:
            cursor = await _state(conn, "cursor")
            resyncing = await _state(conn, "resyncing") == "1"
            await conn.rollback()
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

    async def _start_resync(self) -> None:
        async with self.database.engine.begin() as conn:
            await conn.execute(text("UPDATE underlay_sync_shadow SET unseen = 1"))
            await _set_state(conn, "resyncing", "1")
            await conn.execute(text("DELETE FROM underlay_sync_state WHERE key = 'cursor'"))

    async def _finish_resync(self) -> None:
        async with self.database.engine.begin() as conn:
            await _begin_apply(conn)
            gone = (
                await conn.execute(
                    text("SELECT table_name, row_id FROM underlay_sync_shadow WHERE unseen = 1")
                )
            ).all()
            for table_name, row_id in gone:
                spec = self.registry.spec(table_name)
                if spec is not None:
                    await self._forget(conn, spec, row_id)
            await conn.execute(text("DELETE FROM underlay_sync_state WHERE key = 'resyncing'"))
            await _end_apply(conn)

    async def _apply_page(
        self, response: PullResponse, report: SyncReport, *, resyncing: bool
    ) -> None:
        async with self.database.engine.begin() as conn:
            await _begin_apply(conn)
            for index, change in enumerate(response.changes):
                spec = self.registry.spec(change.table)
                if spec is None:
                    continue  # a table this client does not sync (yet)
                mode = "resync" if resyncing else "pull"
                if await self._apply_row(conn, spec, change, mode=mode):
                    report.pulled += 1
                if index == len(response.changes) // 2:
                    await self._hook("mid_page_apply")
            await self._hook("before_cursor_store")
            if response.cursor is not None:
                await _set_state(conn, "cursor", response.cursor)
            await _end_apply(conn)
        await self._hook("after_cursor_store")

    async def _apply_row(
        self, conn: AsyncConnection, spec: TableSpec, change: RowState, *, mode: str
    ) -> bool:
        """Write a server row locally unless the shadow already has it; keep local edits.

        ``mode`` is ``"pull"``, ``"resync"`` (the server's row replaces the shadow whatever
        its version: the history was replaced) or ``"reply"`` (a push result: the local row
        is rewritten from the newest server state known, since our change may have lost).
        """
        row_id = self._key(spec, change.id)
        shadow = (
            await conn.execute(
                text(
                    "SELECT version, data FROM underlay_sync_shadow"
                    " WHERE table_name = :t AND row_id = :r"
                ),
                {"t": spec.name, "r": row_id},
            )
        ).one_or_none()
        if shadow is not None and shadow.version >= change.version and mode != "resync":
            if mode == "pull":
                return False  # our own echo, or older than what we have
            keep = await self._pending_keys(conn, spec, row_id)
            await self._write_row(conn, spec, json.loads(shadow.data), keep=keep)
            return True
        data = change.data or {}
        await conn.execute(
            text(
                "INSERT INTO underlay_sync_shadow (table_name, row_id, version, deleted, data,"
                " unseen) VALUES (:t, :r, :v, :d, :data, 0) ON CONFLICT (table_name, row_id)"
                " DO UPDATE SET version = excluded.version, deleted = excluded.deleted,"
                " data = excluded.data, unseen = 0"
            ),
            {
                "t": spec.name,
                "r": row_id,
                "v": change.version,
                "d": int(change.deleted),
                "data": json.dumps(data),
            },
        )
        keep = await self._pending_keys(conn, spec, row_id)
        await self._write_row(conn, spec, data, keep=keep)
        return True

    async def _pending_keys(
        self, conn: AsyncConnection, spec: TableSpec, row_id: str
    ) -> frozenset[str] | None:
        """Return the columns with local changes not yet acknowledged, ``None`` if none."""
        rows = (
            await conn.execute(
                text(
                    "SELECT op, changed FROM underlay_sync_outbox"
                    " WHERE table_name = :t AND row_id = :r"
                ),
                {"t": spec.name, "r": row_id},
            )
        ).all()
        if not rows:
            return None
        keys: set[str] = set()
        for op, changed in rows:
            keys.update(json.loads(changed))
            if op == "delete":
                keys.add("deleted_at")
        return frozenset(keys)

    async def _write_row(
        self,
        conn: AsyncConnection,
        spec: TableSpec,
        data: dict[str, Any],
        *,
        keep: frozenset[str] | None,
    ) -> None:
        values = spec.from_json(data)
        values.pop("version", None)
        pk = spec.pk.name
        exists = (
            await conn.execute(select(spec.pk).where(spec.pk == values[pk]))
        ).first() is not None
        if not exists and values.get("deleted_at") is not None:
            return  # a tombstone of a row we never had: the shadow is enough
        update = {k: v for k, v in values.items() if k != pk and k not in (keep or ())}
        stmt = sqlite_insert(spec.table).values({**values, "version": 1})
        stmt = stmt.on_conflict_do_update(
            index_elements=[spec.pk], set_={**update, "version": spec.table.c.version + 1}
        )
        await conn.execute(stmt)

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
