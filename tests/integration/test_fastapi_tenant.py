"""`tenant_dependency` under a real uvicorn server: each request in its own tenant."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Annotated, Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Header
from pydantic import BaseModel
from sqlalchemy import MetaData, select
from sqlalchemy.ext.asyncio import AsyncSession

from tests.conftest import Backend
from tests.integration.test_tenancy import Doc, TenantBase
from underlay import Database, all_tenants
from underlay.fastapi import install, session_dependency, tenant_dependency

PORTS = range(8120, 8130)


@pytest.fixture
def metadata() -> MetaData:
    return TenantBase.metadata


def tenant_header(x_tenant: Annotated[str | None, Header()] = None) -> str | None:
    return x_tenant


def actor_header(x_user: Annotated[str | None, Header()] = None) -> str | None:
    return x_user


class DocIn(BaseModel):
    slug: str
    code: str


class Gate:
    """Holds requests inside the handler until ``expected`` of them have arrived."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.arrived = 0
        self.open = asyncio.Event()

    async def wait(self) -> None:
        self.arrived += 1
        if self.arrived >= self.expected:
            self.open.set()
        # bounded: if the connections cannot all be held at once, fail rather than hang
        async with asyncio.timeout(30):
            await self.open.wait()


def make_app(db: Database, gate: Gate | None = None) -> FastAPI:
    app = FastAPI()
    install(app)
    # defaults, not Annotated aliases: the annotations are strings FastAPI resolves in the
    # module's globals, where these local markers do not exist
    tenant_dep = tenant_dependency(tenant_header, actor=actor_header)
    session_dep = session_dependency(db)

    @app.post("/documents", status_code=201)
    async def create(
        body: DocIn, tenant: str = tenant_dep, session: AsyncSession = session_dep
    ) -> dict[str, Any]:
        doc = Doc(slug=body.slug, code=body.code)
        session.add(doc)
        await session.flush()
        if gate is not None:
            await gate.wait()  # holds concurrent requests of both tenants open together
        return {"tenant": doc.tenant_id, "created_by": doc.created_by}

    @app.get("/documents")
    async def listing(tenant: str = tenant_dep, session: AsyncSession = session_dep) -> list[str]:
        return list((await session.scalars(select(Doc.slug).order_by(Doc.slug))).all())

    return app


def _free_port() -> int:
    for port in PORTS:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip(f"no free port in {PORTS}")
    raise AssertionError("unreachable")


async def _serve(app: FastAPI) -> tuple[str, uvicorn.Server, asyncio.Task[None]]:
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    async with asyncio.timeout(10):
        while not server.started:
            await asyncio.sleep(0.01)
    return f"http://127.0.0.1:{port}", server, task


@pytest.fixture
async def base(db: Database) -> AsyncIterator[str]:
    url, server, task = await _serve(make_app(db))
    try:
        yield url
    finally:
        server.should_exit = True
        await task


async def test_each_request_sees_only_its_tenant(base: str, db: Database) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        made = await client.post(
            "/documents",
            json={"slug": "a", "code": "c1"},
            headers={"x-tenant": "acme", "x-user": "ada"},
        )
        assert made.status_code == 201
        assert made.json() == {"tenant": "acme", "created_by": "ada"}
        await client.post(
            "/documents", json={"slug": "b", "code": "c2"}, headers={"x-tenant": "globex"}
        )
        assert (await client.get("/documents", headers={"x-tenant": "acme"})).json() == ["a"]
        assert (await client.get("/documents", headers={"x-tenant": "globex"})).json() == ["b"]


async def test_request_without_tenant_is_refused_before_any_query(base: str, db: Database) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        missing = await client.post("/documents", json={"slug": "a", "code": "c1"})
        assert missing.status_code == 400
        assert missing.headers["content-type"] == "application/problem+json"
        unusable = await client.get("/documents", headers={"x-tenant": "x" * 65})
        assert unusable.status_code == 400
    async with db.session() as session:
        with all_tenants():
            assert (await session.scalars(select(Doc))).all() == []


async def test_concurrent_requests_of_two_tenants_never_mix(db: Database, backend: Backend) -> None:
    """Twenty requests of two tenants, interleaved inside their handlers, then committed.

    On PostgreSQL four are held inside the handler at once (each holds a connection, and the
    PgBouncer leg of CI has five server connections per pool); SQLite serialises writers, so
    there each passes as it arrives.
    """
    gate = Gate(4 if backend.is_postgres else 1)
    url, server, task = await _serve(make_app(db, gate))
    try:
        async with httpx.AsyncClient(base_url=url, timeout=20) as client:

            async def post(n: int) -> httpx.Response:
                tenant = "acme" if n % 2 else "globex"
                return await client.post(
                    "/documents",
                    json={"slug": f"s{n}", "code": f"c{n}"},
                    headers={"x-tenant": tenant, "x-user": f"user-{tenant}"},
                )

            answers = await asyncio.gather(*(post(n) for n in range(20)))
        assert gate.arrived == 20
        for n, answer in enumerate(answers):
            tenant = "acme" if n % 2 else "globex"
            assert answer.status_code == 201, answer.text
            assert answer.json() == {"tenant": tenant, "created_by": f"user-{tenant}"}
        async with db.session() as session:
            with all_tenants():
                rows = (await session.execute(select(Doc.slug, Doc.tenant_id))).all()
        assert sorted(rows) == sorted((f"s{n}", "acme" if n % 2 else "globex") for n in range(20))
    finally:
        server.should_exit = True
        await task
