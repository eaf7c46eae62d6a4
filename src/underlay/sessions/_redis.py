"""`RedisSessionStore`: server-side sessions in Redis with bounded deadlines."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

from underlay._imports import require
from underlay._redis_client import connect
from underlay.cache._breaker import CircuitBreaker
from underlay.cache._codec import Codec, DecodeError, JSONCodec
from underlay.sessions import _scripts
from underlay.sessions._base import (
    CURRENT_TENANT,
    SessionRecord,
    SessionUnavailableError,
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

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisSessionStore"]

logger = logging.getLogger("underlay.sessions")

T = TypeVar("T")


class RedisSessionStore:
    """Server-side sessions in Redis.

    * Ids are 256 random bits (`secrets.token_urlsafe(32)`), never derived from user data;
      Redis keys hold a SHA-256 of the id, so reading the keys reveals no usable id.
    * Data is JSON through the cache codec, never pickle.
    * Sliding expiry: every read pushes the idle expiry ``idle_ttl`` seconds out, never past
      the absolute expiry ``absolute_ttl`` seconds after creation.
    * `rotate` moves a session to a new id atomically; `revoke_all` ends every session of a
      user through a per-user index.
    * Every call has a deadline (``timeout``). A call that misses it, or finds Redis down,
      raises `SessionUnavailableError` (fail closed: treat the request as not
      authenticated), never hangs. After ``failure_threshold`` consecutive failures calls
      fail at once for ``cooldown`` seconds, then one probe is let through.

    Args:
        url: A ``redis://`` URL (ignored when ``client`` is given).
        client: An existing ``redis.asyncio.Redis``; not closed by `aclose`.
        prefix: Prepended to every key.
        idle_ttl: Seconds a session lives without being read.
        absolute_ttl: Seconds a session lives at most, however active.
        timeout: Deadline in seconds for each call.
        failure_threshold: Consecutive failures that make calls fail fast.
        cooldown: Seconds calls fail fast before a probe.
        codec: How data becomes bytes (`JSONCodec` by default).

    Example::

        store = RedisSessionStore("redis://localhost:6379", prefix="app:")
        sid = await store.create({"role": "user"}, user_id="u1")
        assert await store.get(sid) == {"role": "user"}
    """

    def __init__(
        self,
        url: str = "redis://localhost:6379",
        *,
        client: Redis | None = None,
        prefix: str = "",
        idle_ttl: float = 1800,
        absolute_ttl: float = 86400,
        timeout: float = 0.25,
        failure_threshold: int = 5,
        cooldown: float = 2.0,
        codec: Codec | None = None,
    ) -> None:
        check_ttls(idle_ttl, absolute_ttl)
        exceptions = require("redis.exceptions", extra="redis")
        self.prefix = prefix
        self.idle_ttl = idle_ttl
        self.absolute_ttl = absolute_ttl
        self.timeout = timeout
        self.codec: Codec = codec or JSONCodec()
        self._errors: tuple[type[BaseException], ...] = (
            exceptions.RedisError,
            OSError,
            TimeoutError,
        )
        self._breaker = CircuitBreaker(threshold=failure_threshold, cooldown=cooldown)
        self._owns_client = client is None
        if client is None:
            # One server, a deadline on every socket operation and no retries.
            client = connect(url, timeout=timeout)
        self.client: Redis = client
        self._create = client.register_script(_scripts.CREATE)
        self._read = client.register_script(_scripts.READ)
        self._save = client.register_script(_scripts.SAVE)
        self._rotate = client.register_script(_scripts.ROTATE)
        self._revoke = client.register_script(_scripts.REVOKE)
        self._revoke_all = client.register_script(_scripts.REVOKE_ALL)

    def __repr__(self) -> str:
        return f"RedisSessionStore(prefix={self.prefix!r})"

    def _key(self, digest: str) -> str:
        return f"{self.prefix}s:{digest}"

    def _user_key(self, user_id: str) -> str:
        return f"{self.prefix}u:{user_id}"

    def _ms(self, seconds: float) -> int:
        return max(1, int(seconds * 1000))

    async def _call(self, awaitable: Awaitable[T]) -> T:
        if not self._breaker.allow():
            if asyncio.iscoroutine(awaitable):
                awaitable.close()
            raise SessionUnavailableError(
                "The session store is failing; requests are refused until it answers again."
            )
        try:
            async with asyncio.timeout(self.timeout):
                result = await awaitable
        except self._errors as exc:
            self._breaker.failure()
            logger.warning("session store call failed", exc_info=True)
            raise SessionUnavailableError(
                f"The session store did not answer within {self.timeout} s ({exc!r})."
            ) from exc
        self._breaker.success()
        return result

    async def create(
        self,
        data: Mapping[str, Any],
        *,
        user_id: str | None = None,
        tenant: str | _Current | None = CURRENT_TENANT,
    ) -> str:
        """Store a new session and return its id.

        Args:
            data: JSON-compatible data (the cache codec's types round-trip exactly).
            user_id: The user the session belongs to, for `revoke_all`.
            tenant: The tenant it belongs to; by default the one in effect
                (`tenant_context`), if any. Loads inside another tenant's context do not
                see it.

        Returns:
            A new id: 43 URL-safe characters, 256 random bits.

        Raises:
            SessionUnavailableError: Redis did not answer within the deadline.
            TypeError: ``data`` holds a value the codec cannot store (nothing stored).
        """
        user = check_user(user_id)
        owner = owner_of(user, resolve_tenant(tenant))
        payload = self.codec.encode(dict(data))
        session_id = new_session_id()
        digest = session_digest(session_id)
        keys = [self._key(digest)]
        if user is not None:
            keys.append(self._user_key(owner))
        await self._call(
            self._create(
                keys=keys,
                args=[
                    payload,
                    owner,
                    self._ms(self.idle_ttl),
                    self._ms(self.absolute_ttl),
                    self._key(""),
                    digest,
                ],
            )
        )
        return session_id

    async def get(self, session_id: str) -> dict[str, Any] | None:
        """Return the session's data, or ``None`` when it does not exist (any more).

        A read slides the idle expiry. A malformed id is simply not found.

        Raises:
            SessionUnavailableError: Redis did not answer within the deadline.
        """
        record = await self.load(session_id)
        return record.data if record is not None else None

    async def load(self, session_id: str) -> SessionRecord | None:
        """Return the session's record, or ``None``; slides the idle expiry like `get`.

        Raises:
            SessionUnavailableError: Redis did not answer within the deadline.
        """
        if not valid_session_id(session_id):
            return None
        reply: list[Any] | None = await self._call(
            self._read(keys=[self._key(session_digest(session_id))], args=[self._ms(self.idle_ttl)])
        )
        if not reply:
            return None
        try:
            data = self.codec.decode(bytes(reply[0]))
        except DecodeError:
            logger.warning("unreadable session data dropped")
            return None
        user, tenant = parse_owner(bytes(reply[1]).decode())
        if not visible_here(tenant):
            logger.warning("a session of another tenant was presented; treated as unknown")
            return None
        return SessionRecord(
            id=session_id,
            data=data,
            user_id=user,
            created_at=int(reply[2]) / 1000,
            expires_at=int(reply[3]) / 1000,
            tenant=tenant,
        )

    async def save(self, session_id: str, data: Mapping[str, Any]) -> bool:
        """Replace the session's data.

        Returns:
            ``False`` when the session no longer exists (nothing is stored then).

        Raises:
            SessionUnavailableError: Redis did not answer within the deadline.
        """
        if not valid_session_id(session_id):
            return False
        payload = self.codec.encode(dict(data))
        saved = await self._call(
            self._save(keys=[self._key(session_digest(session_id))], args=[payload])
        )
        return bool(saved == 1)

    async def rotate(self, session_id: str) -> str:
        """Move the session to a new id (after login or a privilege change).

        The old id stops working in the same atomic step. Data, user and the absolute
        expiry carry over.

        Returns:
            The new id.

        Raises:
            NotFoundError: The session does not exist (any more).
            SessionUnavailableError: Redis did not answer within the deadline.
        """
        if not valid_session_id(session_id):
            raise unknown_session()
        new_id = new_session_id()
        old_digest, new_digest = session_digest(session_id), session_digest(new_id)
        moved = await self._call(
            self._rotate(
                keys=[self._key(old_digest), self._key(new_digest)],
                args=[self._ms(self.idle_ttl), self._user_key(""), old_digest, new_digest],
            )
        )
        if moved != 1:
            raise unknown_session()
        return new_id

    async def revoke(self, session_id: str) -> bool:
        """End one session.

        Returns:
            Whether the session existed.

        Raises:
            SessionUnavailableError: Redis did not answer within the deadline.
        """
        if not valid_session_id(session_id):
            return False
        digest = session_digest(session_id)
        ended = await self._call(
            self._revoke(keys=[self._key(digest)], args=[self._user_key(""), digest])
        )
        return bool(ended == 1)

    async def revoke_all(
        self, user_id: str, *, tenant: str | _Current | None = CURRENT_TENANT
    ) -> int:
        """End every session of ``user_id`` (after a password change, "log out everywhere").

        Args:
            user_id: The user.
            tenant: Whose user it is; by default the tenant in effect, if any. Sessions of
                a user of the same id in another tenant are not touched.

        Returns:
            How many live sessions were ended.

        Raises:
            SessionUnavailableError: Redis did not answer within the deadline.
        """
        owner = user_owner(user_id, tenant)
        ended = await self._call(
            self._revoke_all(keys=[self._user_key(owner)], args=[self._key("")])
        )
        return int(ended)

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
        """Close the Redis client the store created (a given ``client`` stays open)."""
        if self._owns_client:
            await self.client.aclose()
