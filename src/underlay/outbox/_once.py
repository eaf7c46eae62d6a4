"""Effectively-once handling: the message id is recorded with the handler's own writes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy import Insert, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from underlay.database import Database, DatabaseSession
from underlay.outbox._consumer import Message
from underlay.outbox._models import ProcessedMessage, table_of

__all__ = ["effectively_once", "record_processed"]

_PROCESSED = table_of(ProcessedMessage)


async def record_processed(session: AsyncSession, message: Message) -> bool:
    """Record in ``session``'s transaction that ``message`` was applied by its group.

    Call it in the transaction that makes the handler's changes, before them: it returns
    ``False`` when the message was already applied (skip the work), ``True`` otherwise. The
    record commits or rolls back with the changes, so a redelivered message never applies
    twice. A concurrent delivery of the same message waits for the first one's transaction
    (the row's unique key) and then gets ``False``.

    Args:
        session: The session of the handler's transaction.
        message: The message being handled.

    Returns:
        Whether this is the first time the message is applied.
    """
    values = {"group_name": message.group, "stream": message.stream, "message_id": message.id}
    statement: Insert
    name = session.get_bind().dialect.name
    if name == "postgresql":
        statement = postgresql.insert(_PROCESSED).values(values).on_conflict_do_nothing()
    elif name == "sqlite":
        statement = sqlite.insert(_PROCESSED).values(values).on_conflict_do_nothing()
    else:  # pragma: no cover - PostgreSQL and SQLite are the supported backends
        statement = insert(_PROCESSED).values(values).prefix_with("IGNORE")
    result = await session.execute(statement.returning(_PROCESSED.c.message_id))
    return result.scalar_one_or_none() is not None


def effectively_once(
    db: Database, handler: Callable[[DatabaseSession, Message], Awaitable[None]]
) -> Callable[[Message], Awaitable[None]]:
    """Wrap ``handler`` so each message's database changes are applied exactly once.

    The returned message handler opens a transaction, records the message with
    `record_processed`, runs ``handler(session, message)`` only for a first delivery, and
    commits both together. Side effects outside the database are still at least once.

    Args:
        db: The consumer's database (the `ProcessedMessage` table lives there).
        handler: ``async def handler(session, message)``; raise to roll back and retry.

    Returns:
        A handler for `StreamConsumer`.

    Example::

        async def apply(session, message):
            session.add(Invoice(order_id=message.payload["id"]))

        consumer = StreamConsumer("orders", effectively_once(db, apply), group="billing")
    """

    async def handle(message: Message) -> None:
        async with db.session() as session:
            if await record_processed(session, message):
                await handler(session, message)

    return handle
