"""A FastAPI app on underlay: commits before the response, errors as problem JSON, ETags.

Serve it with ``uvicorn examples.fastapi_app:app`` (``DATABASE_URL`` picks the database,
SQLite by default), or run this file to watch it answer a few requests in-process.
"""

import asyncio
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

import httpx
from fastapi import Depends, FastAPI, Response
from pydantic import BaseModel, ConfigDict
from sqlalchemy import MetaData, String
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from underlay import Base, Database, SoftDeleteMixin, SQLAlchemyRepository, VersionedMixin
from underlay.fastapi import (
    CursorParams,
    cursor_params,
    etag,
    install,
    require_if_match,
    session_dependency,
)
from underlay.models import NAMING_CONVENTION


class Model(Base):
    __abstract__ = True
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Task(VersionedMixin, SoftDeleteMixin, Model):
    __tablename__ = "tasks"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(50), unique=True)
    title: Mapped[str] = mapped_column(String(200))
    done: Mapped[bool] = mapped_column(default=False)


class TaskRepository(SQLAlchemyRepository[Task]):
    sortable_fields = ("slug", "title")
    filterable_fields = ("done",)


class TaskIn(BaseModel):
    slug: str
    title: str


class TaskPatch(BaseModel):
    title: str | None = None
    done: bool | None = None


class TaskOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    slug: str
    title: str
    done: bool
    version: int


class TaskPage(BaseModel):
    items: list[TaskOut]
    next_cursor: str | None


def create_app(db: Database) -> FastAPI:
    # The session commits when the handler returns and before the response is sent, so a
    # failed commit is an error response, never a 2xx for a write that did not happen.
    SessionDep = Annotated[AsyncSession, session_dependency(db)]  # noqa: N806 - an alias
    IfMatch = Annotated[int, Depends(require_if_match)]  # noqa: N806 - an alias

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await db.create_all(Model.metadata)  # use migrations in a real deployment
        yield
        await db.dispose()

    app = FastAPI(lifespan=lifespan)
    install(app)  # 404 / 409 / 412 / 428 / 400 / 503 as RFC 9457 problem JSON

    @app.post("/tasks", status_code=201)
    async def create(body: TaskIn, response: Response, session: SessionDep) -> TaskOut:
        task = await TaskRepository(session).save(Task(slug=body.slug, title=body.title))
        response.headers["ETag"] = etag(task)
        return TaskOut.model_validate(task)

    @app.get("/tasks")
    async def listing(
        session: SessionDep,
        page: Annotated[CursorParams, Depends(cursor_params(TaskRepository, default_limit=20))],
    ) -> TaskPage:
        result = await TaskRepository(session).paginate(**page.as_kwargs())
        return TaskPage(
            items=[TaskOut.model_validate(task) for task in result.items],
            next_cursor=result.next_cursor,
        )

    @app.get("/tasks/{id}")
    async def read(id: int, response: Response, session: SessionDep) -> TaskOut:
        task = await TaskRepository(session).get_one(id)
        response.headers["ETag"] = etag(task)
        return TaskOut.model_validate(task)

    @app.patch("/tasks/{id}")
    async def change(
        id: int, body: TaskPatch, response: Response, session: SessionDep, version: IfMatch
    ) -> TaskOut:
        task = await TaskRepository(session).update(id, body, expected_version=version)
        response.headers["ETag"] = etag(task)
        return TaskOut.model_validate(task)

    @app.delete("/tasks/{id}", status_code=204)
    async def remove(id: int, session: SessionDep, version: IfMatch) -> None:
        await TaskRepository(session).delete(id, expected_version=version)

    return app


def _default_url() -> str:
    return os.environ.get("DATABASE_URL", "sqlite+aiosqlite:///tasks.db")


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        application = create_app(Database(f"sqlite+aiosqlite:///{Path(tmp) / 'tasks.db'}"))
        transport = httpx.ASGITransport(app=application)
        async with (
            application.router.lifespan_context(application),
            httpx.AsyncClient(transport=transport, base_url="http://tasks") as client,
        ):
            created = await client.post("/tasks", json={"slug": "write", "title": "Write"})
            assert created.status_code == 201
            tag = created.headers["ETag"]

            duplicate = await client.post("/tasks", json={"slug": "write", "title": "Again"})
            assert duplicate.status_code == 409
            assert duplicate.headers["content-type"] == "application/problem+json"

            done = await client.patch("/tasks/1", json={"done": True}, headers={"If-Match": tag})
            assert (done.status_code, done.headers["ETag"]) == (200, 'W/"2"')
            stale = await client.patch("/tasks/1", json={"title": "x"}, headers={"If-Match": tag})
            assert stale.status_code == 412
            blind = await client.delete("/tasks/1")
            assert blind.status_code == 428

            for slug in ("b", "c", "d"):
                await client.post("/tasks", json={"slug": slug, "title": slug.upper()})
            first = (await client.get("/tasks", params={"limit": 2, "order_by": "slug"})).json()
            second = (
                await client.get(
                    "/tasks", params={"limit": 2, "order_by": "slug", "after": first["next_cursor"]}
                )
            ).json()
            slugs = [task["slug"] for task in first["items"] + second["items"]]
            assert slugs == ["b", "c", "d", "write"]
            bad_sort = await client.get("/tasks", params={"order_by": "secret_column"})
            assert bad_sort.status_code == 422
            print(
                f"created {created.status_code}, duplicate {duplicate.status_code} "
                f"({duplicate.json()['code']}), patch {done.status_code}, "
                f"stale {stale.status_code}, blind delete {blind.status_code}, "
                f"pages {slugs}, bad sort {bad_sort.status_code}"
            )


if __name__ == "__main__":
    asyncio.run(main())
else:  # imported by uvicorn
    app = create_app(Database(_default_url()))
