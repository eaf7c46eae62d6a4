"""Alembic environment, written by ``underlay init-migrations``.

Point the import below at your models' declarative base, so that autogenerate sees them.
The URL comes from ``DATABASE_URL`` or, failing that, ``sqlalchemy.url`` in alembic.ini.
"""

import os
from logging.config import fileConfig

from alembic import context

from underlay import Base  # your models' base, e.g. from myapp.models import Base
from underlay.migrations import run_migrations

config = context.config
if config.config_file_name is not None and config.cmd_opts is not None:
    # Only from the alembic command line (cmd_opts): programs calling upgrade() keep theirs.
    fileConfig(config.config_file_name, disable_existing_loggers=False)

run_migrations(Base.metadata, url=os.environ.get("DATABASE_URL") or None)
