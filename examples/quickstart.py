"""underlay in one file: models, a repository, a cache. Runs on SQLite, no server needed."""

from __future__ import annotations

import asyncio
import secrets
import tempfile
from pathlib import Path

from pydantic import BaseModel
from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

from underlay import (
    Base,
    Database,
    DuplicateError,
    SoftDeleteMixin,
    SQLAlchemyRepository,
    StaleVersionError,
    TimestampMixin,
    VersionedMixin,
    live_unique_index,
)
from underlay.cache import CachedRepository, MemoryCache
from underlay.repository import set_cursor_secret


class User(SoftDeleteMixin, VersionedMixin, TimestampMixin, Base):
    __tablename__ = "quickstart_users"
    __table_args__ = (live_unique_index("email"),)  # unique among live rows only

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(100))


class UserOut(BaseModel):
    """What the API shows: never the ORM object itself."""

    id: int
    email: str
    name: str
    version: int


class UserRepository(SQLAlchemyRepository[User]):
    sortable_fields = ("name", "created_at")
    filterable_fields = ("email",)


async def main() -> None:
    # Every worker must share this key (or set UNDERLAY_CURSOR_SECRET) so cursors verify anywhere.
    set_cursor_secret(secrets.token_bytes(32))
    cache = MemoryCache()  # RedisCache("redis://...") in production
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'quickstart.db'}"
        async with Database(url, cache=cache) as db:
            await db.create_all(Base.metadata)

            # One unit of work: commits when the block ends, rolls back if it raises.
            async with db.session() as session:
                users = UserRepository(session)
                ada = await users.save(User(email="ada@example.com", name="Ada"))
                await users.insert_many(
                    [{"email": f"user{i}@example.com", "name": f"User {i}"} for i in range(5)]
                )
            print(
                f"created {ada.name} (id {ada.id}, version {ada.version}) "
                f"at {ada.created_at:%H:%M} UTC"
            )

            # An atomic upsert: one INSERT ... ON CONFLICT statement, safe under concurrency.
            async with db.session() as session:
                grace = await UserRepository(session).upsert(
                    {"email": "user0@example.com", "name": "Grace"}, conflict_on=["email"]
                )
            print(f"upserted {grace.email}: name {grace.name!r}, version {grace.version}")

            # Cached reads return schemas; a commit invalidates before the block returns.
            for _ in range(2):  # a miss that fills the cache, then a hit
                async with db.session() as session:
                    cached = CachedRepository(UserRepository(session), cache, schema=UserOut)
                    before = await cached.get(ada.id)
            async with db.session() as session:
                await UserRepository(session).update(ada.id, {"name": "Ada Lovelace"})
            async with db.session() as session:
                cached = CachedRepository(UserRepository(session), cache, schema=UserOut)
                after = await cached.get(ada.id)
            assert before is not None
            assert after is not None
            print(f"cached read after the rename: {after.name!r} (was {before.name!r})")

            # Optimistic locking: a client holding an old version cannot overwrite.
            try:
                async with db.session() as session:
                    await UserRepository(session).update(
                        ada.id, {"name": "Stale"}, expected_version=before.version
                    )
            except StaleVersionError as exc:
                print(f"refused a stale write: {exc}")

            # Keyset pagination with an opaque, signed cursor.
            async with db.session() as session:
                users = UserRepository(session)
                first = await users.paginate(order_by="name", limit=3)
                second = await users.paginate(order_by="name", limit=3, after=first.next_cursor)
            names = [u.name for u in first.items + second.items]
            print(f"pages by name: {names}")

            # Soft delete hides the row everywhere and frees its email for reuse.
            async with db.session() as session:
                await UserRepository(session).delete(ada.id)
            async with db.session() as session:
                users = UserRepository(session)
                gone = await users.get(ada.id)
                await users.save(User(email="ada@example.com", name="Ada II"))
                count = await users.count()
            assert gone is None
            print(f"after soft delete: get -> {gone}, live users: {count}")

            try:
                async with db.session() as session:
                    await UserRepository(session).save(User(email="ada@example.com", name="Dup"))
            except DuplicateError as exc:
                print(f"refused a duplicate: {type(exc).__name__}")

            print(f"cache: {cache.stats.as_dict()}")


if __name__ == "__main__":
    asyncio.run(main())
