"""The README can be followed literally: its taste runs and its links point at real files."""

from __future__ import annotations

import re
import subprocess
import sys
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
