"""Sessions through a real uvicorn server, with a private Redis that is made to hang."""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from underlay import tenant_context
from underlay.sessions import RedisSessionStore, SessionMiddleware
from underlay.tenancy import tenant_if_set

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="needs redis-server to start a private server"
)

REDIS_PORTS = range(6405, 6410)
HTTP_PORTS = range(8110, 8120)
#: The store's deadline, and a generous bound for a whole request while Redis hangs.
DEADLINE = 0.2
BOUND = 3.0


def free_port(candidates: range) -> int:
    for port in candidates:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip(f"no free port in {candidates}")
    raise AssertionError("unreachable")


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of this test's own, to stop (SIGSTOP) and resume."""
    port = free_port(REDIS_PORTS)
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", process
    finally:
        process.send_signal(signal.SIGCONT)
        process.terminate()
        process.wait(timeout=10)


def make_app(store: RedisSessionStore) -> Any:
    async def login(request: Request) -> JSONResponse:
        request.session.login(request.path_params["user"])
        request.session["role"] = "user"
        return JSONResponse({"ok": True})

    async def me(request: Request) -> JSONResponse:
        user = request.session.user_id
        if user is None:
            return JSONResponse({"user": None}, status_code=401)
        return JSONResponse(
            {"user": user, "role": request.session.get("role"), "tenant": tenant_if_set()}
        )

    async def public(request: Request) -> JSONResponse:
        return JSONResponse({"public": True, "available": request.session.available})

    routes = [
        Route("/login/{user}", login, methods=["POST"]),
        Route("/me", me),
        Route("/public", public),
    ]
    strict = SessionMiddleware(Starlette(routes=routes), store)
    lenient = SessionMiddleware(Starlette(routes=routes), store, on_unavailable="anonymous")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        # the application's own tenant resolution (a header here; a host name in real life)
        tenant = dict(scope.get("headers", ())).get(b"x-tenant")
        if tenant is not None:
            with tenant_context(tenant.decode()):
                await strict(scope, receive, send)
        elif scope["type"] == "http" and scope["path"].startswith("/lenient"):
            scope = {**scope, "path": scope["path"][len("/lenient") :]}
            await lenient(scope, receive, send)
        else:
            await strict(scope, receive, send)

    return app


@pytest.fixture
async def server(
    private_redis: tuple[str, subprocess.Popen[bytes]],
) -> AsyncIterator[tuple[str, RedisSessionStore]]:
    url, _ = private_redis
    store = RedisSessionStore(url, prefix="s:", timeout=DEADLINE, failure_threshold=100)
    port = free_port(HTTP_PORTS)
    config = uvicorn.Config(
        make_app(store), host="127.0.0.1", port=port, log_level="warning", lifespan="off"
    )
    uv = uvicorn.Server(config)
    task = asyncio.create_task(uv.serve())
    try:
        async with asyncio.timeout(10):
            while not uv.started:
                await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}", store
    finally:
        uv.should_exit = True
        await task
        await store.aclose()


def cookie_of(response: httpx.Response) -> str:
    header = response.headers["set-cookie"]
    return header.split(";", 1)[0]


class TestOverHttp:
    async def test_login_sets_a_secure_cookie_and_rotates(
        self, server: tuple[str, RedisSessionStore]
    ) -> None:
        """Login sets an HttpOnly, Secure, SameSite cookie; a second login gets a new id."""
        base, _ = server
        async with httpx.AsyncClient(base_url=base, timeout=BOUND) as client:
            first = await client.post("/login/u1")
            header = first.headers["set-cookie"]
            for flag in ("HttpOnly", "Secure", "SameSite=Lax", "Path=/"):
                assert flag in header
            cookie = cookie_of(first)
            me = await client.get("/me", headers={"cookie": cookie})
            assert me.json() == {"user": "u1", "role": "user", "tenant": None}
            again = await client.post("/login/u1", headers={"cookie": cookie})
            assert cookie_of(again) != cookie
            stale = await client.get("/me", headers={"cookie": cookie})
            assert stale.status_code == 401
            assert "Max-Age=0" in stale.headers["set-cookie"]
            assert (
                await client.get("/me", headers={"cookie": cookie_of(again)})
            ).status_code == 200

    async def test_tenant_of_the_session(self, server: tuple[str, RedisSessionStore]) -> None:
        """A login under a tenant binds the session to it: its requests run in that tenant,
        and the cookie replayed to another tenant is no session."""
        base, store = server
        async with httpx.AsyncClient(base_url=base, timeout=BOUND) as client:
            cookie = cookie_of(await client.post("/login/u1", headers={"x-tenant": "acme"}))
            mine = await client.get("/me", headers={"cookie": cookie, "x-tenant": "acme"})
            assert mine.json() == {"user": "u1", "role": "user", "tenant": "acme"}
            # no tenant resolved by the application: the session's own is put in effect
            plain = await client.get("/me", headers={"cookie": cookie})
            assert plain.json()["tenant"] == "acme"
            replayed = await client.get("/me", headers={"cookie": cookie, "x-tenant": "globex"})
            assert replayed.status_code == 401
            assert await store.revoke_all("u1", tenant="globex") == 0
            assert await store.revoke_all("u1", tenant="acme") == 1

    async def test_revoke_all_logs_out_every_client(
        self, server: tuple[str, RedisSessionStore]
    ) -> None:
        """Three clients logged in as one user are all logged out by revoke_all."""
        base, store = server
        async with httpx.AsyncClient(base_url=base, timeout=BOUND) as client:
            logins = await asyncio.gather(*(client.post("/login/u7") for _ in range(3)))
            cookies = [cookie_of(r) for r in logins]
            assert len(set(cookies)) == 3
            for cookie in cookies:
                assert (await client.get("/me", headers={"cookie": cookie})).status_code == 200
            assert await store.revoke_all("u7") == 3
            for cookie in cookies:
                assert (await client.get("/me", headers={"cookie": cookie})).status_code == 401

    async def test_hung_redis_answers_within_the_deadline(
        self,
        server: tuple[str, RedisSessionStore],
        private_redis: tuple[str, subprocess.Popen[bytes]],
    ) -> None:
        """Redis stopped (SIGSTOP): 503 for session requests, anonymous where allowed, fast."""
        base, _ = server
        _, process = private_redis
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            cookie = cookie_of(await client.post("/login/u1"))
            process.send_signal(signal.SIGSTOP)
            try:
                started = time.monotonic()
                strict = await client.get("/me", headers={"cookie": cookie})
                lenient = await client.get("/lenient/public", headers={"cookie": cookie})
                no_cookie = await client.get("/public")
                elapsed = time.monotonic() - started
            finally:
                process.send_signal(signal.SIGCONT)
            assert strict.status_code == 503
            assert strict.headers["retry-after"] == "1"
            assert lenient.json() == {"public": True, "available": False}
            assert no_cookie.json() == {"public": True, "available": True}
            assert elapsed < BOUND
            recovered = await client.get("/me", headers={"cookie": cookie})
            assert recovered.json()["user"] == "u1"
