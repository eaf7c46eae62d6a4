"""Models for the soft-delete and optimistic-locking tests."""

from __future__ import annotations

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tests.integration.models import new_base
from underlay import (
    SoftDeleteMixin,
    TimestampMixin,
    VersionedMixin,
    live_unique_index,
)

SoftBase = new_base()


class Author(SoftDeleteMixin, VersionedMixin, TimestampMixin, SoftBase):
    __tablename__ = "authors"
    __table_args__ = (live_unique_index("email"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(100), default="")

    books: Mapped[list[Book]] = relationship(back_populates="author", order_by="Book.id")


class Book(SoftDeleteMixin, SoftBase):
    __tablename__ = "books"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    author_id: Mapped[int] = mapped_column(ForeignKey("authors.id"), index=True)

    author: Mapped[Author] = relationship(back_populates="books")


class Counter(VersionedMixin, SoftBase):
    __tablename__ = "counters"

    id: Mapped[int] = mapped_column(primary_key=True)
    value: Mapped[int] = mapped_column(default=0)
    label: Mapped[str] = mapped_column(String(50), default="")
