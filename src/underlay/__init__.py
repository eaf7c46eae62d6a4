"""underlay: a typed, async-first data layer on SQLAlchemy 2.x."""

from underlay._retry import retry_on_conflict
from underlay._version import __version__
from underlay.database import Database, DatabaseSession, call_after_commit, record_write
from underlay.exceptions import (
    ConflictError,
    ConstraintError,
    DuplicateError,
    ForeignKeyError,
    InvalidQueryError,
    MissingDependencyError,
    MultipleResultsError,
    NotFoundError,
    SerializationError,
    StaleVersionError,
    UnderlayError,
)
from underlay.models import (
    Base,
    SoftDeleteMixin,
    TimestampMixin,
    UTCDateTime,
    VersionedMixin,
    enable_soft_delete,
    enable_versioning,
    live_unique_index,
    mapper_args,
)
from underlay.repository import (
    CursorPage,
    InMemoryRepository,
    Page,
    Repository,
    SQLAlchemyRepository,
    to_schema,
    to_schemas,
)

__all__ = [
    "Base",
    "ConflictError",
    "ConstraintError",
    "CursorPage",
    "Database",
    "DatabaseSession",
    "DuplicateError",
    "ForeignKeyError",
    "InMemoryRepository",
    "InvalidQueryError",
    "MissingDependencyError",
    "MultipleResultsError",
    "NotFoundError",
    "Page",
    "Repository",
    "SQLAlchemyRepository",
    "SerializationError",
    "SoftDeleteMixin",
    "StaleVersionError",
    "TimestampMixin",
    "UTCDateTime",
    "UnderlayError",
    "VersionedMixin",
    "__version__",
    "call_after_commit",
    "enable_soft_delete",
    "enable_versioning",
    "live_unique_index",
    "mapper_args",
    "record_write",
    "retry_on_conflict",
    "to_schema",
    "to_schemas",
]
