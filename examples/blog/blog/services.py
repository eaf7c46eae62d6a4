"""What the blog does: sign users up, publish and edit posts, close accounts."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from blog.models import Post, User
from underlay import NotFoundError, StaleVersionError


async def sign_up(session: AsyncSession, email: str, name: str) -> User:
    """Create a user; a live user with the same address raises DuplicateError."""
    user = User(email=email.lower(), name=name)
    session.add(user)
    await session.commit()
    return user


async def publish(session: AsyncSession, author_id: int, title: str, body: str = "") -> Post:
    """Publish a post for a live user."""
    author = await session.get(User, author_id)
    if author is None or author.is_deleted:
        raise NotFoundError(model=User, id=author_id)
    post = Post(author_id=author_id, title=title, body=body)
    session.add(post)
    await session.commit()
    return post


async def edit(session: AsyncSession, post_id: int, *, title: str, expected_version: int) -> Post:
    """Retitle a post if nobody changed it since the caller read ``expected_version``."""
    post = await session.get(Post, post_id)
    if post is None:
        raise NotFoundError(model=Post, id=post_id)
    if post.version != expected_version:
        raise StaleVersionError(model=Post, id=post_id, expected_version=expected_version)
    post.title = title
    await session.commit()
    return post


async def close_account(session: AsyncSession, user_id: int) -> None:
    """Soft-delete a user; the address becomes free for a new account."""
    user = await session.get(User, user_id)
    if user is None:
        raise NotFoundError(model=User, id=user_id)
    if user.deleted_at is None:
        user.deleted_at = datetime.now(UTC)
        await session.commit()


async def post_counts(session: AsyncSession) -> dict[str, int]:
    """Return how many posts each live user wrote, by email (one query)."""
    rows = await session.execute(
        select(User.email, func.count(Post.id))
        .outerjoin(Post, Post.author_id == User.id)
        .where(User.deleted_at.is_(None))
        .group_by(User.email)
    )
    return dict(rows.all())
