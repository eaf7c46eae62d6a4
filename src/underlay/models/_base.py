"""The optional declarative base."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase

from underlay.models._types import UTCDateTime

__all__ = ["NAMING_CONVENTION", "Base"]

#: Constraint names Alembic can rely on: the same on every backend and every run.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(column_0_N_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(AsyncAttrs, DeclarativeBase):
    """Declarative base with stable constraint names and timezone-aware datetimes.

    Subclass it for your models, or keep your own ``DeclarativeBase``: the underlay mixins
    work on either. ``Mapped[datetime]`` columns become :class:`UTCDateTime`.

    Example:
        >>> Base.metadata.naming_convention["pk"]
        'pk_%(table_name)s'
    """

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UTCDateTime()}
