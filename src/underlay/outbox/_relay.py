"""`OutboxRelay`: publish committed events to Redis Streams, in order, exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from sqlalchemy import and_, delete, or_, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from underlay.database import Database
from underlay.exceptions import UnderlayError
from underlay.outbox import _emit
from underlay.outbox._models import OutboxEvent, OutboxStreamState, table_of
from underlay.outbox._redis import PUBLISH, make_client, redis_errors

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["OutboxRelay"]

logger = logging.getLogger("underlay.outbox")

_EVENTS = table_of(OutboxEvent)
_STATE = table_of(OutboxStreamState)

# Streams with committed events past their published position. The recursive part walks the
# distinct stream names through the (stream, id) index, one probe per stream, so an idle poll
# costs the same however many published rows the retention keeps.
_PENDING = text(
    """
    WITH RECURSIVE names(stream) AS (
        SELECT min(stream) FROM underlay_outbox
        UNION ALL
        SELECT (SELECT min(o.stream) FROM underlay_outbox o WHERE o.stream > names.stream)
        FROM names WHERE names.stream IS NOT NULL
    )
    SELECT names.stream FROM names
    LEFT OUTER JOIN underlay_outbox_stream s ON s.stream = names.stream
    WHERE names.stream IS NOT NULL
      AND (SELECT max(o.id) FROM underlay_outbox o WHERE o.stream = names.stream)
          > coalesce(s.published_id, 0)
    """
)


class OutboxRelay:
    """Publish committed outbox events to Redis Streams.

    Each event becomes the entry ``"<event id>-0"`` of stream ``prefix + stream`` with the
    fields ``payload`` (the JSON document) and, when given, ``key`` and ``tenant``. A batch
    is appended by one Lua script that skips ids the stream already has, so after a crash at
    any point the relay re-reads from its last recorded position and nothing is duplicated
    or skipped.

    Several relays may run against one database: each stream is leased by one of them (a
    row in `underlay_outbox_stream`); the others stand by and take over when the lease
    runs out. Correctness never depends on the lease: two relays publishing the same
    stream still produce every event once, in order.

    Args:
        db: The database the events are written to.
        url: A ``redis://`` URL (ignored when ``client`` is given).
        client: An existing ``redis.asyncio.Redis``; not closed by `aclose`.
        prefix: Prepended to every stream name to form the Redis key.
        batch_size: Events read and appended per round trip.
        poll_interval: Seconds `run` sleeps when there was nothing to publish. Commits made
            through a `Database` in this process wake it at once.
        lease: Seconds a relay keeps a stream after its last progress.
        retention: Seconds a published event is kept in the table before `prune` removes it.
        prune_interval: Seconds between two `prune` calls made by `run`.
        maxlen: Trim each stream to about this many entries (``None``: never trim).
        timeout: Deadline in seconds for each Redis call.
        name: This relay's name in the lease rows (a random one by default).

    Example::

        async with OutboxRelay(db, "redis://localhost:6379", prefix="app:") as relay:
            await relay.run()
    """

    def __init__(
        self,
        db: Database,
        url: str = "redis://localhost:6379",
        *,
        client: Redis | None = None,
        prefix: str = "",
        batch_size: int = 500,
        poll_interval: float = 0.05,
        lease: float = 30.0,
        retention: float = 86400.0,
        prune_interval: float = 60.0,
        maxlen: int | None = None,
        timeout: float = 5.0,
        name: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.db = db
        self.prefix = prefix
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.lease = lease
        self.retention = float(retention)
        self.prune_interval = prune_interval
        self.maxlen = maxlen
        self.timeout = timeout
        self.name = name or uuid.uuid4().hex
        self._owns_client = client is None
        self.client: Redis = client if client is not None else make_client(url, timeout=timeout)
        self._publish = self.client.register_script(PUBLISH)
        self._retryable: tuple[type[BaseException], ...] = (
            *redis_errors(),
            SQLAlchemyError,
            UnderlayError,
        )
        self._stopping = asyncio.Event()
        self._held: set[str] = set()

    def __repr__(self) -> str:
        return f"OutboxRelay(prefix={self.prefix!r}, name={self.name!r})"

    async def run_once(self) -> int:
        """Publish every committed event that is not in its stream yet.

        Streams leased by another live relay are left to it.

        Returns:
            How many entries this call appended to Redis.
        """
        async with self.db.engine.connect() as conn:
            streams = [row[0] for row in await conn.execute(_PENDING)]
        published = 0
        for stream in streams:
            published += await self._relay_stream(stream)
        return published

    async def run(self) -> None:
        """Publish until `stop` is called or the task is cancelled.

        Failures of the database or Redis are logged and retried with a growing pause (up to
        five seconds); nothing is lost, the next pass resumes where the last one stopped.
        """
        wakeup = _emit._Wakeup()
        _emit._wakeups.add(wakeup)
        backoff = self.poll_interval
        next_prune = time.monotonic() + self.prune_interval
        try:
            while not self._stopping.is_set():
                wakeup.event.clear()
                try:
                    published = await self.run_once()
                    if time.monotonic() >= next_prune:
                        next_prune = time.monotonic() + self.prune_interval
                        await self.prune()
                except self._retryable:
                    logger.warning("outbox relay pass failed; retrying", exc_info=True)
                    published = 0
                    backoff = min(backoff * 2, 5.0)
                else:
                    backoff = self.poll_interval
                if published:
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(backoff):
                        await _first(wakeup.event.wait(), self._stopping.wait())
        finally:
            _emit._wakeups.discard(wakeup)
            self._stopping.clear()

    def stop(self) -> None:
        """Make `run` return after its current pass."""
        self._stopping.set()

    async def prune(self) -> int:
        """Delete published events older than the retention.

        Returns:
            How many rows were deleted.
        """
        cutoff = datetime.now(UTC) - timedelta(seconds=self.retention)
        published = (
            select(_STATE.c.published_id)
            .where(_STATE.c.stream == _EVENTS.c.stream)
            .scalar_subquery()
        )
        statement = delete(_EVENTS).where(_EVENTS.c.id <= published, _EVENTS.c.created_at < cutoff)
        async with self.db.engine.begin() as conn:
            result = await conn.execute(statement)
        return int(result.rowcount)

    async def aclose(self) -> None:
        """Give up this relay's leases and close the Redis client it created."""
        self.stop()
        if self._held:
            with contextlib.suppress(SQLAlchemyError, UnderlayError):
                async with self.db.engine.begin() as conn:
                    await conn.execute(
                        update(_STATE)
                        .where(_STATE.c.stream.in_(sorted(self._held)), _STATE.c.owner == self.name)
                        .values(owner=None, lease_until=0.0)
                    )
            self._held.clear()
        if self._owns_client:
            await self.client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _relay_stream(self, stream: str) -> int:
        position = await self._claim(stream)
        if position is None:
            return 0
        published = 0
        while True:
            async with self.db.engine.connect() as conn:
                rows = (
                    await conn.execute(
                        select(_EVENTS.c.id, _EVENTS.c.key, _EVENTS.c.tenant, _EVENTS.c.payload)
                        .where(_EVENTS.c.stream == stream, _EVENTS.c.id > position)
                        .order_by(_EVENTS.c.id)
                        .limit(self.batch_size)
                    )
                ).all()
            if not rows:
                return published
            added, _top = await self._append(stream, rows)
            published += added
            position = rows[-1][0]
            if not await self._advance(stream, position):
                return published  # another relay took the stream over
            if len(rows) < self.batch_size:
                return published

    async def _claim(self, stream: str) -> int | None:
        """Lease ``stream`` for this relay; return its published position, or ``None``."""
        now = time.time()
        async with self.db.engine.begin() as conn:
            insert_new = _dialect_insert(conn.dialect.name)
            await conn.execute(
                insert_new(_STATE)
                .values(stream=stream, published_id=0, owner=None, lease_until=0.0)
                .on_conflict_do_nothing(index_elements=["stream"])
            )
            claimed = await conn.execute(
                update(_STATE)
                .where(
                    _STATE.c.stream == stream,
                    or_(
                        _STATE.c.owner.is_(None),
                        _STATE.c.owner == self.name,
                        _STATE.c.lease_until < now,
                    ),
                )
                .values(owner=self.name, lease_until=now + self.lease)
                .returning(_STATE.c.published_id)
            )
            position = claimed.scalar_one_or_none()
        if position is None:
            self._held.discard(stream)
            return None
        self._held.add(stream)
        return int(position)

    async def _advance(self, stream: str, position: int) -> bool:
        async with self.db.engine.begin() as conn:
            result = await conn.execute(
                update(_STATE)
                .where(and_(_STATE.c.stream == stream, _STATE.c.owner == self.name))
                .values(published_id=position, lease_until=time.time() + self.lease)
            )
        if result.rowcount == 1:
            return True
        self._held.discard(stream)
        return False

    async def _append(self, stream: str, rows: Sequence[Any]) -> tuple[int, int]:
        args: list[Any] = [self.maxlen or 0]
        for event_id, key, tenant, payload in rows:
            args.extend((event_id, key or "", tenant or "", payload))
        async with asyncio.timeout(self.timeout):
            reply: list[Any] = await self._publish(keys=[self.prefix + stream], args=args)
        return int(reply[0]), int(reply[1])


async def _first(*awaitables: Any) -> None:
    tasks = [asyncio.ensure_future(awaitable) for awaitable in awaitables]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def _dialect_insert(dialect: str) -> Any:
    if dialect == "postgresql":
        return postgresql.insert
    return sqlite.insert
