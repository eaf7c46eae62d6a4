"""Repositories: the ``Repository`` protocol, ``SQLAlchemyRepository`` and its helpers.

Import the main names from ``underlay``; this package also exposes the cursor-secret
setting and ``COPY_THRESHOLD``.
"""

from underlay.repository._memory import InMemoryRepository
from underlay.repository._pagination import (
    CURSOR_SECRET_ENV,
    CursorPage,
    Page,
    set_cursor_secret,
)
from underlay.repository._protocol import Repository
from underlay.repository._query import SortKey
from underlay.repository._schemas import to_schema, to_schemas
from underlay.repository._sqlalchemy import SQLAlchemyRepository
from underlay.repository._stream import Stream
from underlay.repository._writes import COPY_THRESHOLD, INSERT_BATCH, UPSERT_BATCH

__all__ = [
    "COPY_THRESHOLD",
    "CURSOR_SECRET_ENV",
    "INSERT_BATCH",
    "UPSERT_BATCH",
    "CursorPage",
    "InMemoryRepository",
    "Page",
    "Repository",
    "SQLAlchemyRepository",
    "SortKey",
    "Stream",
    "set_cursor_secret",
    "to_schema",
    "to_schemas",
]
