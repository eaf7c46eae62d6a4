"""Models and repositories the query-language tests share: every column type, relationships."""

from __future__ import annotations

import enum
import uuid
from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import BigInteger, ForeignKey, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from tests.integration.models import new_base
from underlay import SoftDeleteMixin, SQLAlchemyRepository

QueryBase = new_base()


class Color(enum.Enum):
    red = "r"
    green = "g"
    blue = "b"


class Writer(SoftDeleteMixin, QueryBase):
    __tablename__ = "q_writers"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(100), default="")

    posts: Mapped[list[Post]] = relationship(back_populates="writer", lazy="raise")


class Post(SoftDeleteMixin, QueryBase):
    __tablename__ = "q_posts"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    body: Mapped[str | None] = mapped_column(String(500), default=None)
    views: Mapped[int] = mapped_column(default=0)
    big: Mapped[int] = mapped_column(BigInteger, default=0)
    score: Mapped[float | None] = mapped_column(default=None)
    price: Mapped[Decimal] = mapped_column(Numeric(12, 4), default=Decimal(0))
    published: Mapped[bool] = mapped_column(default=False)
    day: Mapped[date | None] = mapped_column(default=None)
    at: Mapped[datetime | None] = mapped_column(default=None)
    ref: Mapped[uuid.UUID] = mapped_column(default=uuid.uuid4)
    color: Mapped[Color] = mapped_column(default=Color.red)
    writer_id: Mapped[int | None] = mapped_column(ForeignKey("q_writers.id"), default=None)

    writer: Mapped[Writer | None] = relationship(back_populates="posts", lazy="raise")


POST_FIELDS = (
    "id",
    "title",
    "body",
    "views",
    "big",
    "score",
    "price",
    "published",
    "day",
    "at",
    "ref",
    "color",
    "writer_id",
    "writer.email",
    "writer.name",
)


class PostRepository(SQLAlchemyRepository[Post]):
    sortable_fields = ("views", "title", "id")
    filterable_fields = POST_FIELDS


class WriterRepository(SQLAlchemyRepository[Writer]):
    sortable_fields = ("name", "email")
    filterable_fields = ("email", "name", "posts.title", "posts.views", "posts.published")
