"""The example's one synced model: a note owned by a user."""

from __future__ import annotations

import uuid

from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from underlay import Base, SoftDeleteMixin, TimestampMixin, VersionedMixin
from underlay.sync import SyncRegistry


class Note(SoftDeleteMixin, VersionedMixin, TimestampMixin, Base):
    __tablename__ = "example_note"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    owner: Mapped[str] = mapped_column(String(50), index=True)
    text: Mapped[str] = mapped_column(String(500), default="")


def make_registry() -> SyncRegistry:
    """Both sides build the same registry: each user syncs their own notes."""
    registry = SyncRegistry(schema_version=1)
    registry.register(Note, scope=lambda user: Note.owner == user, policy="lww")
    return registry
