"""Optimistic locking: a lost update is refused, named, and retried without losing anything."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from sqlalchemy import MetaData, String, select, update
from sqlalchemy.orm import Mapped, mapped_column

from underlay import (
    Base,
    Database,
    SQLAlchemyRepository,
    StaleVersionError,
    VersionedMixin,
    retry_on_conflict,
)
from underlay.models import NAMING_CONVENTION


class Model(Base):
    __abstract__ = True
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Account(VersionedMixin, Model):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[str] = mapped_column(String(100))
    balance: Mapped[int] = mapped_column(default=0)


class AccountRepository(SQLAlchemyRepository[Account]):
    pass


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with Database(f"sqlite+aiosqlite:///{Path(tmp) / 'bank.db'}") as db:
            await db.create_all(Model.metadata)
            async with db.session() as session:
                session.add(Account(id=1, owner="Ada", balance=100))

            # Two clerks read the same account (version 1)...
            async with db.session() as session:
                first = await session.get(Account, 1)
            async with db.session() as session:
                second = await session.get(Account, 1)
            assert first is not None
            assert second is not None

            # ...the first one writes; the second one's write would silently undo it.
            async with db.session() as session:
                session.add(first)
                first.balance += 50
            refused: StaleVersionError | None = None
            try:
                async with db.session() as session:
                    session.add(second)
                    second.balance -= 30
            except StaleVersionError as exc:
                refused = exc
            assert refused is not None
            assert (refused.model, refused.id, refused.expected_version) == (Account, 1, 1)
            print(f"refused: {refused}")

            # A version from a client is the *expected* version, never a new value.
            async with db.session() as session:
                accounts = AccountRepository(session)
                try:
                    await accounts.update(1, {"balance": 0, "version": 1})
                    raise AssertionError("a stale version was accepted")
                except StaleVersionError:
                    print("a client holding version 1 cannot overwrite version 2")
                account = await accounts.update(1, {"owner": "Ada L."}, expected_version=2)
                assert account.version == 3

            # Multi-row UPDATEs bump the version of every row they change.
            async with db.session() as session:
                await session.execute(update(Account).values(balance=Account.balance + 1))
                version = await session.scalar(select(Account.version))
            assert version == 4

            # Read-modify-write with a retry: each attempt is a fresh unit of work.
            @retry_on_conflict(attempts=20)
            async def deposit(amount: int) -> None:
                async with db.session() as session:
                    accounts = AccountRepository(session)
                    current = await accounts.get_one(1)
                    await accounts.update(
                        1,
                        {"balance": current.balance + amount},
                        expected_version=current.version,
                    )

            await asyncio.gather(*(deposit(10) for _ in range(5)))
            async with db.session() as session:
                final = await AccountRepository(session).get_one(1)
            assert (final.balance, final.version) == (201, 9)
            print(f"balance {final.balance} at version {final.version}")


if __name__ == "__main__":
    asyncio.run(main())
