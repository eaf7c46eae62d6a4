"""Declarative base, column types and model mixins."""

from underlay.models._base import NAMING_CONVENTION, Base
from underlay.models._mixins import SoftDeleteMixin, TimestampMixin, VersionedMixin, mapper_args
from underlay.models._soft_delete import INCLUDE_DELETED, enable_soft_delete, live_unique_index
from underlay.models._types import UTCDateTime, utcnow
from underlay.models._versioning import enable_versioning

__all__ = [
    "INCLUDE_DELETED",
    "NAMING_CONVENTION",
    "Base",
    "SoftDeleteMixin",
    "TimestampMixin",
    "UTCDateTime",
    "VersionedMixin",
    "enable_soft_delete",
    "enable_versioning",
    "live_unique_index",
    "mapper_args",
    "utcnow",
]
