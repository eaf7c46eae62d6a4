"""``stream()``: read a whole table (or a filtered part of it) in batches, in flat memory.

PostgreSQL reads through a server-side cursor: one query, rows fetched ``batch_size`` at a
time (a cursor needs a transaction: in a read-only session without a snapshot, PostgreSQL
reads in keyset batches as SQLite does). SQLite reads in keyset batches: one query per
batch, each starting after the last row of the previous one, so no read cursor stays open
between batches (an open cursor would hold SQLite's read snapshot and keep the WAL from
being checkpointed).

Each batch goes through ``session.execute``, so soft delete, tenancy and the repository's
scope apply as to any other read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

from underlay._options import NO_BEGIN
from underlay.repository import _pagination as pagination
from underlay.repository._coerce import check_count

if TYPE_CHECKING:
    from underlay.repository._sqlalchemy import SQLAlchemyRepository

__all__ = ["DEFAULT_STREAM_BATCH", "Stream", "check_batch_size", "stream_batches"]

ItemT = TypeVar("ItemT")

#: Rows per batch of ``stream()`` unless the caller says otherwise.
DEFAULT_STREAM_BATCH = 1000


class Stream(Generic[ItemT]):
    """The batches of a `SQLAlchemyRepository.stream` read: an async iterator of lists.

    Iterate it with ``async for batch in stream``. Leaving the loop early (``break``, an
    exception) should close the cursor at once: use it as ``async with repo.stream(...) as
    batches:``, or call `aclose`. An unclosed stream is closed when it is garbage collected.
    """

    def __init__(self, batches: AsyncIterator[list[ItemT]]) -> None:
        self._batches = batches
        self.closed = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> list[ItemT]:
        if self.closed:
            raise StopAsyncIteration
        try:
            return await anext(self._batches)
        except StopAsyncIteration:
            self.closed = True
            raise

    async def aclose(self) -> None:
        """Stop reading and close the cursor; further iteration yields nothing."""
        if not self.closed:
            self.closed = True
            aclose = getattr(self._batches, "aclose", None)
            if aclose is not None:
                await aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


async def stream_batches(
    repository: SQLAlchemyRepository[Any],
    where: Sequence[Any],
    *,
    order_by: Any,
    batch_size: int,
    options: Sequence[Any],
    include_deleted: bool,
    filter_by: Any,
    convert: Callable[[Any], Any] | None,
) -> AsyncIterator[list[Any]]:
    """Yield the matching entities (or ``convert``-ed ones) ``batch_size`` at a time.

    Arguments are checked before the first batch is read (the generator body runs on the
    first ``anext``, so `SQLAlchemyRepository.stream` checks them itself first).
    """
    resolved: Any = repository._resolve(filter_by)
    keys = repository._keyset_keys(order_by)
    order = [key.clause for key in keys]
    session = repository.session
    bind = session.sync_session.get_bind(repository._mapper)
    autocommit = bool(bind.get_execution_options().get(NO_BEGIN))
    if bind.dialect.name == "postgresql" and not autocommit:
        statement = repository.select_statement(
            *where,
            order_by=order,
            options=options,
            include_deleted=include_deleted,
            filter_by=resolved,
        ).execution_options(yield_per=batch_size)
        with repository._translated():
            result = await session.stream(statement)
        try:
            with repository._translated():
                async for partition in result.scalars().partitions(batch_size):
                    yield _converted(partition, convert)
        finally:
            await result.close()
        return
    after: list[Any] | None = None
    while True:
        criteria = list(where)
        if after is not None:
            criteria.append(pagination.keyset_predicate(keys, after))
        statement = repository.select_statement(
            *criteria,
            order_by=order,
            limit=batch_size,
            options=options,
            include_deleted=include_deleted,
            filter_by=resolved,
        )
        with repository._translated():
            rows = list((await session.execute(statement)).scalars().all())
        if not rows:
            return
        last = rows[-1]
        after = [getattr(last, key.name or "") for key in keys]
        yield _converted(rows, convert)
        if len(rows) < batch_size:
            return


def _converted(rows: Sequence[Any], convert: Callable[[Any], Any] | None) -> list[Any]:
    if convert is None:
        return list(rows)
    return [convert(row) for row in rows]


def check_batch_size(batch_size: Any, maximum: int = 1_000_000) -> int:
    """Return ``batch_size`` if it is an integer from 1 to ``maximum``.

    Raises:
        InvalidQueryError: It is not.
    """
    return check_count(batch_size, name="batch_size", minimum=1, maximum=maximum)
