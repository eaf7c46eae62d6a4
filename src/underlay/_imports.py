"""Import optional dependencies, naming the extra that installs a missing one."""

from __future__ import annotations

import importlib
from types import ModuleType

from underlay.exceptions import MissingDependencyError

__all__ = ["require"]

# driver name in a SQLAlchemy URL -> (module to import, underlay extra)
DRIVER_EXTRAS: dict[str, tuple[str, str]] = {
    "asyncpg": ("asyncpg", "postgres"),
    "aiosqlite": ("aiosqlite", "sqlite"),
    "aiomysql": ("aiomysql", "mysql"),
}


def require(module: str, *, extra: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming ``extra``.

    Args:
        module: The dotted module name to import.
        extra: The underlay extra that installs it.

    Returns:
        The imported module.

    Raises:
        MissingDependencyError: The module (or its top-level package) is not installed.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        top = module.partition(".")[0]
        if exc.name is not None and exc.name.partition(".")[0] != top:
            raise
        raise MissingDependencyError(top, extra=extra) from exc
