"""Repositories: define one, read with criteria and loader options, return schemas."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path

from pydantic import BaseModel
from sqlalchemy import ForeignKey, MetaData, String
from sqlalchemy.orm import Mapped, mapped_column, relationship, selectinload

from underlay import (
    Base,
    Database,
    InMemoryRepository,
    NotFoundError,
    Repository,
    SQLAlchemyRepository,
    TimestampMixin,
    to_schema,
    to_schemas,
)
from underlay.models import NAMING_CONVENTION
from underlay.testing import assert_max_queries


class Model(Base):
    __abstract__ = True
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(TimestampMixin, Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(255), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    # lazy="raise": touching an unloaded relationship raises instead of doing hidden IO
    posts: Mapped[list[Post]] = relationship(back_populates="author", lazy="raise")


class Post(Model):
    __tablename__ = "posts"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    author_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    author: Mapped[User] = relationship(back_populates="posts", lazy="raise")


class UserRepository(SQLAlchemyRepository[User]):
    sortable_fields = ("created_at", "name")
    filterable_fields = ("email",)


class PostRepository(SQLAlchemyRepository[Post]):
    pass


class UserOut(BaseModel):
    id: int
    name: str


class UserWithPosts(UserOut):
    post_titles: list[str]


async def display_name(users: Repository[User, int], id: int) -> str:
    """Service code types against the protocol, so tests can pass an InMemoryRepository."""
    user = await users.get_one(id)
    return f"{user.name} <{user.email}>"


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with Database(f"sqlite+aiosqlite:///{Path(tmp) / 'repo.db'}") as db:
            await db.create_all(Model.metadata)

            async with db.session() as session:
                users = UserRepository(session)
                ada = await users.save(User(email="ada@example.com", name="Ada"))
                grace = await users.save(User(email="grace@example.com", name="Grace"))
                await PostRepository(session).save_all(
                    [
                        Post(title="Notes on the engine", author_id=ada.id),
                        Post(title="Compilers", author_id=grace.id),
                        Post(title="Bernoulli numbers", author_id=ada.id),
                    ]
                )
            print(f"saved users {ada.id} and {grace.id}; created_at loaded: {ada.created_at}")

            async with db.session() as session:
                users = UserRepository(session)
                assert (await users.get_one(ada.id)).name == "Ada"
                assert await users.get(999) is None
                try:
                    await users.get_one(999)
                except NotFoundError as exc:
                    print(f"get_one: {exc}")

                found = await users.one_or_none(filter_by={"email": "grace@example.com"})
                assert found is not None
                assert found.name == "Grace"
                by_name = await users.list_all(order_by="-name,created_at")
                assert [u.name for u in by_name] == ["Grace", "Ada"]
                assert await users.count(User.name.startswith("A")) == 1
                assert await users.exists(User.email.endswith("@example.com"))

                # Two queries however many users there are: the posts come in one SELECT.
                async with assert_max_queries(2):
                    with_posts = await users.list_all(
                        order_by=User.id, options=[selectinload(User.posts)]
                    )
                out = [
                    UserWithPosts(
                        **to_schema(user, UserOut).model_dump(),
                        post_titles=sorted(p.title for p in user.posts),
                    )
                    for user in with_posts
                ]
                assert out[0].post_titles == ["Bernoulli numbers", "Notes on the engine"]
                print("with posts:", [o.model_dump() for o in out])
                print("as schemas:", to_schemas(with_posts, UserOut))

            # The same service against the in-memory double, as a unit test would.
            fake = InMemoryRepository(User, [User(id=1, email="x@example.com", name="Test")])
            assert await display_name(fake, 1) == "Test <x@example.com>"
            async with db.session() as session:
                print("service:", await display_name(UserRepository(session), ada.id))


if __name__ == "__main__":
    asyncio.run(main())
