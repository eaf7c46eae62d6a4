"""What every session store shares: ids, records, errors and the store protocol."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from underlay.exceptions import NotFoundError, UnderlayError

__all__ = [
    "SessionRecord",
    "SessionStore",
    "SessionUnavailableError",
    "check_ttls",
    "new_session_id",
    "session_digest",
    "unknown_session",
    "valid_session_id",
]

#: 32 random bytes: 256 bits, 43 URL-safe characters.
ID_BYTES = 32
_ID = re.compile(r"[A-Za-z0-9_-]{43}")


class SessionUnavailableError(UnderlayError):
    """Raised when the session store did not answer within its deadline (or is down).

    Treat it as "not authenticated": fail closed. `SessionMiddleware` answers such requests
    with 503 by default.
    """


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A live session as a store holds it.

    Attributes:
        id: The session id (the cookie value).
        data: The session's data.
        user_id: The user it belongs to, or ``None`` for an anonymous session.
        created_at: When it was created, in seconds since the epoch.
        expires_at: Its absolute expiry, in seconds since the epoch (idle expiry may come
            sooner).
    """

    id: str
    data: dict[str, Any]
    user_id: str | None
    created_at: float
    expires_at: float


class SessionStore(Protocol):
    """The interface of `RedisSessionStore` and `MemorySessionStore`."""

    async def create(self, data: Mapping[str, Any], *, user_id: str | None = None) -> str:
        """Store a new session and return its id."""
        ...

    async def get(self, session_id: str) -> dict[str, Any] | None:
        """Return the session's data, or ``None`` if it does not exist (any more)."""
        ...

    async def load(self, session_id: str) -> SessionRecord | None:
        """Return the whole session record, or ``None``; a read slides the idle expiry."""
        ...

    async def save(self, session_id: str, data: Mapping[str, Any]) -> bool:
        """Replace the session's data; return ``False`` if the session is gone."""
        ...

    async def rotate(self, session_id: str) -> str:
        """Move the session to a new id; the old id stops working at once."""
        ...

    async def revoke(self, session_id: str) -> bool:
        """End one session; return whether it existed."""
        ...

    async def revoke_all(self, user_id: str) -> int:
        """End every session of ``user_id``; return how many there were."""
        ...

    async def aclose(self) -> None:
        """Release the store's connections."""
        ...


def new_session_id() -> str:
    """Return a new session id: 256 bits from the operating system's CSPRNG, URL-safe."""
    return secrets.token_urlsafe(ID_BYTES)


def valid_session_id(value: object) -> bool:
    """Return whether ``value`` is shaped like an id `new_session_id` makes."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def session_digest(session_id: str) -> str:
    """Return the name a session is stored under: a hash, so stored keys reveal no ids."""
    return hashlib.sha256(session_id.encode()).hexdigest()


def unknown_session() -> NotFoundError:
    """The error `rotate` raises for an id that is unknown, expired or revoked."""
    return NotFoundError(
        "No session with that id exists (it expired or was revoked); create a new one."
    )


def check_ttls(idle_ttl: float, absolute_ttl: float) -> None:
    """Refuse expiry settings that make no sense."""
    if idle_ttl <= 0 or absolute_ttl <= 0:
        raise ValueError("idle_ttl and absolute_ttl must be positive numbers of seconds")


def check_user(user_id: object) -> str | None:
    """Return ``user_id`` if it is ``None`` or a usable user id, else raise ``ValueError``."""
    if user_id is None:
        return None
    if not isinstance(user_id, str) or not user_id or len(user_id) > 256:
        raise ValueError(f"user_id {user_id!r} must be a non-empty string of at most 256 chars")
    return user_id
