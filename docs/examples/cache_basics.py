"""Cached reads that stay correct: commits invalidate, rollbacks do not."""

import asyncio
import contextlib
import tempfile
from decimal import Decimal

from pydantic import BaseModel
from sqlalchemy import Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from underlay import Base, Database, DatabaseSession, SQLAlchemyRepository
from underlay.cache import CachedRepository, MemoryCache


class Product(Base):
    __tablename__ = "products"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    price: Mapped[Decimal] = mapped_column(Numeric(10, 2))


class ProductOut(BaseModel):
    id: int
    name: str
    price: Decimal


class ProductRepository(SQLAlchemyRepository[Product]):
    sortable_fields = ("name",)


async def main() -> None:
    cache = MemoryCache()  # RedisCache("redis://...") in production: same behaviour
    with tempfile.TemporaryDirectory() as tmp:
        async with Database(f"sqlite+aiosqlite:///{tmp}/shop.db", cache=cache) as db:
            await db.create_all(Base.metadata)
            async with db.session() as session:
                session.add(Product(id=1, name="lamp", price=Decimal("10.50")))

            def cached(session: DatabaseSession) -> CachedRepository[ProductOut]:
                return CachedRepository(ProductRepository(session), cache, schema=ProductOut)

            async def show() -> tuple[ProductOut | None, list[str]]:
                # On SQLite a transaction reads from a snapshot: only a session's first
                # read may fill the cache, so each cached read gets its own session here.
                async with db.session() as session:
                    one = await cached(session).get(1)
                async with db.session() as session:
                    names = [p.name for p in await cached(session).list_all(order_by="name")]
                return one, names

            async def abandoned_rename() -> None:
                async with db.session() as session:
                    await ProductRepository(session).update(1, {"name": "never"})
                    raise RuntimeError("abort the request")

            first = await show()
            again = await show()  # both reads are cache hits now
            assert first == again
            assert cache.stats.hits == 2

            # A committed write invalidates before the session block returns.
            async with db.session() as session:
                await ProductRepository(session).update(1, {"price": Decimal("12.00")})
                session.add(Product(id=2, name="desk", price=Decimal(99)))
            product, names = await show()
            assert product is not None
            assert product.price == Decimal("12.00")
            assert names == ["desk", "lamp"]

            # A rolled-back write invalidates nothing and publishes nothing.
            with contextlib.suppress(RuntimeError):
                await abandoned_rename()
            product, _ = await show()
            assert product is not None
            assert product.name == "lamp"
    print(f"lamp costs {product.price}; cache stats: {cache.stats.as_dict()}")


if __name__ == "__main__":
    asyncio.run(main())
