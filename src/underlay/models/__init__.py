"""Declarative base, column types and model mixins."""

from underlay.models._base import NAMING_CONVENTION, Base
from underlay.models._lazy import RAISE_ON_LAZY_LOAD, enable_raise_on_lazy_load
from underlay.models._mixins import SoftDeleteMixin, TimestampMixin, VersionedMixin, mapper_args
from underlay.models._soft_delete import INCLUDE_DELETED, enable_soft_delete, live_unique_index
from underlay.models._types import UTCDateTime, utcnow
from underlay.models._versioning import enable_versioning

__all__ = [
    "INCLUDE_DELETED",
    "NAMING_CONVENTION",
    "RAISE_ON_LAZY_LOAD",
    "Base",
    "SoftDeleteMixin",
    "TimestampMixin",
    "UTCDateTime",
    "VersionedMixin",
    "enable_raise_on_lazy_load",
    "enable_soft_delete",
    "enable_versioning",
    "live_unique_index",
    "mapper_args",
    "utcnow",
]
