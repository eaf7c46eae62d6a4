"""underlay in one file: models, a database, a unit of work. Runs on SQLite, no server needed."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from sqlalchemy import String, func, select
from sqlalchemy.orm import Mapped, mapped_column

from underlay import Base, Database, DuplicateError, TimestampMixin


class User(TimestampMixin, Base):
    __tablename__ = "quickstart_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    name: Mapped[str] = mapped_column(String(100))


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'quickstart.db'}"
        async with Database(url) as db:
            await db.create_all(Base.metadata)

            async with db.session() as session:  # commits when the block ends
                ada = User(email="ada@example.com", name="Ada")
                session.add(ada)
            print(f"created user {ada.id} at {ada.created_at:%H:%M:%S} UTC")

            try:
                async with db.session() as session:
                    session.add(User(email="ada@example.com", name="Impostor"))
            except DuplicateError as exc:
                print(f"refused a duplicate: {type(exc).__name__}")

            async with db.session() as session:
                count = await session.scalar(select(func.count()).select_from(User))
            print(f"users in the database: {count}")


if __name__ == "__main__":
    asyncio.run(main())
