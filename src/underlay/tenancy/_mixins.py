"""Model mixins: the tenant column, who-did-it columns and UUIDv7 primary keys."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import String
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from underlay.models import SoftDeleteMixin
from underlay.tenancy._context import current_actor, current_tenant, registry
from underlay.tenancy._uuid import UUIDv7, uuid7

__all__ = ["AuditMixin", "TenantMixin", "UUIDv7Mixin", "deleted_by", "tenant_default"]


def _stamp_tenant() -> str:
    # A Python-side default: it runs for ORM inserts, Core inserts, executemany batches, the
    # insert branch of upserts and the repository's COPY path alike.
    return current_tenant()


class TenantMixin:
    """Add ``tenant_id``: the tenant a row belongs to, stamped from `tenant_context`.

    Sessions from `underlay.Database` show a task only its tenant's rows on every ORM read
    path and refuse writes of rows for another tenant; with no tenant set the first query of
    a tenant model raises `TenantRequiredError`. ``tenant_id`` is ``String(64)``; redeclare it
    (keeping ``default=`` from `tenant_default`) for another type.
    """

    tenant_id: Mapped[str] = mapped_column(
        String(64), nullable=False, index=True, default=_stamp_tenant, sort_order=-900
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        registry.tenant_models = True
        table = getattr(cls, "__table__", None)  # mapped by the declarative base just now
        if table is not None:
            registry.tables.add(table)


#: The default that stamps ``tenant_id`` from the context, for a redeclared column.
tenant_default = _stamp_tenant


class AuditMixin:
    """Add ``created_by`` and ``updated_by`` (and ``deleted_by`` with `SoftDeleteMixin`).

    Each is the `actor_context` in effect when the row was written (``None`` when none was
    set), stamped on ORM flushes, Core inserts and updates through a session, bulk inserts
    (COPY included), both branches of upserts and soft deletes.
    """

    created_by: Mapped[str | None] = mapped_column(
        String(64), default=current_actor, nullable=True, sort_order=904
    )
    updated_by: Mapped[str | None] = mapped_column(
        String(64),
        default=current_actor,
        onupdate=current_actor,
        nullable=True,
        sort_order=905,
    )

    @declared_attr
    @classmethod
    def deleted_by(cls) -> Mapped[str | None]:
        """Who soft-deleted the row (only on models that also use `SoftDeleteMixin`)."""
        if issubclass(cls, SoftDeleteMixin):
            return mapped_column(String(64), nullable=True, default=None, sort_order=906)
        return None  # type: ignore[return-value]  # no column on models without soft delete


class UUIDv7Mixin:
    """Add ``id``: a time-ordered UUIDv7 primary key generated in the application.

    Stored natively on PostgreSQL and as 16 bytes on SQLite; both sort by creation time, so
    inserts stay at the end of the index and keyset pagination by ``id`` follows creation.
    """

    id: Mapped[uuid.UUID] = mapped_column(
        UUIDv7(), primary_key=True, default=uuid7, sort_order=-1000
    )


def deleted_by(model: type[Any], actor: str | None) -> dict[str, str | None]:
    """Return the ``deleted_by`` value a soft delete (or restore) of ``model`` sets, if any."""
    if issubclass(model, AuditMixin) and issubclass(model, SoftDeleteMixin):
        return {"deleted_by": actor}
    return {}
