"""Repository writes: partial updates with versions, atomic upserts, bulk inserts, deletes."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from pydantic import BaseModel
from sqlalchemy import MetaData, String
from sqlalchemy.orm import Mapped, mapped_column

from underlay import (
    Base,
    Database,
    InvalidQueryError,
    SoftDeleteMixin,
    SQLAlchemyRepository,
    StaleVersionError,
    TimestampMixin,
    VersionedMixin,
)
from underlay.models import NAMING_CONVENTION


class Model(Base):
    __abstract__ = True
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Product(TimestampMixin, SoftDeleteMixin, VersionedMixin, Model):
    __tablename__ = "products"

    id: Mapped[int] = mapped_column(primary_key=True)
    sku: Mapped[str] = mapped_column(String(40), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    stock: Mapped[int] = mapped_column(default=0)


class ProductRepository(SQLAlchemyRepository[Product]):
    filterable_fields = ("sku",)


class ProductPatch(BaseModel):
    """What an API accepts: every field optional, only the ones sent are applied."""

    name: str | None = None
    stock: int | None = None
    version: int | None = None


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with Database(f"sqlite+aiosqlite:///{Path(tmp) / 'writes.db'}") as db:
            await db.create_all(Model.metadata)

            # insert_many: no ORM objects, one executemany (COPY on PostgreSQL for big batches)
            async with db.session() as session:
                inserted = await ProductRepository(session).insert_many(
                    {"sku": f"SKU-{i}", "name": f"Product {i}", "stock": i} for i in range(100)
                )
            print(f"insert_many inserted {inserted} rows")

            # update: one UPDATE setting only the given fields, checking the version
            async with db.session() as session:
                products = ProductRepository(session)
                item = await products.one_or_none(filter_by={"sku": "SKU-7"})
                assert item is not None
                assert item.version == 1
                patch = ProductPatch(stock=70, version=item.version)
                updated = await products.update(item.id, patch)
                assert (updated.name, updated.stock, updated.version) == ("Product 7", 70, 2)
            print(f"updated {updated.sku}: stock={updated.stock}, version={updated.version}")

            # a client still holding version 1 loses, and nothing is written
            try:
                async with db.session() as session:
                    await ProductRepository(session).update(
                        item.id, ProductPatch(stock=0, version=1)
                    )
            except StaleVersionError as exc:
                print(f"stale write refused: {exc}")

            # unknown fields never reach SQL
            try:
                async with db.session() as session:
                    await ProductRepository(session).update(item.id, {"price": 3})
            except InvalidQueryError as exc:
                print(f"refused: {exc}")

            # upsert: INSERT ... ON CONFLICT DO UPDATE, atomic under concurrency
            async with db.session() as session:
                products = ProductRepository(session)
                created = await products.upsert(
                    {"sku": "NEW-1", "name": "Fresh", "stock": 5}, conflict_on=["sku"]
                )
                bumped = await products.upsert(
                    {"sku": "NEW-1", "name": "Fresh", "stock": 6}, conflict_on=["sku"]
                )
                assert bumped.id == created.id
                assert (bumped.stock, bumped.version) == (6, 2)
            print(f"upserted NEW-1 twice: one row, version {bumped.version}")

            # delete is soft for SoftDeleteMixin models; delete_where is one statement
            async with db.session() as session:
                products = ProductRepository(session)
                await products.delete(created.id)
                assert await products.get(created.id) is None
                restored = await products.restore(created.id)
                assert restored.deleted_at is None
                gone = await products.delete_where(Product.stock < 10)
                live = await products.count()
                everything = await products.count(include_deleted=True)
            assert (gone, live, everything) == (10, 91, 101)
            print(f"soft-deleted {gone} low-stock products; {live} live of {everything}")


if __name__ == "__main__":
    asyncio.run(main())
