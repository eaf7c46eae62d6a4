"""The performance targets of the issue, checked against the medians of one run."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from ._harness import Result, Scenario

Runs = dict[str, tuple[Scenario, dict[str, Result]]]

# (scenario suffix, advanced-alchemy contender, the equivalent underlay contender)
AA_PAIRS = [
    ("insert.10k", "advanced-alchemy add_many", "underlay insert_many"),
    ("insert.100k", "advanced-alchemy add_many", "underlay insert_many"),
    ("upsert.10k", "advanced-alchemy upsert_many", "underlay upsert_many"),
    ("get.per-call", "advanced-alchemy get", "underlay repo.get"),
    ("get.one-session", "advanced-alchemy get", "underlay repo.get"),
    ("list50", "advanced-alchemy get_many", "underlay list_all"),
    ("page.0", "advanced-alchemy get_many OFFSET", "underlay page (OFFSET)"),
    ("page.0", "advanced-alchemy get_many OFFSET", "underlay paginate (keyset)"),
    ("page.99k", "advanced-alchemy get_many OFFSET", "underlay page (OFFSET)"),
    ("page.99k", "advanced-alchemy get_many OFFSET", "underlay paginate (keyset)"),
    ("count", "advanced-alchemy (window count)", 'underlay page count="exact"'),
    ("count", "advanced-alchemy (count query)", 'underlay page count="exact"'),
    ("update", "advanced-alchemy get+update", "underlay update"),
    (
        "update",
        "advanced-alchemy get+update (versioned)",
        "underlay update (expected_version)",
    ),
]


@dataclass
class Check:
    """One target evaluated on one backend."""

    id: str
    target: str
    backend: str
    numerator: tuple[str, str]  # (scenario id, contender)
    denominator: tuple[str, str]
    threshold: float
    higher_is_better: bool  # True: the ratio must reach the threshold; False: stay under it
    strict: bool = False  # True: must beat the threshold, equal is not enough
    extra: str | None = None  # an extras key that must equal 1 (round trips)

    def evaluate(self, runs: Runs) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": self.id,
            "target": self.target,
            "backend": self.backend,
            "ratio": f"{self.numerator[1]} / {self.denominator[1]}",
            "threshold": self.threshold,
            "comparison": (">" if self.strict else ">=")
            if self.higher_is_better
            else ("<" if self.strict else "<="),
        }
        num, den = _median(runs, *self.numerator), _median(runs, *self.denominator)
        if num is None or den is None:
            record.update(status="n/a", value=None, detail="a contender did not run")
            return record
        value = num / den
        record["paired"] = _paired(runs, self.numerator, self.denominator)
        if self.higher_is_better:
            met = value > self.threshold if self.strict else value >= self.threshold
        else:
            met = value < self.threshold if self.strict else value <= self.threshold
        record.update(value=round(value, 3))
        if self.extra is not None:
            scenario = runs.get(self.numerator[0])
            trips = scenario[0].extras.get(self.extra) if scenario else None
            record["round_trips"] = trips
            met = met and trips == 1
        record["status"] = "met" if met else "missed"
        return record


@dataclass
class BoundCheck:
    """A target on one contender's own time per operation (microseconds), not a ratio."""

    id: str
    target: str
    backend: str
    measured: tuple[str, str]  # (scenario id, contender)
    limit_us: float

    def evaluate(self, runs: Runs) -> dict[str, Any]:
        record: dict[str, Any] = {
            "id": self.id,
            "target": self.target,
            "backend": self.backend,
            "ratio": f"{self.measured[1]} per call (us)",
            "threshold": self.limit_us,
            "comparison": "<",
            "unit": "us",
        }
        median = _median(runs, *self.measured)
        if median is None:
            record.update(status="n/a", value=None, detail="the contender did not run")
            return record
        value = median / runs[self.measured[0]][0].ops * 1e6
        record.update(value=round(value, 3), status="met" if value < self.limit_us else "missed")
        return record


def _paired(runs: Runs, num: tuple[str, str], den: tuple[str, str]) -> float | None:
    """Median of the per-repetition ratios (each pair ran in the same sweep)."""
    if num[0] != den[0] or num[0] not in runs:
        return None
    results = runs[num[0]][1]
    a, b = results[num[1]].times, results[den[1]].times
    if len(a) != len(b) or not a:
        return None
    return round(statistics.median(x / y for x, y in zip(a, b, strict=True)), 3)


def _median(runs: Runs, scenario_id: str, contender: str) -> float | None:
    if scenario_id not in runs:
        return None
    result = runs[scenario_id][1].get(contender)
    if result is None or not result.ok:
        return None
    return result.median


def checks(backends: list[str]) -> list[Check | BoundCheck]:
    """Return every target check for the backends that ran ("pg", "sqlite")."""
    out: list[Check | BoundCheck] = []
    for b in backends:
        if b == "pg":
            for size in ("10k", "100k"):
                out.append(
                    Check(
                        f"copy.{b}.{size}",
                        f"insert_many >= 0.8x COPY throughput ({size} rows)",
                        b,
                        (f"{b}.insert.{size}", "asyncpg COPY"),
                        (f"{b}.insert.{size}", "underlay insert_many"),
                        0.8,
                        higher_is_better=True,
                    )
                )
        for size in ("10k", "100k"):
            out.append(
                Check(
                    f"core.{b}.{size}",
                    f"insert_many >= 1.0x SQLAlchemy Core throughput ({size} rows)",
                    b,
                    (f"{b}.insert.{size}", "SQLAlchemy Core executemany"),
                    (f"{b}.insert.{size}", "underlay insert_many"),
                    1.0,
                    higher_is_better=True,
                )
            )
        for suffix, aa, ours in AA_PAIRS:
            out.append(
                Check(
                    f"aa.{b}.{suffix}.{ours}",
                    f"faster than advanced-alchemy: {ours} vs {aa} ({suffix})",
                    b,
                    (f"{b}.{suffix}", aa),
                    (f"{b}.{suffix}", ours),
                    1.0,
                    higher_is_better=True,
                    strict=True,
                )
            )
        if b == "pg":
            out.append(
                Check(
                    f"aa-moonshot.{b}.get",
                    "repo.get >= 1.2x advanced-alchemy get (session per call)",
                    b,
                    (f"{b}.get.per-call", "advanced-alchemy get"),
                    (f"{b}.get.per-call", "underlay repo.get"),
                    1.2,
                    higher_is_better=True,
                )
            )
        for mode in ("per-call", "one-session"):
            out += [
                Check(
                    f"get.{b}.{mode}",
                    f"repo.get within 1.15x of session.get, same Database session ({mode})",
                    b,
                    (f"{b}.get.{mode}", "underlay repo.get"),
                    (f"{b}.get.{mode}", "underlay session.get"),
                    1.15,
                    higher_is_better=False,
                ),
                Check(
                    f"get-plain.{b}.{mode}",
                    f"repo.get within 1.15x of session.get, plain SQLAlchemy session ({mode})",
                    b,
                    (f"{b}.get.{mode}", "underlay repo.get"),
                    (f"{b}.get.{mode}", "SQLAlchemy ORM session.get"),
                    1.15,
                    higher_is_better=False,
                ),
            ]
        out += [
            Check(
                f"depth.{b}",
                "paginate at depth 99k within 1.5x of depth 0",
                b,
                (f"{b}.page-depth", "underlay paginate @99,000"),
                (f"{b}.page-depth", "underlay paginate @0"),
                1.5,
                higher_is_better=False,
            ),
            Check(
                f"cache-hit.{b}",
                "CachedRepository.get hit within 1.2x of GET + decode, one round trip",
                b,
                (f"{b}.cache-hit", "underlay CachedRepository.get (hit)"),
                (f"{b}.cache-hit", "redis-py GET + orjson.loads"),
                1.2,
                higher_is_better=False,
                extra="redis_round_trips_per_hit",
            ),
            Check(
                f"cache-many.{b}",
                "CachedRepository.get_many of 100 hits within 1.5x of RedisCache.get_many",
                b,
                (f"{b}.cache-many", "underlay CachedRepository.get_many"),
                (f"{b}.cache-many", "underlay RedisCache.get_many + validate"),
                1.5,
                higher_is_better=False,
            ),
            BoundCheck(
                f"cache-near.{b}",
                "near-cache hit < 10 us (RedisCache.get_or_set)",
                b,
                (f"{b}.cache-near", "underlay RedisCache.get_or_set (near hit)"),
                10.0,
            ),
            BoundCheck(
                f"cache-near-repository.{b}",
                "near-cache hit < 10 us (CachedRepository.get, schema validated)",
                b,
                (f"{b}.cache-near", "underlay CachedRepository.get (near hit)"),
                10.0,
            ),
            Check(
                f"page-filtered.{b}",
                "filtered keyset page within 1.1x of the same hand-written SQLAlchemy query",
                b,
                (f"{b}.page.filtered", "underlay paginate(filter_by=query string)"),
                (f"{b}.page.filtered", "SQLAlchemy ORM hand-written"),
                1.10,
                higher_is_better=False,
            ),
            Check(
                f"soft-delete.{b}",
                "soft-delete filter costs < 10 % on list_all",
                b,
                (f"{b}.soft-delete", "underlay list_all (filtered)"),
                (f"{b}.soft-delete", "underlay list_all include_deleted"),
                1.10,
                higher_is_better=False,
                strict=True,
            ),
            Check(
                f"version.{b}",
                "version check costs < 10 % on update",
                b,
                (f"{b}.update", "underlay update (expected_version)"),
                (f"{b}.update", "underlay update"),
                1.10,
                higher_is_better=False,
                strict=True,
            ),
        ]
    return out


def evaluate(runs: Runs, backends: list[str]) -> list[dict[str, Any]]:
    """Evaluate every target; each record says met, missed or n/a with the measured ratio."""
    return [check.evaluate(runs) for check in checks(backends)]


def format_targets(records: list[dict[str, Any]]) -> str:
    """Render the target records as a table."""
    lines = [f"{'status':<7} {'backend':<7} {'ratio':>8} {'paired':>8} {'need':>8}  target"]
    for r in records:
        unit = r.get("unit", "x")
        value = "-" if r["value"] is None else f"{r['value']:.2f}{unit}"
        paired = "-" if r.get("paired") is None else f"{r['paired']:.2f}x"
        need = f"{r['comparison']}{r['threshold']:.2f}{'us' if unit == 'us' else ''}"
        trips = f" [round trips per hit: {r['round_trips']}]" if "round_trips" in r else ""
        lines.append(
            f"{r['status']:<7} {r['backend']:<7} {value:>8} {paired:>8} {need:>8}  "
            f"{r['target']}{trips}"
        )
    met = sum(r["status"] == "met" for r in records)
    missed = sum(r["status"] == "missed" for r in records)
    lines.append(f"{met} met, {missed} missed, {len(records) - met - missed} n/a")
    return "\n".join(lines)
