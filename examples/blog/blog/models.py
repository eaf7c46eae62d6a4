"""The blog's tables: users (soft-deletable) and posts (versioned)."""

from __future__ import annotations

from sqlalchemy import ForeignKey, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from underlay import Base, SoftDeleteMixin, TimestampMixin, VersionedMixin, live_unique_index


class User(TimestampMixin, SoftDeleteMixin, Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320))
    name: Mapped[str] = mapped_column(String(100))
    posts: Mapped[list[Post]] = relationship(back_populates="author", lazy="raise")

    # An address is unique among live users only: a closed account's address can sign up again.
    __table_args__ = (live_unique_index("email"),)


class Post(TimestampMixin, VersionedMixin, Base):
    __tablename__ = "posts"

    id: Mapped[int] = mapped_column(primary_key=True)
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str] = mapped_column(Text, default="")
    author: Mapped[User] = relationship(back_populates="posts", lazy="raise")
