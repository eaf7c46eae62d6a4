"""Server-side sessions: a Redis store, an in-process store and an ASGI middleware.

Session ids are 256 random bits, data is JSON (never pickle), expiry is sliding with an
absolute cap, ids rotate on login, and every session of a user can be revoked at once. A
store that cannot answer within its deadline raises `SessionUnavailableError`: fail closed.
"""

from underlay.sessions._base import (
    SessionRecord,
    SessionStore,
    SessionUnavailableError,
    new_session_id,
)
from underlay.sessions._memory import MemorySessionStore
from underlay.sessions._middleware import Session, SessionMiddleware
from underlay.sessions._redis import RedisSessionStore

__all__ = [
    "MemorySessionStore",
    "RedisSessionStore",
    "Session",
    "SessionMiddleware",
    "SessionRecord",
    "SessionStore",
    "SessionUnavailableError",
    "new_session_id",
]
