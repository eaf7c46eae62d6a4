"""The README can be followed literally: its taste runs and its links point at real files."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def test_the_taste_runs_as_printed(tmp_path: Path) -> None:
    """The "A taste" program, copied as it stands, runs and prints what the README says."""
    section = README.split("## A taste", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert code is not None
    expected = re.search(r"It prints `([^`]+)`", section)
    assert expected is not None
    program = tmp_path / "taste.py"
    program.write_text(code.group(1))
    result = subprocess.run(
        [sys.executable, "-W", "error", str(program)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == expected.group(1)


def test_relative_links_exist() -> None:
    """Every relative link in the README names a file of the repository."""
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README)
    relative = [link for link in links if "://" not in link]
    assert relative
    assert [link for link in relative if not (ROOT / link).exists()] == []


def test_supported_backends_are_stated() -> None:
    """The README has the supported-backends table with every backend the package speaks to."""
    table = README.split("## Supported backends", 1)[1].split("##", 1)[0]
    for backend in ("PostgreSQL", "SQLite", "MySQL / MariaDB", "Redis", "Redis Cluster"):
        assert backend in table.splitlines()[2], backend


def test_supported_versions_match_the_package_metadata() -> None:
    """The supported-versions table names the classifiers' Pythons and the oldest SQLAlchemy."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pythons = sorted(
        (c.rsplit(" :: ", 1)[1] for c in project["classifiers"] if re.search(r":: 3\.\d+$", c)),
        key=lambda v: tuple(map(int, v.split("."))),
    )
    (sqlalchemy,) = [d for d in project["dependencies"] if d.startswith("sqlalchemy")]
    found = re.search(r">=([\d.]+)", sqlalchemy)
    assert found is not None, sqlalchemy
    oldest_sa = found.group(1)
    assert project["requires-python"] == f">={pythons[0]}"
    table = README.split("## Supported versions", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in table.splitlines() if line.startswith("| Python")]
    assert [row.split("|")[1].split()[1] for row in rows] == pythons
    assert f"Python {pythons[0]} (oldest)" in rows[0]
    assert f"Python {pythons[-1]} (newest)" in rows[-1]
    assert f"SQLAlchemy {oldest_sa} (oldest)" in table
