"""Soft delete end to end: hidden from every read, restorable, and emails reusable."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from sqlalchemy import ForeignKey, MetaData, String, func, select
from sqlalchemy.orm import Mapped, joinedload, mapped_column, relationship, selectinload

from underlay import (
    Base,
    Database,
    DuplicateError,
    SoftDeleteMixin,
    SQLAlchemyRepository,
    live_unique_index,
)
from underlay.models import NAMING_CONVENTION


class Model(Base):
    __abstract__ = True
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Customer(SoftDeleteMixin, Model):
    __tablename__ = "customers"
    # Unique among live rows only: a deleted customer's email can sign up again.
    __table_args__ = (live_unique_index("email"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255))
    orders: Mapped[list[Order]] = relationship(back_populates="customer", order_by="Order.id")


class Order(SoftDeleteMixin, Model):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"))
    customer: Mapped[Customer] = relationship(back_populates="orders")


class CustomerRepository(SQLAlchemyRepository[Customer]):
    pass


class OrderRepository(SQLAlchemyRepository[Order]):
    pass


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with Database(f"sqlite+aiosqlite:///{Path(tmp) / 'shop.db'}") as db:
            await db.create_all(Model.metadata)
            async with db.session() as session:
                session.add_all(
                    [
                        Customer(id=1, email="ada@example.com", orders=[Order(id=1)]),
                        Customer(id=2, email="bob@example.com", orders=[Order(id=2)]),
                    ]
                )

            # Repository deletes are soft: one UPDATE setting deleted_at.
            async with db.session() as session:
                await CustomerRepository(session).delete(2)
                await OrderRepository(session).delete(1)

            async with db.session() as session:
                customers = CustomerRepository(session)
                assert await customers.get(2) is None
                assert await customers.count() == 1
                assert await customers.count(include_deleted=True) == 2
                # Plain ORM queries are filtered too, and so are relationship loads.
                emails = (await session.scalars(select(Customer.email))).all()
                assert emails == ["ada@example.com"]
                ada = (
                    await session.scalars(select(Customer).options(selectinload(Customer.orders)))
                ).one()
                assert ada.orders == []
                # A joined load filters in the ON clause: Ada stays, with no live orders.
                joined = (
                    (await session.scalars(select(Customer).options(joinedload(Customer.orders))))
                    .unique()
                    .all()
                )
                assert [(c.id, len(c.orders)) for c in joined] == [(1, 0)]
                everyone = await session.scalar(
                    select(func.count())
                    .select_from(Customer)
                    .execution_options(include_deleted=True)
                )
                assert everyone == 2

            # Bob's email is free again; two live rows with it are still refused.
            async with db.session() as session:
                await CustomerRepository(session).save(Customer(id=3, email="bob@example.com"))
            try:
                async with db.session() as session:
                    await CustomerRepository(session).save(Customer(email="bob@example.com"))
            except DuplicateError:
                print("a second live bob@example.com was refused")

            async with db.session() as session:
                orders = OrderRepository(session)
                restored = await orders.restore(1)
                # hard_delete removes rows for real, soft-deleted ones included.
                await orders.hard_delete(2)
                await CustomerRepository(session).hard_delete(2)
            assert not restored.is_deleted

            async with db.session() as session:
                customers = CustomerRepository(session)
                assert await customers.count(include_deleted=True) == 2
                live = [c.email for c in await customers.list_all(order_by=Customer.id)]
            print(f"live customers: {live}; order 1 restored: {not restored.is_deleted}")


if __name__ == "__main__":
    asyncio.run(main())
