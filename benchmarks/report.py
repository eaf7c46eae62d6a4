"""Render a results JSON as Markdown: ``python -m benchmarks.report [--update PAGE] [JSON]``.

With ``--update``, the text between the ``<!-- results:start -->`` and ``<!-- results:end -->``
markers of the page is replaced, so docs/performance.md always shows one real run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .__main__ import RESULTS

START, END = "<!-- results:start -->", "<!-- results:end -->"


def _time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds * 1e6:.0f} us"


def _rate(rate: float) -> str:
    if rate >= 1e3:
        return f"{rate / 1e3:.1f}k"
    return f"{rate:.0f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def machine(meta: dict[str, Any], data: dict[str, Any]) -> list[str]:
    libs = meta["libraries"]
    return [
        f"Run finished {data['finished_at']} in {data['duration_s']:.0f} s"
        f" (commit `{meta.get('commit') or 'unknown'}`).",
        "",
        "| | |",
        "|---|---|",
        f"| CPU | {meta['cpu']}, {meta['cores']} cores |",
        f"| Memory | {meta['memory_gib']} GiB |",
        f"| OS | {meta['os']} |",
        f"| Load average (1/5/15 min) at start / end | "
        f"{' / '.join(map(str, meta.get('load_average_at_start', [])))} to "
        f"{' / '.join(map(str, meta.get('load_average_at_end', [])))} |",
        f"| PostgreSQL | {meta['postgresql']} (loopback TCP) |",
        f"| Redis | {meta['redis']} (loopback TCP) |",
        f"| SQLite | {meta['sqlite']} (file, WAL, synchronous=NORMAL) |",
        f"| Python | {meta['python']} |",
        "| Libraries | " + ", ".join(f"{name} {version}" for name, version in libs.items()) + " |",
    ]


def targets(records: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| status | backend | target | measured | paired | needed |",
        "|---|---|---|---|---|---|",
    ]
    for r in records:
        value = "n/a" if r["value"] is None else f"{r['value']:.2f}x"
        paired = "-" if r.get("paired") is None else f"{r['paired']:.2f}x"
        extra = f" (Redis round trips per hit: {r['round_trips']})" if "round_trips" in r else ""
        lines.append(
            f"| **{r['status']}** | {r['backend']} | {r['target']}{extra}<br>"
            f"<small>{r['ratio']}</small> | {value} | {paired} | "
            f"{r['comparison']} {r['threshold']:.2f}x |"
        )
    return lines


def scenario(record: dict[str, Any]) -> list[str]:
    unit = record["unit"]
    lines = [
        f"#### {record['backend']} · {record['title']}",
        "",
        f"{record['ops']:,} {unit} per repetition, {record['reps']} repetitions; limit "
        f"(x1.00) = {record['limit']}.",
        "",
        f"| contender | median | min | max | per op | {unit}/s | vs limit | vs underlay |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in record["results"]:
        name = r["contender"] + (f" <small>({r['note']})</small>" if r.get("note") else "")
        if r["status"] != "ok":
            lines.append(f"| {name} | n/a | | | | | | {r.get('reason', '')[:80]} |")
            continue
        lines.append(
            f"| {name} | {_time(r['median_s'])} | {_time(r['min_s'])} | {_time(r['max_s'])} | "
            f"{_time(r['median_s'] / record['ops'])} | {_rate(r['ops_per_s'])} | "
            f"{_ratio(r['ratio_to_limit'])} | {_ratio(r['ratio_to_underlay'])} |"
        )
    extras = {k: v for k, v in record.get("extras", {}).items() if not isinstance(v, dict)}
    if extras:
        lines += ["", "Also measured: " + ", ".join(f"{k} = {v}" for k, v in extras.items()) + "."]
    return [*lines, ""]


def render(data: dict[str, Any]) -> str:
    lines = ["### Machine", "", *machine(data["machine"], data), "", "### Targets", ""]
    lines += targets(data["targets"])
    lines += ["", "### All scenarios", ""]
    for record in data["scenarios"]:
        lines += scenario(record)
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__)
    parser.add_argument("results", nargs="?", type=Path, default=RESULTS)
    parser.add_argument("--update", type=Path, help="a Markdown page with the markers")
    args = parser.parse_args(argv)
    text = render(json.loads(args.results.read_text()))
    if args.update is None:
        sys.stdout.write(text)
        return 0
    page = args.update.read_text()
    head, _, rest = page.partition(START)
    _, _, tail = rest.partition(END)
    args.update.write_text(f"{head}{START}\n{text}{END}{tail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
