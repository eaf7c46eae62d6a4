"""`SessionMiddleware`: server-side sessions for Starlette and FastAPI (plain ASGI)."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Literal

from underlay.cache._codec import JSONCodec
from underlay.exceptions import NotFoundError
from underlay.sessions._base import SessionStore, SessionUnavailableError
from underlay.tenancy._context import tenant_context, tenant_if_set

__all__ = ["Session", "SessionMiddleware"]

logger = logging.getLogger("underlay.sessions")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_codec = JSONCodec()


class Session(dict[str, Any]):
    """``request.session``: the session's data as a dict, plus login, logout and rotation.

    Changes are saved when the response starts. `login` and `logout` take effect then too.

    Attributes:
        id: The session id, or ``None`` before the session is first saved.
        user_id: The user the session belongs to, or ``None``.
        tenant: The tenant the session belongs to, or ``None``. While a request runs, the
            middleware puts it in effect (`tenant_context`) unless a tenant already is.
        available: ``False`` when the store was down and the middleware let the request
            through anonymously (``on_unavailable="anonymous"``); nothing is saved then.
    """

    def __init__(
        self,
        data: dict[str, Any],
        *,
        id: str | None = None,
        user_id: str | None = None,
        tenant: str | None = None,
        available: bool = True,
    ) -> None:
        super().__init__(data)
        self.id = id
        self.user_id = user_id
        self.tenant = tenant
        self.available = available
        self._snapshot = _codec.encode(data)
        self._login: str | None = None
        self._logout = False
        self._rotate = False

    @property
    def modified(self) -> bool:
        """Whether the data differs from what was loaded."""
        return _codec.encode(dict(self)) != self._snapshot

    def login(self, user_id: str) -> None:
        """Bind the session to ``user_id`` under a new id (the old id stops working).

        The new session belongs to the tenant in effect now (`tenant_context`), if any, else
        to the session's current tenant.
        """
        self._login = user_id
        self.user_id = user_id
        self.tenant = tenant_if_set() or self.tenant
        self._logout = False

    def logout(self) -> None:
        """End the session: it is revoked and the cookie removed."""
        self.clear()
        self._logout = True
        self._login = None

    def rotate(self) -> None:
        """Move the session to a new id at the end of the request (a privilege change)."""
        self._rotate = True


class SessionMiddleware:
    """Load the session named by the cookie into ``scope["session"]`` and save it after.

    ``request.session`` (Starlette and FastAPI) is then a `Session`. The cookie holds only
    the opaque random id, with ``HttpOnly``, ``Secure`` and ``SameSite=Lax`` by default; a
    session is stored only once it holds data or a login.

    When the store is unavailable (down or over its deadline) a request that carries a
    session cookie gets ``503`` with ``Retry-After`` and the application is not called:
    an authentication decision is never made without the session (fail closed). With
    ``on_unavailable="anonymous"`` the request goes on with an empty, unsaved session
    (``session.available`` is ``False``) instead.

    Args:
        app: The ASGI application.
        store: Where sessions live (`RedisSessionStore`, `MemorySessionStore`).
        cookie_name: The cookie's name.
        max_age: The cookie's ``Max-Age`` in seconds (``None``: a browser-session cookie).
        path: The cookie's path.
        domain: The cookie's domain (``None``: the current host only).
        secure: Send the cookie over HTTPS only.
        httponly: Hide the cookie from JavaScript.
        samesite: ``"lax"``, ``"strict"`` or ``"none"``.
        on_unavailable: ``"error"`` (503) or ``"anonymous"``.
    """

    def __init__(
        self,
        app: ASGIApp,
        store: SessionStore,
        *,
        cookie_name: str = "session",
        max_age: int | None = None,
        path: str = "/",
        domain: str | None = None,
        secure: bool = True,
        httponly: bool = True,
        samesite: Literal["lax", "strict", "none"] = "lax",
        on_unavailable: Literal["error", "anonymous"] = "error",
    ) -> None:
        if samesite not in ("lax", "strict", "none"):
            raise ValueError("samesite must be 'lax', 'strict' or 'none'")
        if on_unavailable not in ("error", "anonymous"):
            raise ValueError("on_unavailable must be 'error' or 'anonymous'")
        self.app = app
        self.store = store
        self.cookie_name = cookie_name
        self.on_unavailable = on_unavailable
        attributes = [f"Path={path}"]
        if domain is not None:
            attributes.append(f"Domain={domain}")
        if max_age is not None:
            attributes.append(f"Max-Age={int(max_age)}")
        if secure or samesite == "none":
            attributes.append("Secure")
        if httponly:
            attributes.append("HttpOnly")
        attributes.append(f"SameSite={samesite.capitalize()}")
        self._attributes = "; ".join(attributes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        cookie = _cookie(scope, self.cookie_name)
        try:
            record = await self.store.load(cookie) if cookie else None
        except SessionUnavailableError:
            if self.on_unavailable == "error" and scope["type"] == "http":
                await _unavailable(send)
                return
            scope["session"] = Session({}, available=False)
            await self.app(scope, receive, send)
            return
        session = (
            Session(record.data, id=record.id, user_id=record.user_id, tenant=record.tenant)
            if record is not None
            else Session({}, tenant=tenant_if_set())
        )
        scope["session"] = session
        replaced = False

        async def send_with_cookie(message: Message) -> None:
            nonlocal replaced
            if replaced:
                return  # the application's body after a replaced start
            if message["type"] == "http.response.start":
                try:
                    header = await self._commit(session, stale_cookie=bool(cookie))
                except SessionUnavailableError:
                    replaced = True
                    await _unavailable(send)
                    return
                if header is not None:
                    message.setdefault("headers", [])
                    message["headers"] = [*message["headers"], (b"set-cookie", header)]
            await send(message)

        if session.tenant is not None and tenant_if_set() is None:
            with tenant_context(session.tenant):
                await self.app(scope, receive, send_with_cookie)
        else:
            await self.app(scope, receive, send_with_cookie)

    async def _commit(self, session: Session, *, stale_cookie: bool) -> bytes | None:
        """Persist the session; return the Set-Cookie value to send, if any."""
        if not session.available:
            return None
        if session._logout:
            if session.id is not None:
                await self.store.revoke(session.id)
            return self._expire() if stale_cookie else None
        if session._login is not None:
            new_id = await self.store.create(
                dict(session), user_id=session._login, tenant=session.tenant
            )
            if session.id is not None:
                await self.store.revoke(session.id)
            return self._cookie(new_id)
        if session.id is None:
            if session:
                return self._cookie(await self.store.create(dict(session), tenant=session.tenant))
            return self._expire() if stale_cookie else None
        if session.modified and not await self.store.save(session.id, dict(session)):
            return self._expire()
        if session._rotate:
            try:
                return self._cookie(await self.store.rotate(session.id))
            except NotFoundError:
                return self._expire()
        return None

    def _cookie(self, session_id: str) -> bytes:
        return f"{self.cookie_name}={session_id}; {self._attributes}".encode("latin-1")

    def _expire(self) -> bytes:
        return f"{self.cookie_name}=; Max-Age=0; {self._attributes}".encode("latin-1")


def _cookie(scope: Scope, name: str) -> str | None:
    for key, value in scope.get("headers", ()):
        if key != b"cookie":
            continue
        for part in bytes(value).decode("latin-1").split(";"):
            cookie_name, _, cookie_value = part.strip().partition("=")
            if cookie_name == name and cookie_value:
                return str(cookie_value.strip('"'))
    return None


async def _unavailable(send: Send) -> None:
    body = json.dumps(
        {
            "type": "about:blank",
            "title": "Service Unavailable",
            "status": 503,
            "detail": "The session store is unavailable; retry shortly.",
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/problem+json"),
                (b"retry-after", b"1"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
