"""Caching that stays correct around transactions.

Pass a cache to :class:`~underlay.Database` (``Database(url, cache=cache)``) and every
commit invalidates what it changed before ``commit()`` returns. See the cache guide for the
guarantees and their limits.
"""

from underlay.cache._codec import Codec, DecodeError, JSONCodec, schema_fingerprint
from underlay.cache._memory import MemoryCache
from underlay.cache._near import NearCache
from underlay.cache._protocol import Cache
from underlay.cache._redis import RedisCache
from underlay.cache._repository import CachedRepository
from underlay.cache._stats import CacheStats

__all__ = [
    "Cache",
    "CacheStats",
    "CachedRepository",
    "Codec",
    "DecodeError",
    "JSONCodec",
    "MemoryCache",
    "NearCache",
    "RedisCache",
    "schema_fingerprint",
]
