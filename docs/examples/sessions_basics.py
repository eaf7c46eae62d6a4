"""Server-side sessions in a Starlette app: login, rotation, logout and revoke-all."""

import asyncio

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from underlay.sessions import MemorySessionStore, SessionMiddleware

# RedisSessionStore("redis://localhost:6379", prefix="app:") in production: same interface.
store = MemorySessionStore(idle_ttl=1800, absolute_ttl=86400)


async def login(request: Request) -> JSONResponse:
    request.session.login(request.path_params["user"])  # a new id: no session fixation
    request.session["role"] = "user"
    return JSONResponse({"ok": True})


async def me(request: Request) -> JSONResponse:
    if request.session.user_id is None:
        return JSONResponse({"user": None}, status_code=401)
    return JSONResponse({"user": request.session.user_id, "role": request.session["role"]})


async def logout(request: Request) -> JSONResponse:
    request.session.logout()
    return JSONResponse({"ok": True})


app = Starlette(
    routes=[
        Route("/login/{user}", login, methods=["POST"]),
        Route("/me", me),
        Route("/logout", logout, methods=["POST"]),
    ]
)
app = SessionMiddleware(app, store)  # secure cookie flags by default


async def main() -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://example.com") as client:
        response = await client.post("/login/ada")
        print(response.headers["set-cookie"].split(";", 1)[1].strip())
        assert (await client.get("/me")).json() == {"user": "ada", "role": "user"}

        await client.post("/logout")
        assert (await client.get("/me")).status_code == 401

        # "Log out everywhere": every session of the user ends at once.
        await client.post("/login/ada")
        assert await store.revoke_all("ada") == 1
        assert (await client.get("/me")).status_code == 401
    print("ok")


asyncio.run(main())
