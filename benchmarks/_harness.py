"""The runner: interleaved repetitions, statistics, the printed table and the JSON record."""

from __future__ import annotations

import gc
import statistics
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

Job = Callable[[], Awaitable[Any]]

KINDS = ("raw", "core", "orm", "advanced-alchemy", "underlay")


@dataclass
class Contender:
    """One way of doing a scenario's work.

    ``run`` is timed; ``setup`` (if any) runs untimed before every repetition, e.g. to empty
    the table a bulk insert fills. ``note`` explains what the contender does in one phrase.
    """

    name: str
    kind: str
    run: Job | None
    setup: Job | None = None
    note: str = ""
    unavailable: str = ""  # why the contender could not run ("n/a" in the table)
    max_reps: int | None = None  # cap for a contender too slow to repeat as often as the rest


@dataclass
class Scenario:
    """A piece of work done by several contenders, timed interleaved in one process."""

    id: str
    backend: str
    title: str
    ops: int
    unit: str
    reps: int
    contenders: list[Contender]
    limit: str | None = None  # the physical limit: the raw driver's contender
    reference: str | None = None  # the underlay contender others are compared to
    warmup: bool = True
    prepare: Job | None = None  # untimed, once before the first repetition
    finish: Job | None = None  # untimed, once after the last repetition
    extras: dict[str, Any] = field(default_factory=dict)  # measurements besides time


@dataclass
class Result:
    """What one contender measured in one scenario."""

    contender: str
    kind: str
    note: str
    times: list[float] = field(default_factory=list)
    error: str = ""
    unavailable: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.times) and not self.error and not self.unavailable

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    def as_dict(
        self, scenario: Scenario, limit: Result | None, ref: Result | None
    ) -> dict[str, Any]:
        data: dict[str, Any] = {"contender": self.contender, "kind": self.kind, "note": self.note}
        if not self.ok:
            data["status"] = "n/a"
            data["reason"] = self.unavailable or self.error
            return data
        data.update(
            status="ok",
            times_s=[round(t, 6) for t in self.times],
            median_s=round(self.median, 6),
            min_s=round(min(self.times), 6),
            max_s=round(max(self.times), 6),
            per_op_us=round(self.median / scenario.ops * 1e6, 3),
            ops_per_s=round(scenario.ops / self.median, 1),
            ratio_to_limit=_ratio(self, limit),
            ratio_to_underlay=_ratio(self, ref),
        )
        return data


def _ratio(result: Result, base: Result | None) -> float | None:
    if base is None or not base.ok or not result.ok:
        return None
    return round(result.median / base.median, 3)


async def run_scenario(scenario: Scenario, *, log: Callable[[str], None]) -> dict[str, Result]:
    """Time every contender of ``scenario``, interleaved: rep 1 of all, rep 2 of all, ...

    The order rotates every repetition so no contender always runs right after the same
    neighbour (a warm cache or a pending autovacuum would otherwise favour one of them).
    """
    results = {
        c.name: Result(c.name, c.kind, c.note, unavailable=c.unavailable)
        for c in scenario.contenders
    }
    active = [c for c in scenario.contenders if not c.unavailable and c.run is not None]
    if scenario.prepare is not None:
        await scenario.prepare()
    if scenario.warmup:
        for contender in active:
            await _attempt(contender, results[contender.name], timed=False)
    for rep in range(scenario.reps):
        live = [
            c
            for c in active
            if not results[c.name].error
            and (c.max_reps is None or len(results[c.name].times) < c.max_reps)
        ]
        if not live:
            break
        shift = rep % len(live)
        for contender in live[shift:] + live[:shift]:
            await _attempt(contender, results[contender.name], timed=True)
        log(f"  {scenario.id}: repetition {rep + 1}/{scenario.reps} done")
    if scenario.finish is not None:
        await scenario.finish()
    return results


async def _attempt(contender: Contender, result: Result, *, timed: bool) -> None:
    if result.error:
        return
    try:
        if contender.setup is not None:
            await contender.setup()
        gc.collect()
        assert contender.run is not None
        start = time.perf_counter()
        await contender.run()
        elapsed = time.perf_counter() - start
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
        result.times.clear()
        traceback.print_exc()
        return
    if timed:
        result.times.append(elapsed)


def _fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} us"


def _fmt_rate(rate: float) -> str:
    if rate >= 1e6:
        return f"{rate / 1e6:.2f}M"
    if rate >= 1e3:
        return f"{rate / 1e3:.1f}k"
    return f"{rate:.0f}"


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def format_table(scenario: Scenario, results: dict[str, Result]) -> str:
    """Render one scenario as a fixed-width table (times are medians over the repetitions)."""
    limit = results.get(scenario.limit or "")
    ref = results.get(scenario.reference or "")
    header = (
        f"{'contender':<38} {'median':>9} {'min':>9} {'max':>9} {'per op':>9}"
        f" {scenario.unit + '/s':>9} {'vs limit':>9} {'vs underlay':>11}"
    )
    lines = [
        f"[{scenario.backend}] {scenario.title}  ({scenario.ops:,} {scenario.unit}, "
        f"{scenario.reps} reps)",
        header,
        "-" * len(header),
    ]
    for contender in scenario.contenders:
        res = results[contender.name]
        label = contender.name + (" *" if contender.name == scenario.limit else "")
        if not res.ok:
            reason = res.unavailable or res.error
            lines.append(f"{label:<38} {'n/a':>9}  {reason[:70]}")
            continue
        med = res.median
        lines.append(
            f"{label:<38} {_fmt_time(med):>9} {_fmt_time(min(res.times)):>9}"
            f" {_fmt_time(max(res.times)):>9} {_fmt_time(med / scenario.ops):>9}"
            f" {_fmt_rate(scenario.ops / med):>9} {_fmt_ratio(_ratio(res, limit)):>9}"
            f" {_fmt_ratio(_ratio(res, ref)):>11}"
        )
    return "\n".join(lines)


def scenario_record(scenario: Scenario, results: dict[str, Result]) -> dict[str, Any]:
    """Return the JSON-ready record of one scenario."""
    limit = results.get(scenario.limit or "")
    ref = results.get(scenario.reference or "")
    return {
        "id": scenario.id,
        "backend": scenario.backend,
        "title": scenario.title,
        "ops": scenario.ops,
        "unit": scenario.unit,
        "reps": scenario.reps,
        "limit": scenario.limit,
        "reference": scenario.reference,
        "results": [results[c.name].as_dict(scenario, limit, ref) for c in scenario.contenders],
        "extras": scenario.extras,
    }
