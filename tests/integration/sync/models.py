"""Models the sync tests share: projects and their tasks, owned by users."""

from __future__ import annotations

import uuid

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from tests.integration.models import new_base
from underlay import SoftDeleteMixin, TimestampMixin, VersionedMixin

SyncBase = new_base()


class Project(SoftDeleteMixin, VersionedMixin, TimestampMixin, SyncBase):
    __tablename__ = "sync_project"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    owner_id: Mapped[int] = mapped_column(index=True)
    name: Mapped[str] = mapped_column(String(100), default="")


class Task(SoftDeleteMixin, VersionedMixin, TimestampMixin, SyncBase):
    __tablename__ = "sync_task"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    owner_id: Mapped[int] = mapped_column(index=True)
    project_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("sync_project.id"), default=None
    )
    title: Mapped[str] = mapped_column(String(200), default="")
    done: Mapped[bool] = mapped_column(default=False)
    note: Mapped[str | None] = mapped_column(String(200), default=None)
