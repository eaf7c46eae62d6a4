"""The tables behind the outbox: events, per-stream relay state, processed messages."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Float, Index, Integer, String, Table, Text
from sqlalchemy.orm import Mapped, mapped_column

from underlay.models import Base
from underlay.models._types import utcnow

__all__ = ["OutboxEvent", "OutboxStreamState", "ProcessedMessage", "table_of"]

# SQLite only gives INTEGER PRIMARY KEY columns their rowid behaviour; with AUTOINCREMENT an
# id is never reused after the newest rows were pruned, so a stream entry id never repeats.
_EventId = BigInteger().with_variant(Integer(), "sqlite")


class OutboxEvent(Base):
    """One event written by `emit`, waiting for (or kept after) publication.

    `id` is the event's position: events of one stream commit in `id` order (see the queues
    guide) and the relay publishes each as stream entry `"<id>-0"`.
    """

    __tablename__ = "underlay_outbox"
    __table_args__ = (
        Index("ix_underlay_outbox_stream_id", "stream", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(_EventId, primary_key=True, autoincrement=True)
    stream: Mapped[str] = mapped_column(String(200))
    key: Mapped[str | None] = mapped_column(String(200))
    #: The tenant in effect when the event was emitted (`tenant_context`), or ``None``.
    tenant: Mapped[str | None] = mapped_column(String(64))
    payload: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=utcnow())


class OutboxStreamState(Base):
    """Relay bookkeeping per stream: how far it was published, and which relay holds it."""

    __tablename__ = "underlay_outbox_stream"

    stream: Mapped[str] = mapped_column(String(200), primary_key=True)
    published_id: Mapped[int] = mapped_column(BigInteger, default=0)
    owner: Mapped[str | None] = mapped_column(String(64))
    lease_until: Mapped[float] = mapped_column(Float, default=0.0)


class ProcessedMessage(Base):
    """A stream message a consumer group has applied (see `record_processed`)."""

    __tablename__ = "underlay_processed_message"

    group_name: Mapped[str] = mapped_column(String(200), primary_key=True)
    stream: Mapped[str] = mapped_column(String(200), primary_key=True)
    message_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    processed_at: Mapped[datetime] = mapped_column(server_default=utcnow())


def table_of(model: type[Base]) -> Table:
    """Return the `Table` a model is mapped to (typed for Core statements)."""
    table = model.__table__
    if not isinstance(table, Table):  # pragma: no cover - every model here maps a Table
        raise TypeError(f"{model.__name__} is not mapped to a Table")
    return table
