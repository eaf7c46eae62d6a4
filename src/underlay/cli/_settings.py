"""Where the command line finds its database URL and options.

In order of precedence: the command-line flags, the environment (``UNDERLAY_DATABASE_URL``,
``UNDERLAY_REDIS_URL``), then ``[tool.underlay]`` in the nearest ``pyproject.toml``::

    [tool.underlay]
    database_url = "postgresql+asyncpg://app@localhost/app"
    redis_url = "redis://localhost:6379/0"
    migrations = "migrations"
    pgbouncer = false
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["DATABASE_URL_ENV", "REDIS_URL_ENV", "CliError", "Settings", "load_settings"]

DATABASE_URL_ENV = "UNDERLAY_DATABASE_URL"
REDIS_URL_ENV = "UNDERLAY_REDIS_URL"
_KEYS = frozenset({"database_url", "redis_url", "migrations", "pgbouncer"})


class CliError(Exception):
    """A problem the command line reports as one line, without a traceback."""


@dataclass(frozen=True)
class Settings:
    """What a command runs against, and where each value came from."""

    database_url: str | None
    database_url_source: str
    redis_url: str | None
    migrations: Path
    pgbouncer: bool
    pyproject: Path | None

    def require_database_url(self) -> str:
        """Return the database URL, or raise `CliError` saying how to configure one."""
        if not self.database_url:
            raise CliError(
                f"no database URL: set {DATABASE_URL_ENV}, pass --database-url, or add "
                'database_url = "..." to [tool.underlay] in pyproject.toml'
            )
        return self.database_url


def _find_pyproject(start: Path) -> Path | None:
    for directory in (start, *start.parents):
        candidate = directory / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def _tool_table(pyproject: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise CliError(f"{pyproject} is not valid TOML: {exc}") from exc
    table = data.get("tool", {}).get("underlay", {})
    if not isinstance(table, dict):
        raise CliError(f"[tool.underlay] in {pyproject} must be a table")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise CliError(
            f"unknown key(s) in [tool.underlay] of {pyproject}: {', '.join(unknown)} "
            f"(known: {', '.join(sorted(_KEYS))})"
        )
    return table


def load_settings(
    *,
    cwd: Path | None = None,
    environ: Mapping[str, str] | None = None,
    database_url: str | None = None,
    migrations: str | None = None,
) -> Settings:
    """Resolve the settings from flags, the environment and ``pyproject.toml``."""
    base = Path.cwd() if cwd is None else cwd
    env = os.environ if environ is None else environ
    pyproject = _find_pyproject(base)
    table = _tool_table(pyproject) if pyproject is not None else {}
    root = pyproject.parent if pyproject is not None else base

    if database_url:
        url, source = database_url, "--database-url"
    elif env.get(DATABASE_URL_ENV):
        url, source = env[DATABASE_URL_ENV], DATABASE_URL_ENV
    elif table.get("database_url"):
        url, source = str(table["database_url"]), f"[tool.underlay] in {pyproject}"
    else:
        url, source = None, "not configured"

    if migrations:
        location = base / migrations
    else:
        location = root / str(table.get("migrations", "migrations"))
    pgbouncer = table.get("pgbouncer", False)
    if not isinstance(pgbouncer, bool):
        raise CliError(f"pgbouncer in [tool.underlay] must be true or false, not {pgbouncer!r}")
    redis_url = env.get(REDIS_URL_ENV) or table.get("redis_url") or None
    return Settings(
        database_url=url,
        database_url_source=source,
        redis_url=None if redis_url is None else str(redis_url),
        migrations=location,
        pgbouncer=pgbouncer,
        pyproject=pyproject,
    )
