"""The sync server: a FastAPI app on PostgreSQL.

Run it with::

    SYNC_DATABASE_URL=postgresql://postgres@127.0.0.1/test \
        uvicorn examples.sync.server:app --port 8120

The user comes from the ``X-User`` header: a stand-in for the application's real auth.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from examples.sync.models import Base, make_registry
from fastapi import FastAPI, Header, HTTPException

from underlay import Database
from underlay.sync import SyncServer

database = Database(os.environ.get("SYNC_DATABASE_URL", "postgresql://postgres@127.0.0.1/test"))
server = SyncServer(database, make_registry())


async def current_user(x_user: str | None = Header(default=None)) -> str:
    if not x_user:
        raise HTTPException(401, "send X-User")
    return x_user


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    await database.create_all(Base.metadata)
    await server.install()
    yield
    await database.dispose()


app = FastAPI(lifespan=lifespan)
app.include_router(server.fastapi_router(get_user=current_user), prefix="/sync")
