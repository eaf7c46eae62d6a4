"""Model mixins: timestamps, soft delete and optimistic locking.

Each mixin works on :class:`underlay.Base` and on any other ``DeclarativeBase``. They share one
``__mapper_args__`` directive, so combining them needs no extra code; a model that needs mapper
arguments of its own merges them with :func:`mapper_args`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Integer, text
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from underlay.models._types import UTCDateTime, utcnow

__all__ = ["SoftDeleteMixin", "TimestampMixin", "VersionedMixin", "mapper_args"]


def mapper_args(cls: type[Any], **extra: Any) -> dict[str, Any]:
    """Return the ``__mapper_args__`` the underlay mixins of ``cls`` need, merged with ``extra``.

    Use it when a model declares mapper arguments of its own, which would otherwise replace
    the mixins' directive::

        class Invoice(VersionedMixin, Base):
            @declared_attr.directive
            def __mapper_args__(cls) -> dict[str, Any]:
                return mapper_args(cls, polymorphic_identity="invoice")

    Args:
        cls: The mapped class being declared.
        **extra: Further mapper arguments; they win over the mixins' defaults.

    Returns:
        A new dict for ``__mapper_args__``.
    """
    args: dict[str, Any] = {}
    if issubclass(cls, TimestampMixin | VersionedMixin):
        # Fetch server-generated values (updated_at, version) with RETURNING at flush, so they
        # are loaded after commit and never trigger implicit IO in async code.
        args["eager_defaults"] = True
    if issubclass(cls, VersionedMixin):
        args["version_id_col"] = cls.__table__.c.version  # type: ignore[attr-defined]  # set by declarative before directives run
    args.update(extra)
    return args


class _MapperArgs:
    @declared_attr.directive
    @classmethod
    def __mapper_args__(cls) -> dict[str, Any]:
        return mapper_args(cls)


class TimestampMixin(_MapperArgs):
    """Add ``created_at`` and ``updated_at``: aware UTC datetimes set by the database.

    ``created_at`` is set once at INSERT; ``updated_at`` is set at INSERT and moved by every
    UPDATE the ORM or a Core ``update()`` of the table emits. Both are loaded back with
    RETURNING, so they are readable after a flush without another query.
    """

    created_at: Mapped[datetime] = mapped_column(
        UTCDateTime(), server_default=utcnow(), nullable=False, sort_order=900
    )
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime(),
        server_default=utcnow(),
        onupdate=utcnow(),
        nullable=False,
        sort_order=901,
    )


class SoftDeleteMixin:
    """Add ``deleted_at``: ``None`` for a live row, the deletion time for a deleted one.

    Sessions made by :class:`underlay.Database` hide rows whose ``deleted_at`` is set from
    every ORM read; repositories delete these models softly.
    """

    deleted_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime(), default=None, nullable=True, sort_order=902
    )

    @property
    def is_deleted(self) -> bool:
        """Whether the row has been soft-deleted."""
        return self.deleted_at is not None


class VersionedMixin(_MapperArgs):
    """Add ``version``, an integer checked by every ORM UPDATE and DELETE (optimistic locking).

    A row starts at version 1. A flush that finds the row at another version raises
    :class:`underlay.StaleVersionError` and writes nothing. Any UPDATE of the table that does
    not set ``version`` itself, Core statements included, increments it.
    """

    version: Mapped[int] = mapped_column(
        Integer,
        nullable=False,
        server_default=text("1"),
        # Core UPDATEs that do not set the version still move it, so other writers (and the
        # offline sync) see every change; the ORM always sets it explicitly.
        onupdate=text("version + 1"),
        sort_order=903,
    )
