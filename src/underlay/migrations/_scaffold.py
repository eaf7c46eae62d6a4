"""Write a migrations directory from underlay's template; the ``underlay`` command line."""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

__all__ = ["init", "main"]

_TEMPLATE_FILES = ("alembic.ini", "env.py", "script.py.mako")


def init(directory: str | Path) -> Path:
    """Create a migrations directory from underlay's template.

    It holds ``alembic.ini``, ``env.py``, ``script.py.mako`` and an empty ``versions/``.

    The ``env.py`` runs through :func:`underlay.migrations.run_migrations`; edit its import
    to point at your models. Run Alembic with ``alembic -c DIRECTORY/alembic.ini ...``.

    Args:
        directory: Where to create it; it must not exist or be empty.

    Returns:
        The directory.

    Raises:
        FileExistsError: The directory exists and is not empty.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as tmp:
        ...     sorted(path.name for path in init(Path(tmp) / "migrations").iterdir())
        ['alembic.ini', 'env.py', 'script.py.mako', 'versions']
    """
    target = Path(directory)
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{target} exists and is not empty; choose a new directory")
    (target / "versions").mkdir(parents=True, exist_ok=True)
    template = resources.files("underlay.migrations").joinpath("template")
    for name in _TEMPLATE_FILES:
        with resources.as_file(template.joinpath(name)) as source:
            shutil.copyfile(source, target / name)
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``underlay`` command line (``underlay init-migrations DIR``).

    Args:
        argv: The arguments, without the program name; defaults to ``sys.argv[1:]``.

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(prog="underlay", description="underlay tools")
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("init-migrations", "init"):
        sub = commands.add_parser(name, help="create a migrations directory from the template")
        sub.add_argument("directory", type=Path)
    args = parser.parse_args(argv)
    try:
        created = init(args.directory)
    except FileExistsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(
        f"Created {created}. Edit {created / 'env.py'} to import your models' Base, then run:\n"
        f"  alembic -c {created / 'alembic.ini'} revision --autogenerate -m 'initial'"
    )
    return 0
