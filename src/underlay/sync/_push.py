"""The server side of a push: classify each mutation, apply it by policy, record the outcome."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from itertools import groupby
from typing import TYPE_CHECKING, Any
from uuid import UUID

from sqlalchemy import ColumnElement, func, literal, literal_column, select, text, true
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from underlay._retry import retry_on_conflict
from underlay.exceptions import ConflictError, ConstraintError, SerializationError
from underlay.models import utcnow
from underlay.sync._errors import MutationIdReusedError, SyncPermissionError
from underlay.sync._registry import (
    Conflict,
    Defer,
    KeepLocal,
    KeepRemote,
    Merge,
    TableSpec,
)
from underlay.sync._wire import (
    ConflictInfo,
    Mutation,
    MutationResult,
    PushRequest,
    PushResponse,
    RowState,
    mutation_digest,
)

if TYPE_CHECKING:
    from underlay.sync._server import SyncServer

__all__ = ["PushApplier", "clamp_hlc"]


class _Rejected(Exception):  # noqa: N818 - internal control flow, never leaves this module
    def __init__(self, mutation_id: int, error: str) -> None:
        self.mutation_id = mutation_id
        self.error = error
        super().__init__(error)


class _Careful(Exception):  # noqa: N818 - internal control flow, never leaves this module
    """A mutation was rejected on the fast path: redo the push with savepoints."""


def clamp_hlc(hlc: str | None, *, max_ahead_ms: int) -> str | None:
    """Return ``hlc`` with its physical part clamped to the server's clock plus the skew."""
    if hlc is None:
        return None
    physical, _, rest = hlc.partition(":")
    try:
        millis = int(physical)
    except ValueError:
        return None
    limit = int(time.time() * 1000) + max_ahead_ms
    if millis > limit:
        return f"{limit:015d}:{rest}"
    return f"{millis:015d}:{rest}"


async def _lock_rows(conn: AsyncConnection, mutations: Sequence[Mutation]) -> None:
    """Take a transaction lock per row the push writes, all in one global order.

    A push is one transaction: without this, two pushes writing the same rows in opposite
    orders would deadlock (PostgreSQL breaks it after ``deadlock_timeout`` and the push is
    retried). Advisory keys also cover rows that do not exist yet (creates of one id).
    """
    keys = sorted(
        {
            int.from_bytes(
                hashlib.blake2b(f"{m.table}/{m.id}".encode(), digest_size=8).digest(),
                "big",
                signed=True,
            )
            for m in mutations
        }
    )
    if keys:
        await conn.execute(
            text("SELECT count(pg_advisory_xact_lock(k)) FROM unnest(CAST(:keys AS bigint[])) k"),
            {"keys": keys},
        )


class PushApplier:
    """Applies pushes for one `SyncServer`."""

    def __init__(self, server: SyncServer) -> None:
        self.server = server

    async def push(self, request: PushRequest, user: Any) -> PushResponse:
        if not request.mutations:
            last = await self._last_mutation_id(request.client_id)
            return PushResponse(results=[], last_mutation_id=last, write_checkpoint="0")
        apply = retry_on_conflict(retry_on=(SerializationError,))(self._push_once)
        try:
            # Fast path: no savepoints. Rejections are rare; the first one sends the whole
            # push down the careful path, a savepoint per transaction group.
            return await apply(request, user, careful=False)
        except _Careful:
            return await apply(request, user, careful=True)

    async def _last_mutation_id(self, client_id: UUID) -> int:
        async with self.server.database.engine.connect() as conn:
            value = (
                await conn.execute(
                    text("SELECT last_mutation_id FROM underlay_sync_clients WHERE client_id = :c"),
                    {"c": client_id},
                )
            ).scalar_one_or_none()
        return int(value or 0)

    async def _push_once(self, request: PushRequest, user: Any, *, careful: bool) -> PushResponse:
        # One transaction per push (one commit, one fsync), one savepoint per transaction
        # group: a group applies whole or is rejected whole, and the ledger, the client's last
        # mutation id and the data commit together.
        client_id = request.client_id
        mutations = sorted(request.mutations, key=lambda m: m.mutation_id)
        results: list[MutationResult] = []
        async with self.server.database.engine.begin() as conn:
            last = await self._lock_client(conn, client_id, self.server.identify(user))
            await _lock_rows(conn, [m for m in mutations if m.mutation_id > last])
            recorded: list[tuple[Mutation, MutationResult]] = []
            for _, group_iter in groupby(mutations, key=lambda m: m.tx_group):
                group = list(group_iter)
                if group[0].mutation_id <= last:
                    results.extend(await self._replay(conn, client_id, group))
                    continue
                outcome = await self._group(conn, client_id, user, group, careful=careful)
                results.extend(outcome)
                recorded.extend(zip(group, outcome, strict=True))
                last = max(m.mutation_id for m in group)
            if recorded:
                await self._record(conn, client_id, recorded, last, mutations[-1].schema_version)
            checkpoint = (
                await conn.execute(text("SELECT pg_current_xact_id()::text"))
            ).scalar_one()
        return PushResponse(
            results=results, last_mutation_id=last, write_checkpoint=str(checkpoint)
        )

    async def _group(
        self,
        conn: AsyncConnection,
        client_id: UUID,
        user: Any,
        group: Sequence[Mutation],
        *,
        careful: bool,
    ) -> list[MutationResult]:
        if not careful:
            try:
                return await self._apply_group(conn, client_id, user, group)
            except _Rejected:
                raise _Careful from None
        try:
            async with conn.begin_nested():
                return await self._apply_group(conn, client_id, user, group)
        except _Rejected as rejected:
            return [
                MutationResult(
                    mutation_id=m.mutation_id,
                    status="rejected",
                    error=rejected.error
                    if m.mutation_id == rejected.mutation_id
                    else f"rejected with mutation {rejected.mutation_id} of its group",
                )
                for m in group
            ]

    async def _lock_client(self, conn: AsyncConnection, client_id: UUID, user_id: str) -> int:
        await conn.execute(
            text(
                "INSERT INTO underlay_sync_clients (client_id, user_id) VALUES (:c, :u)"
                " ON CONFLICT (client_id) DO NOTHING"
            ),
            {"c": client_id, "u": user_id},
        )
        row = (
            await conn.execute(
                text(
                    "SELECT user_id, last_mutation_id FROM underlay_sync_clients"
                    " WHERE client_id = :c FOR UPDATE"
                ),
                {"c": client_id},
            )
        ).one()
        if row.user_id != user_id:
            raise SyncPermissionError(f"client {client_id} belongs to another user")
        return int(row.last_mutation_id)

    async def _replay(
        self, conn: AsyncConnection, client_id: UUID, group: Sequence[Mutation]
    ) -> list[MutationResult]:
        stored = {
            int(r.mutation_id): r
            for r in await conn.execute(
                text(
                    "SELECT mutation_id, digest, result FROM underlay_sync_mutation_results"
                    " WHERE client_id = :c AND mutation_id = ANY(:ids)"
                ),
                {"c": client_id, "ids": [m.mutation_id for m in group]},
            )
        }
        results = []
        for mutation in group:
            record = stored.get(mutation.mutation_id)
            if record is None:
                # The ledger entry was collected: the mutation was applied long ago.
                results.append(
                    MutationResult(mutation_id=mutation.mutation_id, status="noop", duplicate=True)
                )
                continue
            if record.digest != mutation_digest(mutation):
                raise MutationIdReusedError(mutation_id=mutation.mutation_id)
            result = MutationResult.model_validate(record.result)
            results.append(result.model_copy(update={"duplicate": True}))
        return results

    async def _record(
        self,
        conn: AsyncConnection,
        client_id: UUID,
        recorded: Sequence[tuple[Mutation, MutationResult]],
        last: int,
        schema_version: int,
    ) -> None:
        await conn.execute(
            text(
                "INSERT INTO underlay_sync_mutation_results"
                " (client_id, mutation_id, digest, status, result)"
                " VALUES (:c, :m, :d, :s, CAST(:r AS jsonb))"
            ),
            [
                {
                    "c": client_id,
                    "m": m.mutation_id,
                    "d": mutation_digest(m),
                    "s": r.status,
                    "r": r.model_dump_json(),
                }
                for m, r in recorded
            ],
        )
        await conn.execute(
            text(
                "UPDATE underlay_sync_clients SET last_mutation_id = :m,"
                " schema_version = :v, last_seen_at = now() WHERE client_id = :c"
            ),
            {"c": client_id, "m": last, "v": schema_version},
        )

    async def _apply_group(
        self, conn: AsyncConnection, client_id: UUID, user: Any, group: Sequence[Mutation]
    ) -> list[MutationResult]:
        by_id: dict[int, MutationResult] = {}
        # Lock rows in one global order, so two groups touching the same rows never deadlock.
        for mutation in sorted(group, key=lambda m: (m.table, str(m.id))):
            by_id[mutation.mutation_id] = await self._apply(conn, client_id, user, mutation)
        return [by_id[m.mutation_id] for m in group]

    async def _apply(
        self, conn: AsyncConnection, client_id: UUID, user: Any, m: Mutation
    ) -> MutationResult:
        spec = self.server.registry.spec(m.table)
        if spec is None:
            raise _Rejected(m.mutation_id, f"table {m.table!r} is not synced")
        try:
            # A client that has not migrated yet may send a renamed column by its old name.
            values = spec.from_json(spec.current_names(m.changed), strict=True)
        except ValueError as exc:
            raise _Rejected(m.mutation_id, f"invalid values: {exc}") from None
        hlc = clamp_hlc(m.hlc, max_ahead_ms=int(self.server.max_clock_skew.total_seconds() * 1000))
        origin = f"{client_id}/{m.mutation_id}/{hlc or ''}"
        ctx = _Ctx(conn, spec, user, m, values=values, client_id=client_id, origin=origin)
        try:
            return await ctx.run()
        except (ConstraintError, ConflictError) as exc:
            if isinstance(exc, SerializationError):
                raise
            raise _Rejected(m.mutation_id, str(exc)) from None


class _Ctx:
    """One mutation being applied."""

    def __init__(
        self,
        conn: AsyncConnection,
        spec: TableSpec,
        user: Any,
        mutation: Mutation,
        *,
        values: dict[str, Any],
        client_id: UUID,
        origin: str,
    ) -> None:
        self.conn = conn
        # The stamp trigger reads the writer's identity from this transaction-local setting.
        self.origin = origin
        self.origin_set = False
        self.spec = spec
        self.user = user
        self.m = mutation
        self.values = values
        self.client_id = client_id
        self.scope = spec.scope(user) if spec.scope is not None else None

    def _reject(self, error: str) -> _Rejected:
        return _Rejected(self.m.mutation_id, error)

    async def _lock(self) -> dict[str, Any] | None:
        q = '"' + self.spec.name.replace('"', '""') + '"'
        in_scope = (
            self.scope.label("_in_scope")
            if self.scope is not None
            else literal_column("true").label("_in_scope")
        )
        stmt = (
            select(
                *self.spec.data_columns,
                literal_column(f"{q}.origin_client_id").label("_origin_client"),
                literal_column(f"{q}.origin_mutation_id").label("_origin_mutation"),
                literal_column(f"{q}.hlc").label("_hlc"),
                in_scope,
                # set here, in the statement that locks the row: one round trip fewer
                func.set_config("underlay.sync_origin", self.origin, true()).label("_origin_set"),
            )
            .where(self.spec.pk == self.m.id)
            .with_for_update(of=self.spec.table)
        )
        row = (await self.conn.execute(stmt)).mappings().one_or_none()
        if row is None:
            return None
        self.origin_set = True
        if not row["_in_scope"]:
            raise self._reject("forbidden: the row is outside your scope")
        return dict(row)

    async def run(self) -> MutationResult:
        m, spec = self.m, self.spec
        if m.op == "upsert":
            allowed = spec.writable
            if m.base_version == 0:
                allowed = frozenset(spec.adapters) - {spec.pk.name, "version", "deleted_at"}
            if extra := set(self.values) - allowed:
                raise self._reject(f"columns not writable: {sorted(extra)}")
        if m.op == "upsert" and m.base_version == 0:
            # Creates are the common case: try the insert first, classify only on a clash.
            inserted = await self._insert()
            if inserted is not None:
                return self._result("applied", inserted)
        row = await self._lock()
        if row is None:
            if m.op == "delete":
                return self._result("noop", None, self._conflict("delete_delete", "kept_remote"))
            if m.base_version > 0:
                # The row was purged: nothing to update, and no full row to bring back.
                return self._result(
                    "resolved", None, self._conflict("update_delete", "kept_remote")
                )
            raise self._reject("the row vanished during the create")  # pragma: no cover
        return await self._classify(row)

    async def _classify(self, row: dict[str, Any]) -> MutationResult:
        m, spec = self.m, self.spec
        deleted = row["deleted_at"] is not None
        version = int(row["version"])
        if m.op == "delete":
            if deleted:
                return self._result("noop", row)
            if version == m.base_version:
                return self._result("applied", await self._update({"deleted_at": utcnow()}))
            if spec.deletes == "delete_wins":
                new = await self._update({"deleted_at": utcnow()})
                return await self._resolved(new, row, "delete_update", "kept_local")
            return await self._resolved(row, row, "delete_update", "kept_remote")
        if m.base_version == 0 and (row["_origin_client"], row["_origin_mutation"]) == (
            self.client_id,
            m.mutation_id,
        ):
            return self._result("noop", row)  # our own create, its answer was lost
        if deleted:
            if m.base_version != 0 and version == m.base_version:
                restored = await self._update({**self.values, "deleted_at": None})
                return self._result("applied", restored)
            if spec.deletes == "update_wins":
                restored = await self._update({**self.values, "deleted_at": None})
                return await self._resolved(restored, row, "update_delete", "kept_local")
            return await self._resolved(row, row, "update_delete", "kept_remote")
        if m.base_version != 0 and version == m.base_version:
            return self._result("applied", await self._update(self.values))
        kind = "create_create" if m.base_version == 0 else "update_update"
        return await self._policy(row, kind)

    async def _policy(self, row: dict[str, Any], kind: str) -> MutationResult:
        spec, m = self.spec, self.m
        policy = spec.policy
        if policy == "server_wins":
            return await self._resolved(row, row, kind, "kept_remote")
        if policy == "client_wins":
            return await self._resolved(await self._update(self.values), row, kind, "kept_local")
        if policy == "lww":
            remote_hlc = row["_hlc"] or ""
            local_hlc = clamp_hlc(m.hlc, max_ahead_ms=self._skew_ms()) or ""
            if local_hlc > remote_hlc:
                return await self._resolved(
                    await self._update(self.values), row, kind, "kept_local"
                )
            return await self._resolved(row, row, kind, "kept_remote")
        assert spec.merge is not None  # noqa: S101 - register() pairs "merge" with a callback
        remote = {c.name: row[c.name] for c in spec.data_columns}
        conflict = Conflict(
            kind=kind,
            table=spec.name,
            id=m.id,
            base=None
            if m.base_values is None
            else spec.from_json(spec.current_names(m.base_values)),
            local={**remote, **self.values},
            remote=remote,
            changed=dict(self.values),
            local_hlc=m.hlc,
            remote_hlc=row["_hlc"],
        )
        outcome = spec.merge(conflict)
        if isinstance(outcome, KeepLocal):
            return await self._resolved(await self._update(self.values), row, kind, "kept_local")
        if isinstance(outcome, Merge):
            merged = {k: v for k, v in outcome.values.items() if k in spec.writable}
            return await self._resolved(await self._update(merged), row, kind, "merged")
        if isinstance(outcome, Defer):
            return await self._resolved(row, row, kind, "deferred", reason=outcome.reason)
        if isinstance(outcome, KeepRemote):
            return await self._resolved(row, row, kind, "kept_remote")
        raise self._reject(f"merge callback returned {outcome!r}")

    def _skew_ms(self) -> int:
        return 0  # the mutation's clock was clamped once already, in PushApplier._apply

    def _in_scope(self) -> ColumnElement[bool]:
        if self.scope is None:
            return literal_column("true").label("_in_scope")
        return self.scope.label("_in_scope")

    async def _insert(self) -> dict[str, Any] | None:
        spec = self.spec
        values = {**self.values, spec.pk.name: self.m.id}
        # The row comes out of a select that first names the writer for the stamp trigger
        # (set_config): one round trip per create instead of two.
        origin = select(
            func.set_config("underlay.sync_origin", self.origin, true()).label("o")
        ).subquery("_origin")
        source = (
            select(*[literal(v, type_=spec.table.c[k].type) for k, v in values.items()])
            .select_from(origin)
            .where(origin.c.o.is_not(None))  # evaluated before the row reaches the trigger
        )
        stmt = (
            pg_insert(spec.table)
            .from_select(list(values), source)
            .on_conflict_do_nothing(index_elements=[spec.pk])
            .returning(*spec.data_columns, self._in_scope())
        )
        self.origin_set = True
        row = (await self.conn.execute(stmt)).mappings().one_or_none()
        if row is None:
            return None
        if not row["_in_scope"]:
            raise self._reject("forbidden: the new row would be outside your scope")
        return dict(row)

    async def _update(self, values: dict[str, Any]) -> dict[str, Any]:
        spec = self.spec
        stmt = (
            spec.table.update()
            .where(spec.pk == self.m.id)
            .values(values or {spec.pk.name: spec.pk})
            .returning(*spec.data_columns, self._in_scope())
        )
        row = dict((await self.conn.execute(stmt)).mappings().one())
        if not row["_in_scope"]:
            raise self._reject("forbidden: the change would move the row out of your scope")
        return row

    def _state(self, row: dict[str, Any] | None) -> RowState | None:
        if row is None:
            return None
        return RowState(
            table=self.spec.name,
            id=row[self.spec.pk.name],
            version=row["version"],
            deleted=row["deleted_at"] is not None,
            data=self.spec.to_json(row),
        )

    def _conflict(self, kind: str, resolution: str, reason: str | None = None) -> ConflictInfo:
        policy = (
            self.spec.policy if kind in {"create_create", "update_update"} else self.spec.deletes
        )
        return ConflictInfo.model_validate(
            {"kind": kind, "policy": policy, "resolution": resolution, "reason": reason}
        )

    def _result(
        self, status: str, row: dict[str, Any] | None, conflict: ConflictInfo | None = None
    ) -> MutationResult:
        return MutationResult.model_validate(
            {
                "mutation_id": self.m.mutation_id,
                "status": status,
                "row": self._state(row),
                "conflict": conflict,
            }
        )

    async def _resolved(
        self,
        new: dict[str, Any],
        remote: dict[str, Any],
        kind: str,
        resolution: str,
        *,
        reason: str | None = None,
    ) -> MutationResult:
        conflict = self._conflict(kind, resolution, reason)
        spec = self.spec
        await self.conn.execute(
            text(
                "INSERT INTO underlay_sync_conflicts (client_id, mutation_id, table_name, row_id,"
                " kind, policy, resolution, base, local, remote, resolved, reason) VALUES"
                " (:c, :m, :t, :r, :k, :p, :res, CAST(:base AS jsonb), CAST(:local AS jsonb),"
                " CAST(:remote AS jsonb), CAST(:resolved AS jsonb), :reason)"
            ),
            {
                "c": self.client_id,
                "m": self.m.mutation_id,
                "t": spec.name,
                "r": self.m.id,
                "k": kind,
                "p": conflict.policy,
                "res": resolution,
                "base": json.dumps(self.m.base_values),
                "local": json.dumps(self.m.changed),
                "remote": json.dumps(spec.to_json(remote)),
                "resolved": json.dumps(spec.to_json(new)),
                "reason": reason,
            },
        )
        return self._result("resolved", new, conflict)
