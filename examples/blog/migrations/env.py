"""Alembic environment of the blog (created with ``underlay init-migrations``)."""

import os
from logging.config import fileConfig

from alembic import context
from blog.models import Base

from underlay.migrations import run_migrations

config = context.config
if config.config_file_name is not None and config.cmd_opts is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

run_migrations(Base.metadata, url=os.environ.get("DATABASE_URL") or None)
