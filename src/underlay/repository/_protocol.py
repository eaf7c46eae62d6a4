"""The ``Repository`` protocol that services type against."""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from underlay.typing import IdT_contra

__all__ = ["Repository"]

_ModelT = TypeVar("_ModelT")


class Repository(Protocol[_ModelT, IdT_contra]):
    """What a service needs from a repository: get, save, delete and list.

    Type services against ``Repository[User, int]`` and pass a
    :class:`~underlay.SQLAlchemyRepository` in production and an
    :class:`~underlay.InMemoryRepository` in unit tests. ``where`` criteria are
    implementation-specific (SQLAlchemy expressions, or predicates for the in-memory one).

    Example::

        async def rename(users: Repository[User, int], id: int, name: str) -> User:
            user = await users.get_one(id)
            user.name = name
            return await users.save(user)

        await rename(UserRepository(session), 1, "Ada")            # production
        await rename(InMemoryRepository(User, [alice]), 1, "Ada")  # unit test
    """

    async def get(self, id: IdT_contra) -> _ModelT | None:
        """Return the entity with primary key ``id``, or ``None``."""
        ...

    async def get_one(self, id: IdT_contra) -> _ModelT:
        """Return the entity with primary key ``id``; raise ``NotFoundError`` if absent."""
        ...

    async def save(self, entity: _ModelT) -> _ModelT:
        """Persist a new or changed entity and return it with generated values loaded."""
        ...

    async def delete(self, id_or_entity: Any) -> None:
        """Delete the entity (softly for soft-delete models)."""
        ...

    async def list_all(
        self,
        *where: Any,
        order_by: Any = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> list[_ModelT]:
        """Return the entities matching ``where``."""
        ...
