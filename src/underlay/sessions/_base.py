"""What every session store shares: ids, records, errors and the store protocol."""

from __future__ import annotations

import hashlib
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol
from urllib.parse import quote, unquote

from underlay.exceptions import NotFoundError, UnderlayError
from underlay.tenancy._context import tenant_context, tenant_if_set

__all__ = [
    "CURRENT_TENANT",
    "SessionRecord",
    "SessionStore",
    "SessionUnavailableError",
    "check_ttls",
    "new_session_id",
    "owner_of",
    "parse_owner",
    "resolve_tenant",
    "session_digest",
    "unknown_session",
    "user_owner",
    "valid_session_id",
    "visible_here",
]

#: 32 random bytes: 256 bits, 43 URL-safe characters.
ID_BYTES = 32
_ID = re.compile(r"[A-Za-z0-9_-]{43}")


class SessionUnavailableError(UnderlayError):
    """Raised when the session store did not answer within its deadline (or is down).

    Treat it as "not authenticated": fail closed. `SessionMiddleware` answers such requests
    with 503 by default.
    """


class _Current:
    def __repr__(self) -> str:
        return "CURRENT_TENANT"


#: The default of ``tenant=`` arguments: the tenant in effect (`tenant_context`), if any.
CURRENT_TENANT: Final = _Current()


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
        tenant: The tenant it was created for (`tenant_context` at `create`), or ``None``.
    """

    id: str
    data: dict[str, Any]
    user_id: str | None
    created_at: float
    expires_at: float
    tenant: str | None = None


class SessionStore(Protocol):
    """The interface of `RedisSessionStore` and `MemorySessionStore`."""

    async def create(
        self,
        data: Mapping[str, Any],
        *,
        user_id: str | None = None,
        tenant: str | _Current | None = CURRENT_TENANT,
    ) -> str:
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

    async def revoke_all(
        self, user_id: str, *, tenant: str | _Current | None = CURRENT_TENANT
    ) -> int:
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


def resolve_tenant(tenant: str | _Current | None) -> str | None:
    """Return the tenant a call is for: the context's for `CURRENT_TENANT`, else ``tenant``."""
    if isinstance(tenant, _Current):
        return tenant_if_set()
    if tenant is None:
        return None
    with tenant_context(tenant):  # validates it like every other tenant id
        return tenant


def owner_of(user_id: str | None, tenant: str | None) -> str:
    """Return the text a store keeps for a session's user and tenant ("" for neither).

    ``<quoted tenant>/<user>``: quoting leaves no ``/`` in the tenant, so user ``"a/b"`` of
    no tenant and user ``"b"`` of tenant ``"a"`` never share a "log out everywhere" index.
    """
    if user_id is None and tenant is None:
        return ""
    return f"{quote(tenant, safe='') if tenant else ''}/{user_id or ''}"


def user_owner(user_id: object, tenant: str | _Current | None) -> str:
    """Return the owner text of ``user_id`` in ``tenant`` (for `revoke_all`), checked."""
    user = check_user(user_id)
    if user is None:
        raise ValueError("revoke_all needs a user id")
    return owner_of(user, resolve_tenant(tenant))


def parse_owner(owner: str) -> tuple[str | None, str | None]:
    """Return ``(user_id, tenant)`` from the text `owner_of` made."""
    if not owner:
        return None, None
    tenant, _, user = owner.partition("/")
    return user or None, unquote(tenant) or None


def visible_here(tenant: str | None) -> bool:
    """Whether a session of ``tenant`` may be used in the current tenant's context.

    A session created for one tenant is never honoured inside another tenant's context
    (a cookie replayed against another tenant's host); a session without a tenant is.
    """
    current = tenant_if_set()
    return tenant is None or current is None or current == tenant
