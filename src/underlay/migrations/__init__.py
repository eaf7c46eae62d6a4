"""Alembic integration: an async-ready ``env.py`` helper, a template and programmatic commands.

Needs the ``alembic`` extra (``pip install 'underlay[alembic]'``). Create a migrations
directory with ``underlay init-migrations DIR`` (or ``python -m underlay.migrations init
DIR``); its ``env.py`` calls :func:`run_migrations`. From Python, every command is a
coroutine that runs on the caller's event loop::

    await upgrade(db, "head", script_location="migrations")
    await check(db, script_location="migrations")  # raises MigrationDriftError
"""

from underlay._imports import require

require("alembic", extra="alembic")

from underlay.migrations import _compare, _ops  # noqa: E402, F401 - registers operations
from underlay.migrations._commands import (  # noqa: E402 - after the dependency check
    MigrationDriftError,
    StairwayError,
    check,
    describe_difference,
    downgrade,
    make_config,
    revision,
    stairway,
    upgrade,
    upgrade_sql,
)
from underlay.migrations._env import render_item, run_migrations  # noqa: E402
from underlay.migrations._fk import (  # noqa: E402
    UnindexedForeignKey,
    index_foreign_keys,
    unindexed_foreign_keys,
)
from underlay.migrations._rewrite import PossibleRenameError  # noqa: E402
from underlay.migrations._scaffold import init  # noqa: E402

__all__ = [
    "MigrationDriftError",
    "PossibleRenameError",
    "StairwayError",
    "UnindexedForeignKey",
    "check",
    "describe_difference",
    "downgrade",
    "index_foreign_keys",
    "init",
    "make_config",
    "render_item",
    "revision",
    "run_migrations",
    "stairway",
    "unindexed_foreign_keys",
    "upgrade",
    "upgrade_sql",
]
