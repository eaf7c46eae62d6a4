"""Static checks of the repository types, run by mypy (and imported by pytest)."""

from __future__ import annotations

from typing import Any, assert_type

from pydantic import BaseModel
from sqlalchemy import Select, String
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from underlay import (
    CursorPage,
    InMemoryRepository,
    Page,
    Repository,
    SQLAlchemyRepository,
    to_schema,
    to_schemas,
)


class TypingBase(DeclarativeBase):
    pass


class User(TypingBase):
    __tablename__ = "typing_users"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(100), unique=True)


class Post(TypingBase):
    __tablename__ = "typing_posts"

    id: Mapped[int] = mapped_column(primary_key=True)


class UserRepository(SQLAlchemyRepository[User]):
    sortable_fields = ("email",)


class UserOut(BaseModel):
    id: int
    email: str


async def repository_types(session: AsyncSession) -> None:
    users = UserRepository(session)
    assert_type(users.model, type[User])
    assert_type(await users.get(1), User | None)
    assert_type(await users.get_one(1), User)
    assert_type(await users.one_or_none(User.email == "a"), User | None)
    assert_type(await users.list_all(order_by="-email"), list[User])
    assert_type(await users.count(), int)
    assert_type(await users.exists(), bool)
    assert_type(await users.save(User(email="a")), User)
    assert_type(await users.save_all([User(email="a")]), list[User])
    assert_type(await users.update(1, {"email": "b"}), User)
    assert_type(await users.upsert({"email": "c"}, conflict_on=["email"]), User)
    assert_type(await users.upsert_many([{"email": "c"}], conflict_on=["email"]), list[User])
    assert_type(await users.insert_many([{"email": "d"}]), int)
    assert_type(await users.delete_where(User.id > 3), int)
    assert_type(await users.paginate(limit=10), CursorPage[User])
    assert_type(await users.page(number=2), Page[User])
    assert_type(users.select_statement(User.id > 1), Select[User])
    entity = await users.get_one(1)
    assert_type(to_schema(entity, UserOut), UserOut)
    assert_type(to_schemas([entity], UserOut), list[UserOut])


def protocol_types(session: AsyncSession) -> None:
    real: Repository[User, int] = UserRepository(session)
    fake: Repository[User, int] = InMemoryRepository(User)
    assert_type(InMemoryRepository(User), InMemoryRepository[User])
    assert real is not fake


def mismatched_model() -> None:
    """A repository whose model contradicts its generic parameter is a type error."""

    class Wrong(SQLAlchemyRepository[User]):
        model = Post  # type: ignore[assignment]

    _ = Wrong


def wrong_entity_rejected(users: UserRepository, post: Post) -> Any:
    return users.save(post)  # type: ignore[arg-type]


def test_module_imports() -> None:
    """The typing module imports: mypy checks its assertions statically."""
    assert callable(repository_types)
    assert callable(protocol_types)
