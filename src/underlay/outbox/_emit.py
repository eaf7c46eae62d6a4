"""`emit`: write an event in the caller's transaction."""

from __future__ import annotations

import asyncio
import weakref
import zlib
from typing import Any

import pydantic_core
from sqlalchemy import Integer, String, cast, func, insert, literal, select
from sqlalchemy.ext.asyncio import AsyncSession

from underlay.events import AFTER_COMMIT_KEY, call_after_commit
from underlay.outbox._errors import InvalidEventError
from underlay.outbox._models import OutboxEvent, table_of
from underlay.tenancy._context import tenant_if_set

__all__ = ["emit", "encode_payload"]

MAX_NAME = 200

#: First key of the two-key advisory lock every emitter to a stream takes (PostgreSQL).
LOCK_NAMESPACE = 0x756C6F62  # "ulob"

#: Wake-up events of the relays running in this process (see `OutboxRelay.run`).
_wakeups: weakref.WeakSet[_Wakeup] = weakref.WeakSet()


class _Wakeup:
    """An `asyncio.Event` a relay waits on, settable from any thread or loop."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.loop = asyncio.get_running_loop()

    def set(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            self.event.set()
        elif not self.loop.is_closed():
            self.loop.call_soon_threadsafe(self.event.set)


async def _nudge() -> None:
    for wakeup in list(_wakeups):
        wakeup.set()


def check_name(stream: Any, what: str = "stream") -> str:
    """Return ``stream`` if it is a usable stream name, else raise `InvalidEventError`."""
    if not isinstance(stream, str) or not stream or len(stream) > MAX_NAME:
        raise InvalidEventError(
            f"{what} name {stream!r} is not a non-empty string of at most {MAX_NAME} "
            "characters; pass a name such as 'orders'.",
            stream=stream,
        )
    return stream


def encode_payload(stream: str, payload: Any) -> str:
    """Return ``payload`` as a JSON document, or raise `InvalidEventError`.

    Dicts, lists, strings, numbers, booleans and ``None`` are stored as they are; datetimes,
    UUIDs, decimals, dataclasses and Pydantic models become their JSON forms.
    """
    try:
        return pydantic_core.to_json(payload).decode()
    except (pydantic_core.PydanticSerializationError, ValueError, TypeError) as exc:
        raise InvalidEventError(
            f"The payload for stream {stream!r} cannot be written as JSON ({exc}); "
            "pass JSON-compatible data.",
            stream=stream,
        ) from exc


async def emit(session: AsyncSession, stream: str, payload: Any, *, key: str | None = None) -> int:
    """Write an event for ``stream`` in ``session``'s transaction.

    The event is published by an `OutboxRelay` once the transaction commits, and never when
    it rolls back: the row is part of the transaction. Events of one stream reach Redis in
    the order their transactions committed.

    On PostgreSQL every transaction that emits to a stream holds a transaction-scoped
    advisory lock on that stream from its first `emit` until it ends, so emitters of one
    stream commit one after another and ids follow commit order: emit late in the
    transaction. On SQLite writers are serialised by the database already.

    Args:
        session: The session whose transaction the event belongs to.
        stream: The stream name; the relay publishes to Redis key ``prefix + stream``.
        payload: JSON-compatible data (Pydantic models, datetimes, UUIDs and decimals are
            converted).
        key: An optional key carried with the entry (an entity id, a partition key).

    The tenant in effect (`tenant_context`) is stored with the event and carried to the
    stream entry; consumers run the handler in that tenant's context.

    Returns:
        The event's id; the stream entry id is ``f"{id}-0"``.

    Raises:
        InvalidEventError: The stream name, key or payload is unusable (nothing was written).
    """
    check_name(stream)
    if key is not None and (not isinstance(key, str) or not key or len(key) > MAX_NAME):
        raise InvalidEventError(
            f"key {key!r} is not a non-empty string of at most {MAX_NAME} characters; "
            "pass None for no key.",
            stream=stream,
        )
    document = encode_payload(stream, payload)
    tenant = tenant_if_set()
    table = table_of(OutboxEvent)
    if session.get_bind().dialect.name == "postgresql":
        # The lock is taken before the id is drawn from the sequence, in one statement: an
        # id drawn later therefore belongs to a transaction that commits later.
        lock = select(
            func.pg_advisory_xact_lock(
                cast(literal(LOCK_NAMESPACE), Integer), cast(literal(_lock_key(stream)), Integer)
            ).label("locked")
        ).cte("underlay_outbox_lock")
        source = select(
            literal(stream), literal(key), literal(tenant, String(64)), literal(document)
        ).select_from(lock)
        statement = (
            insert(table)
            .from_select(["stream", "key", "tenant", "payload"], source)
            .returning(table.c.id)
        )
    else:
        statement = (
            insert(table)
            .values(stream=stream, key=key, tenant=tenant, payload=document)
            .returning(table.c.id)
        )
    event_id: int = (await session.execute(statement)).scalar_one()
    if _nudge not in session.sync_session.info.get(AFTER_COMMIT_KEY, ()):
        call_after_commit(session, _nudge)
    return event_id


def _lock_key(stream: str) -> int:
    value = zlib.crc32(stream.encode())
    return value - (1 << 32) if value >= 1 << 31 else value
