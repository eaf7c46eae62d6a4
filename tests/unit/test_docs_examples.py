"""Every program the docs show runs: examples/quickstart.py, fastapi_app.py, docs/examples/*.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROGRAMS = sorted(
    [
        ROOT / "examples" / "quickstart.py",
        ROOT / "examples" / "fastapi_app.py",
        *(ROOT / "docs" / "examples").glob("*.py"),
    ]
)


@pytest.mark.parametrize("program", PROGRAMS, ids=[p.name for p in PROGRAMS])
def test_program_runs(program: Path, tmp_path: Path) -> None:
    """The program exits 0 (examples assert their own results) on the embedded backends."""
    result = subprocess.run(
        [sys.executable, str(program)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, f"{program.name} failed:\n{result.stdout}\n{result.stderr}"
    assert result.stdout.strip(), f"{program.name} printed nothing"


def test_examples_keep_the_naming_convention() -> None:
    """No example builds a bare `MetaData()`, which would drop the naming convention."""
    bare = [p.name for p in PROGRAMS if "MetaData()" in p.read_text()]
    assert bare == []
