"""`MemorySessionStore`: the in-process store for tests and single-process applications."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

from underlay.cache._codec import Codec, JSONCodec
from underlay.sessions._base import (
    CURRENT_TENANT,
    SessionRecord,
    _Current,
    check_ttls,
    check_user,
    new_session_id,
    owner_of,
    parse_owner,
    resolve_tenant,
    session_digest,
    unknown_session,
    user_owner,
    valid_session_id,
    visible_here,
)

__all__ = ["MemorySessionStore"]


@dataclass
class _Entry:
    payload: bytes
    owner: str  # see owner_of: "" for an anonymous session without a tenant
    created_at: float
    expires_at: float
    idle_until: float


class MemorySessionStore:
    """Sessions in a dict, with the same behaviour as `RedisSessionStore`.

    Data goes through the same JSON codec, so what works here works in Redis. Sessions live
    in this process only: use it in tests and single-process applications.

    Args:
        idle_ttl: Seconds a session lives without being read.
        absolute_ttl: Seconds a session lives at most.
        clock: Seconds since the epoch; pass a fake clock to test expiry without waiting.
        codec: How data becomes bytes (`JSONCodec` by default).

    Example:
        >>> import asyncio
        >>> store = MemorySessionStore()
        >>> async def main() -> dict[str, object] | None:
        ...     sid = await store.create({"role": "user"}, user_id="u1")
        ...     return await store.get(sid)
        >>> asyncio.run(main())
        {'role': 'user'}
    """

    def __init__(
        self,
        *,
        idle_ttl: float = 1800,
        absolute_ttl: float = 86400,
        clock: Callable[[], float] = time.time,
        codec: Codec | None = None,
    ) -> None:
        check_ttls(idle_ttl, absolute_ttl)
        self.idle_ttl = idle_ttl
        self.absolute_ttl = absolute_ttl
        self.clock = clock
        self.codec: Codec = codec or JSONCodec()
        self._sessions: dict[str, _Entry] = {}
        self._users: dict[str, set[str]] = {}

    def __repr__(self) -> str:
        return f"MemorySessionStore(sessions={len(self._sessions)})"

    def _live(self, digest: str) -> _Entry | None:
        entry = self._sessions.get(digest)
        if entry is None:
            return None
        now = self.clock()
        if now >= entry.expires_at or now >= entry.idle_until:
            self._drop(digest)
            return None
        return entry

    def _drop(self, digest: str) -> _Entry | None:
        entry = self._sessions.pop(digest, None)
        if entry is not None and entry.owner in self._users:
            members = self._users.get(entry.owner)
            if members is not None:
                members.discard(digest)
                if not members:
                    del self._users[entry.owner]
        return entry

    def _purge(self) -> None:
        for digest in list(self._sessions):
            self._live(digest)

    async def create(
        self,
        data: Mapping[str, Any],
        *,
        user_id: str | None = None,
        tenant: str | _Current | None = CURRENT_TENANT,
    ) -> str:
        """Store a new session and return its id (see `RedisSessionStore.create`)."""
        user = check_user(user_id)
        owner = owner_of(user, resolve_tenant(tenant))
        payload = self.codec.encode(dict(data))
        if len(self._sessions) % 1024 == 1023:
            self._purge()
        session_id = new_session_id()
        digest = session_digest(session_id)
        now = self.clock()
        self._sessions[digest] = _Entry(
            payload,
            owner,
            now,
            now + self.absolute_ttl,
            now + self.idle_ttl,
        )
        if user is not None:
            self._users.setdefault(owner, set()).add(digest)
        return session_id

    async def get(self, session_id: str) -> dict[str, Any] | None:
        """Return the session's data or ``None``; a read slides the idle expiry."""
        record = await self.load(session_id)
        return record.data if record is not None else None

    async def load(self, session_id: str) -> SessionRecord | None:
        """Return the session's record or ``None``; a read slides the idle expiry."""
        if not valid_session_id(session_id):
            return None
        entry = self._live(session_digest(session_id))
        if entry is None:
            return None
        user, tenant = parse_owner(entry.owner)
        if not visible_here(tenant):
            return None
        entry.idle_until = self.clock() + self.idle_ttl
        data: dict[str, Any] = self.codec.decode(entry.payload)
        return SessionRecord(
            session_id, data, user, entry.created_at, entry.expires_at, tenant=tenant
        )

    async def save(self, session_id: str, data: Mapping[str, Any]) -> bool:
        """Replace the session's data; ``False`` when it no longer exists."""
        payload = self.codec.encode(dict(data))
        if not valid_session_id(session_id):
            return False
        entry = self._live(session_digest(session_id))
        if entry is None:
            return False
        entry.payload = payload
        return True

    async def rotate(self, session_id: str) -> str:
        """Move the session to a new id; the old one stops working (see the Redis store)."""
        if not valid_session_id(session_id):
            raise unknown_session()
        old = session_digest(session_id)
        entry = self._live(old)
        if entry is None:
            raise unknown_session()
        self._drop(old)
        new_id = new_session_id()
        digest = session_digest(new_id)
        entry.idle_until = self.clock() + self.idle_ttl
        self._sessions[digest] = entry
        if parse_owner(entry.owner)[0] is not None:
            self._users.setdefault(entry.owner, set()).add(digest)
        return new_id

    async def revoke(self, session_id: str) -> bool:
        """End one session; return whether it existed."""
        if not valid_session_id(session_id):
            return False
        digest = session_digest(session_id)
        return self._live(digest) is not None and self._drop(digest) is not None

    async def revoke_all(
        self, user_id: str, *, tenant: str | _Current | None = CURRENT_TENANT
    ) -> int:
        """End every session of ``user_id`` of the tenant; return how many were live."""
        owner = user_owner(user_id, tenant)
        ended = 0
        for digest in list(self._users.get(owner, ())):
            if self._live(digest) is not None:
                self._drop(digest)
                ended += 1
        self._users.pop(owner, None)
        return ended

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Forget every session."""
        self._sessions.clear()
        self._users.clear()
