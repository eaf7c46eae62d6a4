"""The FastAPI app the uvicorn tests serve (configured through environment variables).

``UNDERLAY_WEB_URL`` is the database URL; ``UNDERLAY_WEB_MODE`` is ``"safe"`` (the session
from `underlay.fastapi.session_dependency`) or ``"legacy"`` (the old
``Depends(db.get_session)``, which commits after the response has been sent).
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Response
from pydantic import BaseModel, ConfigDict
from sqlalchemy import MetaData, String, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from underlay import Base, Database, SQLAlchemyRepository, VersionedMixin
from underlay.cache import CachedRepository, MemoryCache
from underlay.fastapi import (
    CursorParams,
    cursor_params,
    etag,
    install,
    require_if_match,
    session_dependency,
)


class WebBase(Base):
    __abstract__ = True
    metadata = MetaData()


class Account(VersionedMixin, WebBase):
    __tablename__ = "web_accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    balance: Mapped[int] = mapped_column(default=0)


class AccountRepository(SQLAlchemyRepository[Account]):
    sortable_fields = ("email", "balance")
    filterable_fields = ("name", "balance")


class AccountOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    email: str
    name: str
    balance: int
    version: int


class AccountIn(BaseModel):
    email: str
    name: str = ""


class AccountPatch(BaseModel):
    name: str


def create_app() -> FastAPI:
    url = os.environ["UNDERLAY_WEB_URL"]
    mode = os.environ.get("UNDERLAY_WEB_MODE", "safe")
    cache = MemoryCache()
    db = Database(url, cache=cache, pool_size=8, max_overflow=4)
    # A second, one-connection pool whose checkout times out: the pool-timeout route.
    tiny = Database(url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    postgres = db.engine.dialect.name == "postgresql"

    session_marker = session_dependency(db) if mode == "safe" else Depends(db.get_session)
    SessionDep = Annotated[AsyncSession, session_marker]  # noqa: N806 - the documented alias name

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await db.dispose()
        await tiny.dispose()

    app = FastAPI(lifespan=lifespan)
    install(app)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"pid": os.getpid()}

    @app.post("/accounts", status_code=201)
    async def create(body: AccountIn, session: SessionDep) -> dict[str, Any]:
        # Not flushed here: a duplicate email fails at commit, the case the dependency guards.
        session.add(Account(email=body.email, name=body.name))
        return {"ok": True, "email": body.email}

    @app.get("/accounts/{id}")
    async def read(id: int, response: Response, session: SessionDep) -> AccountOut:
        cached = CachedRepository(AccountRepository(session), cache, schema=AccountOut)
        account = await cached.get_one(id)
        response.headers["ETag"] = etag(account.version)
        return account

    @app.patch("/accounts/{id}")
    async def patch(
        id: int,
        body: AccountPatch,
        response: Response,
        session: SessionDep,
        version: Annotated[int, Depends(require_if_match)],
    ) -> dict[str, Any]:
        account = await AccountRepository(session).update(
            id, {"name": body.name}, expected_version=version
        )
        response.headers["ETag"] = etag(account)
        return {"name": account.name, "version": account.version}

    @app.patch("/accounts/{id}/orm")
    async def patch_orm(
        id: int,
        body: AccountPatch,
        session: SessionDep,
        version: Annotated[int, Depends(require_if_match)],
    ) -> dict[str, Any]:
        # The unit-of-work way: the version check runs in the flush inside commit.
        account = await AccountRepository(session).get_one(id)
        account.version = version
        account.name = body.name
        return {"ok": True}

    @app.delete("/accounts/{id}", status_code=204)
    async def remove(
        id: int, session: SessionDep, version: Annotated[int, Depends(require_if_match)]
    ) -> None:
        await AccountRepository(session).delete(id, expected_version=version)

    @app.post("/accounts/{id}/race")
    async def race(id: int, session: SessionDep) -> dict[str, Any]:
        # Read the row (the transaction's snapshot), let another transaction change and
        # commit it, then change it here: the write at commit must lose.
        if postgres:
            await session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        account = await AccountRepository(session).get_one(id)
        async with db.session() as other:
            await AccountRepository(other).update(id, {"name": "won the race"})
        account.balance += 1
        return {"ok": True}

    @app.post("/accounts/{id}/killed")
    async def killed(id: int, session: SessionDep) -> dict[str, Any]:
        # Change the row, then have the server terminate this session's backend (waiting
        # until it is gone), so the commit meets a dead connection.
        account = await AccountRepository(session).get_one(id)
        account.balance += 100
        await session.flush()
        pid = (await session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        async with db.engine.connect() as other:
            await other.execute(text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})
        return {"ok": True}

    @app.get("/pool-timeout")
    async def pool_timeout() -> dict[str, Any]:
        async with tiny.session() as holding:
            await holding.execute(text("SELECT 1"))
            async with tiny.session() as waiting:
                await waiting.execute(text("SELECT 1"))
        return {"ok": True}

    @app.get("/accounts")
    async def listing(
        session: SessionDep,
        params: Annotated[CursorParams, Depends(cursor_params(AccountRepository))],
    ) -> dict[str, Any]:
        page = await AccountRepository(session).paginate(**params.as_kwargs())
        return {
            "emails": [account.email for account in page.items],
            "next": page.next_cursor,
            "pid": os.getpid(),
        }

    return app
