"""What OpenTelemetry instrumentation costs on the hot paths: `get`, `list_all`, a commit.

Run with ``python -m benchmarks.otel [--quick] [--backend pg|sqlite]`` (``make bench-otel``).
Three contenders run interleaved per repetition on one database: not instrumented,
instrumented with OpenTelemetry's default no-op providers (the API installed, no SDK
configured), and instrumented with the SDK recording every span and metric in memory.
Medians per operation are printed with the ratio to the uninstrumented run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from underlay import Database, SQLAlchemyRepository
from underlay.otel import Instrumentation, instrument

PG_URL = os.environ.get("UNDERLAY_BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


class _Base(DeclarativeBase):
    pass


class Item(_Base):
    __tablename__ = "bench_otel_item"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


class ItemRepository(SQLAlchemyRepository[Item]):
    pass


def _modes(db: Database) -> dict[str, Callable[[], Instrumentation | None]]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])

    def recording() -> Instrumentation:
        exporter.clear()
        return instrument(db, tracer_provider=tracer_provider, meter_provider=meter_provider)

    return {
        "not instrumented": lambda: None,
        "instrumented, no-op providers": lambda: instrument(db),
        "instrumented, SDK recording": recording,
    }


async def run(url: str, label: str, ops: int, reps: int) -> None:
    db = Database(url)
    try:
        await db.drop_all(_Base.metadata)
        await db.create_all(_Base.metadata)
        async with db.session() as session:
            session.add_all(Item(id=i, name=f"n{i}") for i in range(100))
        next_id = [1000]

        async def gets() -> None:
            async with db.session() as session:
                repo = ItemRepository(session)
                for i in range(ops):
                    await repo.get(i % 100)

        async def lists() -> None:
            for _ in range(ops // 10):
                async with db.session() as session:
                    await ItemRepository(session).list_all(limit=50)

        async def commits() -> None:
            for _ in range(ops // 10):
                async with db.session() as session:
                    session.add(Item(id=next_id[0], name="w"))
                    next_id[0] += 1

        jobs: dict[str, tuple[Callable[[], Awaitable[None]], int]] = {
            "get (one session)": (gets, ops),
            "list_all 50 rows": (lists, ops // 10),
            "insert + commit": (commits, ops // 10),
        }
        modes = _modes(db)
        samples: dict[tuple[str, str], list[float]] = {}
        for _ in range(reps):
            for job_name, (job, count) in jobs.items():
                for mode, start in modes.items():
                    instrumentation = start()
                    try:
                        started = time.perf_counter()
                        await job()
                        elapsed = (time.perf_counter() - started) / count * 1e6
                    finally:
                        if instrumentation is not None:
                            instrumentation.close()
                    samples.setdefault((job_name, mode), []).append(elapsed)
        print(f"\n{label}: median us per operation ({reps} repetitions, interleaved)")
        for job_name in jobs:
            base = statistics.median(samples[(job_name, "not instrumented")])
            for mode in modes:
                value = statistics.median(samples[(job_name, mode)])
                print(f"  {job_name:20} {mode:32} {value:9.1f} us  {value / base:5.2f}x")
        await db.drop_all(_Base.metadata)
    finally:
        await db.dispose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer operations, for a smoke run")
    parser.add_argument("--backend", choices=["pg", "sqlite", "all"], default="all")
    args = parser.parse_args(argv)
    ops, reps = (200, 3) if args.quick else (2000, 9)
    targets: list[tuple[str, str]] = []
    if args.backend in ("pg", "all"):
        targets.append((PG_URL, "PostgreSQL"))
    if args.backend in ("sqlite", "all"):
        path = os.path.join(tempfile.mkdtemp(), "bench-otel.db")
        targets.append((f"sqlite+aiosqlite:///{path}", "SQLite"))
    for url, label in targets:
        asyncio.run(run(url, label, ops, reps))


if __name__ == "__main__":
    main()
