"""The ``underlay`` command line: migrations driven by the configured database, and ``doctor``.

Run ``underlay --help``. The database URL comes from ``--database-url``, the
``UNDERLAY_DATABASE_URL`` environment variable or ``database_url`` in ``[tool.underlay]`` of
``pyproject.toml``; the migrations directory from ``--migrations`` or ``migrations`` there.
"""

from underlay.cli._main import main

__all__ = ["main"]
