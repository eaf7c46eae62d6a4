"""Run the side-by-side benchmarks: ``python -m benchmarks [--quick] [--backend pg|sqlite]``.

Every scenario runs all of its contenders interleaved in this one process; the medians, the
ratios to the raw driver and to underlay, and the targets go to stdout and to
``benchmarks/results/latest.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import scenarios_cache, scenarios_near, scenarios_page, scenarios_read, scenarios_write
from ._env import (
    Backend,
    drop_postgres_database,
    ensure_postgres_database,
    machine_info,
    open_backend,
)
from ._harness import Scenario, format_table, run_scenario, scenario_record
from .targets import evaluate, format_targets

RESULTS = Path(__file__).parent / "results" / "latest.json"


@dataclass(frozen=True)
class Sizes:
    """How much work each scenario does; ``--quick`` shrinks it for a smoke run."""

    # Many short repetitions rather than a few long ones: on a shared machine the median of
    # interleaved short runs shrugs off bursts of load that would swamp one long run.
    insert_small: int = 10_000
    insert_large: int = 100_000
    upsert: int = 10_000
    gets: int = 500  # per repetition: 10 x 500 = 5,000 calls per contender
    lists: int = 100
    pages: int = 10
    counts: int = 5
    updates: int = 50
    cache_hits: int = 500
    cache_misses: int = 100
    cache_many: int = 50
    reps: int = 7
    reps_bulk: int = 5
    reps_large: int = 3
    reps_gets: int = 10
    reps_fine: int = 13

    @classmethod
    def quick(cls) -> Sizes:
        return cls(1_000, 2_000, 1_000, 50, 10, 3, 2, 10, 50, 10, 5, 2, 2, 1, 2, 2)


def plan(backend: Backend, s: Sizes, stack: Any, walk: Any, phase: str) -> list[Scenario]:
    """Return the scenarios of one phase ("write" runs on empty tables, "read" after loading)."""
    if phase == "write":
        return [
            scenarios_write.insert_scenario(backend, s.insert_small, s.reps_bulk, "10k"),
            scenarios_write.insert_scenario(backend, s.insert_large, s.reps_large, "100k"),
            scenarios_write.upsert_scenario(backend, s.upsert, s.reps_large),
        ]
    read = [
        scenarios_read.get_scenario(backend, s.gets, s.reps_gets, one_session=False),
        scenarios_read.get_scenario(backend, s.gets, s.reps_gets, one_session=True),
        scenarios_read.list_scenario(backend, s.lists, s.reps),
    ]
    read += [
        scenarios_page.depth_scenario(backend, walk, depth, s.pages, s.reps)
        for depth in scenarios_page.DEPTHS
    ]
    read += [
        scenarios_page.depth_cost_scenario(backend, walk, s.pages, s.reps),
        scenarios_page.filtered_scenario(backend, s.pages, s.reps),
        scenarios_read.count_scenario(backend, s.counts, s.reps_bulk),
        # the two "< 10 %" targets need more repetitions to resolve a few per cent
        scenarios_read.soft_delete_scenario(backend, s.lists, s.reps_fine),
        scenarios_write.update_scenario(backend, s.updates, s.reps_fine),
        scenarios_cache.hit_scenario(backend, stack, s.cache_hits, s.reps),
        scenarios_cache.miss_scenario(backend, stack, s.cache_misses, s.reps),
        scenarios_cache.many_scenario(backend, stack, s.cache_many, s.reps),
        scenarios_near.near_scenario(backend, stack, s.cache_hits, s.reps),
    ]
    return read


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--backend", choices=["pg", "sqlite", "all"], default="all")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--only", default="", help="run scenarios whose id contains this")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the JSON")
    args = parser.parse_args(argv)
    sizes = Sizes.quick() if args.quick else Sizes()
    names = {"pg": ["postgresql"], "sqlite": ["sqlite"], "all": ["postgresql", "sqlite"]}

    started = time.perf_counter()
    client = scenarios_cache.redis_client()
    records: list[dict[str, Any]] = []
    runs: dict[str, Any] = {}
    labels: list[str] = []
    try:
        await ensure_postgres_database()
        meta = await machine_info(client)
        for name in names[args.backend]:
            backend = await open_backend(name)
            labels.append(backend.label)
            stack = scenarios_cache.CacheStack(backend, client)
            walk = scenarios_page.CursorWalk(backend)
            try:
                for phase in ("write", "read"):
                    scenarios = [
                        scenario
                        for scenario in plan(backend, sizes, stack, walk, phase)
                        if args.only in scenario.id
                    ]
                    if phase == "read" and scenarios:
                        log(f"[{backend.label}] loading 100,000 rows per read table")
                        await scenarios_read.load_read_tables(backend)
                        await scenarios_write.load_update_tables(backend, sizes.updates)
                    for scenario in scenarios:
                        log(f"running {scenario.id}")
                        results = await run_scenario(scenario, log=log)
                        print(format_table(scenario, results), end="\n\n", flush=True)
                        runs[scenario.id] = (scenario, results)
                        records.append(scenario_record(scenario, results))
            finally:
                await backend.close()
    finally:
        await scenarios_cache.delete_bench_keys(client)
        await client.aclose()
        await drop_postgres_database()

    targets = evaluate(runs, labels)
    print(format_targets(targets))
    elapsed = time.perf_counter() - started
    print(f"\nfinished in {elapsed:.0f} s; JSON written to {args.output}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_s": round(elapsed, 1),
        "quick": args.quick,
        "machine": meta | {"load_average_at_end": [round(x, 2) for x in os.getloadavg()]},
        "scenarios": records,
        "targets": targets,
    }
    args.output.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
