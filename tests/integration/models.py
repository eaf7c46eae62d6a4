"""Models the foundation's integration tests share."""

from __future__ import annotations

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from underlay import Base, TimestampMixin
from underlay.models import NAMING_CONVENTION


class ModelBase(Base):
    """Tests get their own metadata, apart from ``underlay.Base.metadata``."""

    __abstract__ = True
    metadata = Base.metadata.__class__(naming_convention=NAMING_CONVENTION)


class User(TimestampMixin, ModelBase):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    name: Mapped[str] = mapped_column(String(100), default="")

    posts: Mapped[list[Post]] = relationship(back_populates="author", lazy="raise")


class Post(ModelBase):
    __tablename__ = "posts"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)

    author: Mapped[User] = relationship(back_populates="posts", lazy="raise")


class PlainBase(DeclarativeBase):
    """A user's own declarative base, without anything from underlay."""


class Event(TimestampMixin, PlainBase):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(50))
