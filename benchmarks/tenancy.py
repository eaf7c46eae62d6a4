"""What tenant scoping costs: `get` and `list_all` of a tenant model, filtered and unfiltered.

Run with ``python -m benchmarks.tenancy [--quick] [--backend pg|sqlite]`` (``make
bench-tenancy``). One `TenantMixin` table holding the 100 rows of a single tenant, read
through the same repository calls twice: inside ``tenant_context`` (the session hook adds
the tenant criterion to every statement, and ``get`` checks the row's tenant) and inside
``all_tenants()`` (no criterion). Both return the same rows, so the difference is exactly
what the filter adds: the hook, the loader option, the ``WHERE tenant_id = ...`` the
database evaluates and the check on ``get``. The contenders run interleaved, their order
rotated each repetition and the garbage collected before each run; the table gives the
medians and the median of the per-repetition ratios. The goal is an overhead under 5 %.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from sqlalchemy import String, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from underlay import Database, SQLAlchemyRepository, TenantMixin, all_tenants, tenant_context

PG_URL = os.environ.get("UNDERLAY_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
TENANT = "t3"


class _Base(DeclarativeBase):
    pass


class Scoped(TenantMixin, _Base):
    __tablename__ = "bench_scoped"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


class ScopedRepository(SQLAlchemyRepository[Scoped]):
    pass


Job = Callable[[], Awaitable[None]]


async def _timed(job: Job, ops: int) -> float:
    gc.collect()  # each run starts without the other's garbage to collect
    started = time.perf_counter()
    await job()
    return (time.perf_counter() - started) / ops * 1e6


async def _compare(label: str, name: str, jobs: tuple[Job, Job], ops: int, reps: int) -> None:
    unfiltered, scoped = jobs
    await unfiltered()
    await scoped()
    plain_us: list[float] = []
    scoped_us: list[float] = []
    for rep in range(reps):
        order = [(unfiltered, plain_us), (scoped, scoped_us)]
        for job, samples in order if rep % 2 == 0 else reversed(order):
            samples.append(await _timed(job, ops))
    paired = statistics.median(s / h for s, h in zip(scoped_us, plain_us, strict=True))
    a, b = statistics.median(plain_us), statistics.median(scoped_us)
    print(
        f"{label:<10} {name:<20} all_tenants() {a:8.1f} us   tenant_context {b:8.1f} us   "
        f"overhead {100 * (b / a - 1):+5.1f} % (paired {100 * (paired - 1):+5.1f} %)"
    )


async def run(url: str, label: str, gets: int, lists: int, reps: int) -> None:
    db = Database(url)
    try:
        await db.drop_all(_Base.metadata)
        await db.create_all(_Base.metadata)
        with tenant_context(TENANT):
            async with db.session() as session:
                session.add_all(Scoped(id=i, name=f"n{i}") for i in range(100))
        async with db.session() as session:
            # statistics, as a production database has them: the planner then knows that
            # the tenant index does not narrow this one-tenant table
            await session.execute(text(f"ANALYZE {Scoped.__tablename__}"))
        ids = [i % 100 for i in range(gets)]

        async def get(scope: Callable[[], Any]) -> None:
            with scope():
                for i in ids:
                    async with db.session(readonly=True) as session:
                        assert (await ScopedRepository(session).get(i)) is not None

        async def list_all(scope: Callable[[], Any]) -> None:
            with scope():
                for _ in range(lists):
                    async with db.session(readonly=True) as session:
                        assert len(await ScopedRepository(session).list_all()) == 100

        def scoped() -> Any:
            return tenant_context(TENANT)

        await _compare(label, "get", (partial(get, all_tenants), partial(get, scoped)), gets, reps)
        await _compare(
            label,
            "list_all (100 rows)",
            (partial(list_all, all_tenants), partial(list_all, scoped)),
            lists,
            reps,
        )
        await db.drop_all(_Base.metadata)
    finally:
        await db.dispose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--backend", choices=["pg", "sqlite", "both"], default="both")
    args = parser.parse_args()
    gets, lists, reps = (50, 10, 3) if args.quick else (500, 100, 31)
    if args.backend in ("pg", "both"):
        await run(PG_URL, "postgresql", gets, lists, reps)
    if args.backend in ("sqlite", "both"):
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, f"bench-{uuid.uuid4().hex[:6]}.db")
            await run(f"sqlite+aiosqlite:///{path}", "sqlite", gets, lists, reps)


if __name__ == "__main__":
    asyncio.run(main())
