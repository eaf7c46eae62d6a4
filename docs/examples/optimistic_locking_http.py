"""HTTP conditional updates: the version is the ETag, If-Match is the expected version."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import httpx
from fastapi import Depends, FastAPI, Header, HTTPException, Request, Response
from pydantic import BaseModel
from sqlalchemy import MetaData, String
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from underlay import (
    Base,
    Database,
    NotFoundError,
    SQLAlchemyRepository,
    StaleVersionError,
    VersionedMixin,
)
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


def etag(article: Article) -> str:
    return f'"{article.version}"'


def expected_version(if_match: str | None) -> int:
    """Parse If-Match into the version the client holds; refuse unconditional writes."""
    if if_match is None:
        raise HTTPException(428, "send If-Match with the ETag you read")
    try:
        return int(if_match.removeprefix("W/").strip('"'))
    except ValueError:
        raise HTTPException(412, "If-Match does not name a version of this resource") from None


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request: committed when the handler returns, rolled back if it raises."""
    db: Database = request.app.state.db
    async for session in db.get_session():
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


def create_app(db: Database) -> FastAPI:
    app = FastAPI()
    app.state.db = db

    @app.get("/articles/{id}")
    async def read(id: int, response: Response, session: SessionDep) -> dict[str, object]:
        article = await ArticleRepository(session).get(id)
        if article is None:
            raise HTTPException(404)
        response.headers["ETag"] = etag(article)
        return {"id": article.id, "title": article.title}

    @app.patch("/articles/{id}")
    async def patch(
        id: int,
        body: ArticlePatch,
        response: Response,
        session: SessionDep,
        if_match: Annotated[str | None, Header()] = None,
    ) -> dict[str, object]:
        version = expected_version(if_match)
        try:
            article = await ArticleRepository(session).update(id, body, expected_version=version)
        except StaleVersionError:
            # Someone else changed it since the client read it: nothing was written.
            raise HTTPException(412, "the article changed; GET it again") from None
        except NotFoundError:
            raise HTTPException(404) from None
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
                assert alice.headers["ETag"] == bob.headers["ETag"] == '"1"'

                saved = await client.patch(
                    "/articles/1",
                    json={"title": "Alice's title"},
                    headers={"If-Match": alice.headers["ETag"]},
                )
                assert saved.status_code == 200
                assert saved.headers["ETag"] == '"2"'

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
