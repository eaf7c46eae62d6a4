"""``insert_many``'s work after its arguments are checked: batches in, one savepoint.

Each batch is checked and coerced (`prepare_batch`) before any of its rows is sent. The
rows then go out the fastest way the driver offers:

* COPY on asyncpg. Consecutive batches with the same keys share one COPY (up to
  `COPY_STREAM_ROWS` rows): the next batch is prepared while the server stores the rows
  already sent, so the checks cost little wall time.
* One executemany on the aiosqlite connection per key set, where SQLAlchemy would add
  nothing per row.
* Otherwise a Core ``INSERT`` through the session, one executemany per key set.

A batch that fails its checks, or a row iterator that raises, while a COPY is streaming
ends that COPY cleanly; the error is raised once the COPY is done, and the savepoint (or,
in a session where nothing happened yet, a rollback) undoes the call's rows. The COPY is
never aborted from inside the driver, so no cancel request races the rollback that
follows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from itertools import chain
from typing import Any, Literal

from pydantic import BaseModel
from sqlalchemy import Table, insert
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.ext.asyncio import AsyncSession

from underlay.events import record_write
from underlay.exceptions import InvalidQueryError
from underlay.repository._bulk import (
    PreparedBatch,
    RowLayout,
    RowReader,
    in_batches,
    iterable_rows,
    prepare_batch,
    row_layout,
)
from underlay.repository._copy import (
    begin_copy,
    copy_records,
    copy_supported,
    driver_insert_layouts,
    executemany_rows,
)
from underlay.repository._query import column_map

__all__ = ["COPY_STREAM_ROWS", "COPY_THRESHOLD", "insert_rows"]

#: ``insert_many`` uses COPY on asyncpg (and the driver's executemany on aiosqlite) from this
#: many rows in its first batch (with ``method="auto"``).
COPY_THRESHOLD = 1000

#: Rows one COPY streams at most before the next starts. A row the server refuses is
#: reported when its COPY ends, so this bounds the rows read after it.
COPY_STREAM_ROWS = 100_000


async def insert_rows(
    session: AsyncSession,
    model: type[Any],
    table: Table,
    dialect: Dialect,
    rows: Iterable[Mapping[str, Any] | BaseModel],
    *,
    method: Literal["auto", "values", "copy"],
    batch_size: int,
    managed: str | None,
) -> int:
    """Insert ``rows`` all or nothing, ``batch_size`` at a time; return how many.

    In a session with a transaction under way (or holding objects) the batches share a
    savepoint; in a session with neither, a failure rolls the transaction back instead.

    Raises:
        InvalidQueryError: A refused row or value, or ``"copy"`` where COPY cannot be used.
        Exception: Whatever the database or the row iterator raised (nothing is inserted).
    """
    reader = RowReader(model, managed=managed, operation="insert_many")
    batches = in_batches(iterable_rows(rows), batch_size)
    first = next(batches, None)
    if first is None:
        return 0
    prepared = prepare_batch(model, first, reader)
    copy_ok = copy_supported(table, dialect)
    if method == "copy" and not copy_ok:
        raise InvalidQueryError(
            "insert_many(method='copy') needs PostgreSQL through asyncpg and columns "
            "whose defaults are values or Python callables."
        )
    # a full first batch means more rows may follow: the bulk path either way
    large = method == "auto" and (len(first) >= COPY_THRESHOLD or len(first) == batch_size)
    count = len(first)
    del first

    def later() -> Iterator[PreparedBatch]:
        nonlocal count
        for batch in batches:
            ready = prepare_batch(model, batch, reader)
            count += len(batch)
            yield ready

    async def send() -> None:
        if method == "copy" or (large and copy_ok):
            await _copy_batches(session, model, table, chain((prepared,), later()))
        else:
            for ready in chain((prepared,), later()):
                await _insert_batch(session, model, table, dialect, ready, large=large)

    if _untouched(session, model):
        # Nothing happened in this session's transaction yet and it holds no objects: on a
        # failure, rolling the whole transaction back leaves the session as it was before
        # the call, without a savepoint's two round trips.
        try:
            await send()
        except BaseException:
            await session.rollback()
            raise
        return count
    # a savepoint: a failed batch (or a row iterator that raises) leaves the transaction
    # as it was before the call
    async with session.begin_nested():
        await send()
    return count


def _untouched(session: AsyncSession, model: type[Any]) -> bool:
    """Whether ``session`` has no transaction under way, holds no objects, owns its bind.

    Rolling such a session back changes nothing but the database (no object is expired,
    no pending change is lost). A session bound to a connection is never taken for one:
    its rollback may end a transaction that its caller began on that connection.
    """
    if session.in_transaction():
        return False
    state = session.sync_session
    if not isinstance(state.get_bind(model), Engine):
        return False
    return not (state.identity_map or state.new or state.dirty or state.deleted)


async def _insert_batch(
    session: AsyncSession,
    model: type[Any],
    table: Table,
    dialect: Dialect,
    prepared: PreparedBatch,
    *,
    large: bool,
) -> None:
    groups = prepared.groups
    layouts = driver_insert_layouts(model, table, groups, dialect) if large else None
    if layouts is not None:
        connection = await session.connection()
        await executemany_rows(connection, table, prepared, layouts)
        record_write(session, model)
        return
    statement = insert(table)
    columns = column_map(model)
    for group in groups:
        keys = group[0].keys()
        if all(columns[key].key == key for key in keys):
            await session.execute(statement, list(group))
        else:
            params = [{columns[k].key: v for k, v in row.items()} for row in group]
            await session.execute(statement, params)


async def _copy_batches(
    session: AsyncSession, model: type[Any], table: Table, batches: Iterator[PreparedBatch]
) -> None:
    connection = await session.connection()
    driver = await begin_copy(connection)
    dialect = connection.dialect
    pending = next(batches, None)
    while pending is not None:
        if len(pending.groups) > 1:
            for group in pending.groups:
                layout = row_layout(model, table, group[0].keys(), dialect)
                await copy_records(driver, table, layout, layout.records(group))
            pending = next(batches, None)
            continue
        stream = _Stream(model, table, dialect, pending, batches)
        await copy_records(driver, table, stream.layout, stream)
        if stream.error is not None:
            raise stream.error
        pending = stream.following()
    record_write(session, model)


class _Stream:
    """The tuples of consecutive one-group batches with the same keys, for one COPY.

    Iterating prepares the later batches on demand. It stops at a batch with other keys
    (kept for the next COPY), after `COPY_STREAM_ROWS` rows, or at an error, which is kept
    in ``error`` instead of being raised inside the driver's COPY.
    """

    def __init__(
        self,
        model: type[Any],
        table: Table,
        dialect: Dialect,
        first: PreparedBatch,
        batches: Iterator[PreparedBatch],
    ) -> None:
        (group,) = first.groups
        self.keys = group[0].keys()
        self.layout: RowLayout = row_layout(model, table, self.keys, dialect)
        # an error in the first batch's tuples is raised here, before the COPY
        self.first: Iterable[tuple[Any, ...]] = self.layout.records(group, first.columns, lazy=True)
        self.first_rows = len(group)
        self.batches = batches
        self.error: Exception | None = None
        self.leftover: PreparedBatch | None = None
        self.full = False

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return chain.from_iterable(self.lists())

    def lists(self) -> Iterator[Iterable[tuple[Any, ...]]]:
        """Yield the tuples batch by batch; see the class docstring for where it stops."""
        first, self.first = self.first, ()
        sent = self.first_rows
        yield first
        while sent < COPY_STREAM_ROWS:
            try:
                batch = next(self.batches, None)
                if batch is None:
                    return
                groups = batch.groups
                if len(groups) > 1 or groups[0][0].keys() != self.keys:
                    self.leftover = batch
                    return
                records = self.layout.records(groups[0], batch.columns, lazy=True)
            except Exception as exc:  # noqa: BLE001 - kept and raised after the COPY
                self.error = exc
                return
            sent += len(groups[0])
            yield records
        self.full = True

    def following(self) -> PreparedBatch | None:
        """Return the batch to send after this COPY (``None`` when the rows are done)."""
        if self.leftover is not None:
            return self.leftover
        return next(self.batches, None) if self.full else None
