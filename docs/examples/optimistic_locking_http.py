"""HTTP conditional updates: the version is the ETag, If-Match is the expected version."""

import asyncio
import tempfile
from pathlib import Path
from typing import Annotated

import httpx
from fastapi import Depends, FastAPI, Response
from pydantic import BaseModel
from sqlalchemy import MetaData, String
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from underlay import Base, Database, SQLAlchemyRepository, VersionedMixin
from underlay.fastapi import etag, install, require_if_match, session_dependency
from underlay.models import NAMING_CONVENTION


class Model(Base):
    __abstract__ = True
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Article(VersionedMixin, Model):
    __tablename__ = "articles"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))


class ArticleRepository(SQLAlchemyRepository[Article]):
    pass


class ArticlePatch(BaseModel):
    title: str | None = None


def create_app(db: Database) -> FastAPI:
    # Commits when the handler returns, before the response is sent.
    SessionDep = Annotated[AsyncSession, session_dependency(db)]  # noqa: N806 - an alias
    app = FastAPI()
    install(app)  # NotFoundError -> 404, StaleVersionError -> 412 (with If-Match), ...

    @app.get("/articles/{id}")
    async def read(id: int, response: Response, session: SessionDep) -> dict[str, object]:
        article = await ArticleRepository(session).get_one(id)
        response.headers["ETag"] = etag(article)
        return {"id": article.id, "title": article.title}

    @app.patch("/articles/{id}")
    async def patch(
        id: int,
        body: ArticlePatch,
        response: Response,
        session: SessionDep,
        version: Annotated[int, Depends(require_if_match)],  # no If-Match -> 428
    ) -> dict[str, object]:
        # A stale version raises StaleVersionError: nothing is written, the client gets 412.
        article = await ArticleRepository(session).update(id, body, expected_version=version)
        response.headers["ETag"] = etag(article)
        return {"id": article.id, "title": article.title}

    return app


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with Database(f"sqlite+aiosqlite:///{Path(tmp) / 'cms.db'}") as db:
            await db.create_all(Model.metadata)
            async with db.session() as s:
                s.add(Article(id=1, title="Draft"))

            transport = httpx.ASGITransport(app=create_app(db))
            async with httpx.AsyncClient(transport=transport, base_url="http://cms") as client:
                alice = await client.get("/articles/1")
                bob = await client.get("/articles/1")
                assert alice.headers["ETag"] == bob.headers["ETag"] == 'W/"1"'

                saved = await client.patch(
                    "/articles/1",
                    json={"title": "Alice's title"},
                    headers={"If-Match": alice.headers["ETag"]},
                )
                assert saved.status_code == 200
                assert saved.headers["ETag"] == 'W/"2"'

                # Bob still holds ETag "1": his write is refused instead of undoing Alice's.
                lost = await client.patch(
                    "/articles/1",
                    json={"title": "Bob's title"},
                    headers={"If-Match": bob.headers["ETag"]},
                )
                assert lost.status_code == 412
                blind = await client.patch("/articles/1", json={"title": "no If-Match"})
                assert blind.status_code == 428

                current = await client.get("/articles/1")
                assert current.json()["title"] == "Alice's title"
                print(
                    f"alice: {saved.status_code}, bob: {lost.status_code}, "
                    f"no If-Match: {blind.status_code}; now {current.json()} "
                    f"ETag {current.headers['ETag']}"
                )


if __name__ == "__main__":
    asyncio.run(main())
