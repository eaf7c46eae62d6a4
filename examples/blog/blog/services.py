"""What the blog does: sign users up, publish and edit posts, close accounts."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from blog.models import Post, User
from underlay import CursorPage, SQLAlchemyRepository


class UserRepository(SQLAlchemyRepository[User]):
    sortable_fields = ("created_at", "name")
    filterable_fields = ("email",)


class PostRepository(SQLAlchemyRepository[Post]):
    sortable_fields = ("id", "created_at", "title")
    filterable_fields = ("author_id",)


async def sign_up(session: AsyncSession, email: str, name: str) -> User:
    """Create a user; a live user with the same address raises DuplicateError."""
    user = await UserRepository(session).save(User(email=email.lower(), name=name))
    await session.commit()
    return user


async def publish(session: AsyncSession, author_id: int, title: str, body: str = "") -> Post:
    """Publish a post; a closed or unknown account raises NotFoundError."""
    author = await UserRepository(session).get_one(author_id)
    post = await PostRepository(session).save(Post(author_id=author.id, title=title, body=body))
    await session.commit()
    return post


async def edit(session: AsyncSession, post_id: int, *, title: str, expected_version: int) -> Post:
    """Retitle a post unless someone changed it since the caller read ``expected_version``.

    A stale version raises StaleVersionError and changes nothing.
    """
    post = await PostRepository(session).update(
        post_id, {"title": title}, expected_version=expected_version
    )
    await session.commit()
    return post


async def close_account(session: AsyncSession, user_id: int) -> None:
    """Soft-delete a user: hidden from reads, the address free for a new account."""
    await UserRepository(session).delete(user_id)
    await session.commit()


async def posts_by(
    session: AsyncSession, author_id: int, *, after: str | None = None, limit: int = 20
) -> CursorPage[Post]:
    """Return one page of an author's posts, newest first (keyset pagination)."""
    return await PostRepository(session).paginate(
        Post.author_id == author_id, order_by="-id", limit=limit, after=after
    )


async def post_counts(session: AsyncSession) -> dict[str, int]:
    """Return how many posts each live user wrote, by email (one query)."""
    rows = await session.execute(
        select(User.email, func.count(Post.id))
        .outerjoin(Post, Post.author_id == User.id)
        .where(User.deleted_at.is_(None))
        .group_by(User.email)
    )
    return dict(rows.all())
