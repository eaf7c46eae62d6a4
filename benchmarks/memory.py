"""Memory that stays flat: 1,000,000 rows from a generator in, and streamed back out.

``python -m benchmarks.memory [--rows N] [--backend pg|sqlite|all]`` (``make bench-memory``)
runs each backend in a process of its own and reports how much the process's resident set
grew over the work: ``insert_many`` of a generator (COPY on PostgreSQL, the driver's
executemany on SQLite, ``INSERT_BATCH`` rows at a time), then ``stream()`` of every row back
(a server-side cursor on PostgreSQL, keyset batches on SQLite). The target is a growth under
100 MB on both backends; holding the rows as a list would take several hundred.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from underlay import Database, SQLAlchemyRepository

RESULTS = Path(__file__).parent / "results" / "memory.json"
TARGET_MB = 100.0


class MemoryBase(DeclarativeBase):
    pass


class MemoryItem(MemoryBase):
    __tablename__ = "bench_memory_item"

    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32))
    grp: Mapped[str] = mapped_column(String(16))
    qty: Mapped[int]


class MemoryRepository(SQLAlchemyRepository[MemoryItem]):
    pass


def rows(count: int) -> Iterator[dict[str, Any]]:
    """Generate ``count`` rows; none is kept by the generator."""
    for i in range(1, count + 1):
        yield {"id": i, "code": f"code-{i:010d}", "grp": f"g{i % 50:02d}", "qty": i % 1000}


def rss_mb() -> float:
    """Return the current resident set size in MB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_mb() -> float:
    """Return the process's peak resident set size in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def measure(backend: str, count: int) -> dict[str, Any]:
    """Insert ``count`` rows from a generator and stream them back; return the figures."""
    from ._env import POSTGRES_URL, drop_postgres_database, ensure_postgres_database

    workdir = None
    if backend == "pg":
        await ensure_postgres_database()
        url = POSTGRES_URL.replace("postgresql://", "postgresql+asyncpg://", 1)
    else:
        workdir = tempfile.TemporaryDirectory(prefix="underlay-memory-")
        url = f"sqlite+aiosqlite:///{workdir.name}/memory.db"
    db = Database(url)
    try:
        await db.create_all(MemoryBase.metadata)
        # warm up: connections, statement caches, the code paths of both halves
        async with db.session() as session:
            await MemoryRepository(session).insert_many(rows(2000))
        async with (
            db.session(readonly=True, snapshot=True) as session,
            MemoryRepository(session).stream(batch_size=1000) as batches,
        ):
            async for _ in batches:
                pass
        async with db.session() as session:
            await session.execute(MemoryItem.__table__.delete())
        baseline = rss_mb()
        started = time.perf_counter()
        async with db.session() as session:
            inserted = await MemoryRepository(session).insert_many(rows(count))
        after_insert = rss_mb()
        insert_s = time.perf_counter() - started
        started = time.perf_counter()
        streamed = 0
        async with (
            db.session(readonly=True, snapshot=True) as session,
            MemoryRepository(session).stream(batch_size=5000) as batches,
        ):
            async for batch in batches:
                streamed += len(batch)
        stream_s = time.perf_counter() - started
        peak = peak_mb()
    finally:
        await db.dispose()
        if backend == "pg":
            await drop_postgres_database()
        if workdir is not None:
            workdir.cleanup()
    assert inserted == streamed == count, (inserted, streamed)
    return {
        "backend": backend,
        "rows": count,
        "baseline_rss_mb": round(baseline, 1),
        "rss_after_insert_mb": round(after_insert, 1),
        "peak_rss_mb": round(peak, 1),
        "growth_mb": round(peak - baseline, 1),
        "insert_s": round(insert_s, 1),
        "stream_s": round(stream_s, 1),
        "target_mb": TARGET_MB,
        "status": "met" if peak - baseline < TARGET_MB else "missed",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.memory", description=__doc__)
    parser.add_argument("--backend", choices=["pg", "sqlite", "all"], default="all")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--one", action="store_true", help="run in this process (internal)")
    parser.add_argument("--output", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(asyncio.run(measure(args.backend, args.rows))))
        return 0
    results = []
    for backend in ["pg", "sqlite"] if args.backend == "all" else [args.backend]:
        # a fresh process per backend: the peak RSS of one must not hide the other's
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks.memory", "--one", "--backend", backend,
             "--rows", str(args.rows)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"{'backend':<8} {'rows':>10} {'baseline':>9} {'peak':>9} {'growth':>9}  "
          f"{'insert':>7} {'stream':>7}  target")  # fmt: skip
    for r in results:
        print(
            f"{r['backend']:<8} {r['rows']:>10,} {r['baseline_rss_mb']:>7.1f}MB "
            f"{r['peak_rss_mb']:>7.1f}MB {r['growth_mb']:>7.1f}MB  {r['insert_s']:>6.1f}s "
            f"{r['stream_s']:>6.1f}s  {r['status']} (< {TARGET_MB:.0f} MB)"
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(r["status"] == "met" for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
