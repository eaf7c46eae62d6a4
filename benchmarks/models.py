"""The benchmark tables, mapped once and shared by every contender.

Every contender works on the same tables with the same columns, so the only difference between
two rows of a result table is the layer in between. The ORM-based contenders (plain
SQLAlchemy, advanced-alchemy, underlay) all use these mapped classes; Core uses their
``__table__``; the raw drivers use SQL text against the same table names.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from underlay import Base, SoftDeleteMixin, TimestampMixin, VersionedMixin

#: Columns a bulk load supplies (the rest come from server defaults).
ROW_COLUMNS = ("sku", "name", "category", "price", "qty")
CATEGORIES = 20


class _ItemColumns:
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    sku: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    category: Mapped[str] = mapped_column(String(32), index=True)
    price: Mapped[int] = mapped_column(Integer)
    qty: Mapped[int] = mapped_column(Integer)


class WriteItem(_ItemColumns, TimestampMixin, Base):
    """Target of the bulk insert and upsert scenarios (emptied before every run)."""

    __tablename__ = "bench_write_item"


class ReadItem(_ItemColumns, TimestampMixin, Base):
    """100,000 rows read by the get, list, pagination and count scenarios."""

    __tablename__ = "bench_read_item"


class SoftItem(_ItemColumns, TimestampMixin, SoftDeleteMixin, Base):
    """100,000 rows, every eleventh one soft-deleted."""

    __tablename__ = "bench_soft_item"
    __table_args__ = (Index("ix_bench_soft_item_category_live", "category", "deleted_at"),)


class VersionedItem(_ItemColumns, TimestampMixin, VersionedMixin, Base):
    """Rows updated with an optimistic version check."""

    __tablename__ = "bench_versioned_item"


class PlainUpdateItem(_ItemColumns, TimestampMixin, Base):
    """The same rows as :class:`VersionedItem` without a version column."""

    __tablename__ = "bench_plain_item"


TABLES = [m.__table__ for m in (WriteItem, ReadItem, SoftItem, VersionedItem, PlainUpdateItem)]


def make_rows(count: int, *, start: int = 0, salt: str = "") -> list[dict[str, Any]]:
    """Return ``count`` row dicts with unique, deterministic ``sku`` values from ``start``."""
    return [
        {
            "sku": f"sku-{i:08d}",
            "name": f"Item {i}{salt}",
            "category": f"cat-{i % CATEGORIES:02d}",
            "price": (i * 7919) % 10_000,
            "qty": i % 50,
        }
        for i in range(start, start + count)
    ]


def as_records(rows: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Return the rows as tuples in :data:`ROW_COLUMNS` order (for COPY and executemany)."""
    return [(r["sku"], r["name"], r["category"], r["price"], r["qty"]) for r in rows]
