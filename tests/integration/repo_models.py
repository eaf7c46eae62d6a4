"""Models and repositories the repository tests share."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal

from sqlalchemy import ForeignKey, Numeric, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tests.integration.models import new_base
from underlay import (
    SoftDeleteMixin,
    SQLAlchemyRepository,
    TimestampMixin,
    VersionedMixin,
    live_unique_index,
)

RepoBase = new_base()


class Author(TimestampMixin, RepoBase):
    __tablename__ = "authors"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    rank: Mapped[int] = mapped_column(default=0)
    bio: Mapped[str | None] = mapped_column(String(200), default=None)
    tenant: Mapped[str] = mapped_column(String(20), default="t1")

    articles: Mapped[list[Article]] = relationship(back_populates="author", lazy="raise")


class Article(TimestampMixin, SoftDeleteMixin, VersionedMixin, RepoBase):
    __tablename__ = "articles"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(100), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    views: Mapped[int] = mapped_column(default=0)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("authors.id"), default=None)

    author: Mapped[Author | None] = relationship(back_populates="articles", lazy="raise")


class Reading(RepoBase):
    """Client-generated UUID keys, exact decimals and aware datetimes."""

    __tablename__ = "readings"
    __table_args__ = (UniqueConstraint("sensor", "taken_at"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    sensor: Mapped[str] = mapped_column(String(50))
    taken_at: Mapped[datetime]
    amount: Mapped[Decimal] = mapped_column(Numeric(12, 4))


class Tag(RepoBase):
    """No mixins; columns with Python-side on-update values (a constant and a callable)."""

    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50), unique=True)
    state: Mapped[str] = mapped_column(String(20), default="new", onupdate="changed")
    note: Mapped[str] = mapped_column(String(20), default="", onupdate=lambda: "by callable")


class Member(SoftDeleteMixin, VersionedMixin, RepoBase):
    """Email unique among live rows only (a partial unique index)."""

    __tablename__ = "members"
    __table_args__ = (live_unique_index("email"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(100), default="")


class AuthorRepository(SQLAlchemyRepository[Author]):
    sortable_fields = ("created_at", "name", "rank", "email")
    filterable_fields = ("email", "name", "rank", "tenant")


class ArticleRepository(SQLAlchemyRepository[Article]):
    sortable_fields = ("views", "created_at", "title")
    filterable_fields = ("slug", "author_id")


class ReadingRepository(SQLAlchemyRepository[Reading]):
    sortable_fields = ("taken_at", "amount", "sensor")
    filterable_fields = ("sensor",)


class TagRepository(SQLAlchemyRepository[Tag]):
    pass


class MemberRepository(SQLAlchemyRepository[Member]):
    pass
