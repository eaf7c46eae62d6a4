"""Models the foundation's integration tests share."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, MetaData, String
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from underlay import Base, TimestampMixin, UTCDateTime


def new_base() -> Any:
    """Return a declarative base with ``underlay.Base``'s conventions and a registry of its own.

    Subclasses of ``underlay.Base`` share one registry, so two test modules with a model of the
    same name would clash in relationship lookups; each test module gets its own base instead.
    """

    class IsolatedBase(AsyncAttrs, DeclarativeBase):
        metadata = MetaData(naming_convention=dict(Base.metadata.naming_convention))
        type_annotation_map = {datetime: UTCDateTime()}  # noqa: RUF012 - SQLAlchemy reads it

    return IsolatedBase


ModelBase = new_base()


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
