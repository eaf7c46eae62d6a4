"""Declarative base, column types and model mixins."""

from underlay.models._base import NAMING_CONVENTION, Base
from underlay.models._mixins import SoftDeleteMixin, TimestampMixin, VersionedMixin, mapper_args
from underlay.models._types import UTCDateTime, utcnow

__all__ = [
    "NAMING_CONVENTION",
    "Base",
    "SoftDeleteMixin",
    "TimestampMixin",
    "UTCDateTime",
    "VersionedMixin",
    "mapper_args",
    "utcnow",
]
