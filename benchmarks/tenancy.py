"""What tenant scoping costs: `get` and `list_all` on a tenant model vs the same model without.

Run with ``python -m benchmarks.tenancy [--quick] [--backend pg|sqlite]`` (``make
bench-tenancy``). Both tables hold the same rows (the tenant table split over ten tenants,
the scanned tenant's share equal to the plain table's rows); contenders run interleaved per
repetition and the medians are compared. The goal is an overhead under 5 %.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from underlay import Database, SQLAlchemyRepository, TenantMixin, tenant_context

PG_URL = os.environ.get("UNDERLAY_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


class _Base(DeclarativeBase):
    pass


class Plain(_Base):
    __tablename__ = "bench_plain"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


class Scoped(TenantMixin, _Base):
    __tablename__ = "bench_scoped"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


class PlainRepository(SQLAlchemyRepository[Plain]):
    pass


class ScopedRepository(SQLAlchemyRepository[Scoped]):
    pass


async def _median(job: Callable[[], Awaitable[Any]], samples: list[float], ops: int) -> None:
    started = time.perf_counter()
    await job()
    samples.append((time.perf_counter() - started) / ops * 1e6)


async def run(url: str, label: str, gets: int, lists: int, reps: int) -> None:
    db = Database(url)
    try:
        await db.drop_all(_Base.metadata)
        await db.create_all(_Base.metadata)
        async with db.session() as session:
            session.add_all(Plain(id=i, name=f"n{i}") for i in range(100))
        for tenant in range(10):
            with tenant_context(f"t{tenant}"):
                async with db.session() as session:
                    session.add_all(Scoped(id=tenant * 1000 + i, name=f"n{i}") for i in range(100))

        async def get_plain() -> None:
            for i in range(gets):
                async with db.session() as session:
                    await session.get(Plain, i % 100)

        async def get_scoped() -> None:
            with tenant_context("t3"):
                for i in range(gets):
                    async with db.session() as session:
                        await session.get(Scoped, 3000 + i % 100)

        async def list_plain() -> None:
            for _ in range(lists):
                async with db.session() as session:
                    await PlainRepository(session).list_all()

        async def list_scoped() -> None:
            with tenant_context("t3"):
                for _ in range(lists):
                    async with db.session() as session:
                        await ScopedRepository(session).list_all()

        pairs = {
            "get": (get_plain, get_scoped, gets),
            "list_all (100 rows)": (list_plain, list_scoped, lists),
        }
        for name, (plain, scoped, ops) in pairs.items():
            await plain()
            await scoped()
            a: list[float] = []
            b: list[float] = []
            for _ in range(reps):
                await _median(plain, a, ops)
                await _median(scoped, b, ops)
            plain_us, scoped_us = statistics.median(a), statistics.median(b)
            print(
                f"{label:<10} {name:<20} plain {plain_us:8.1f} us   tenant-scoped "
                f"{scoped_us:8.1f} us   overhead {100 * (scoped_us / plain_us - 1):+5.1f} %"
            )
        await db.drop_all(_Base.metadata)
    finally:
        await db.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--backend", choices=["pg", "sqlite", "both"], default="both")
    args = parser.parse_args()
    gets, lists, reps = (50, 10, 3) if args.quick else (500, 100, 11)
    if args.backend in ("pg", "both"):
        await run(PG_URL, "postgresql", gets, lists, reps)
    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, f"bench-{uuid.uuid4().hex[:6]}.db")
            await run(f"sqlite+aiosqlite:///{path}", "sqlite", gets, lists, reps)


if __name__ == "__main__":
    asyncio.run(main())
