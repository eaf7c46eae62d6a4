"""The blog's behaviour, on the database the underlay plugin provides (migrated to head)."""

import pytest
from blog import services
from blog.models import Post, User
from sqlalchemy import func, select

from underlay import Database, DuplicateError, NotFoundError, StaleVersionError
from underlay.testing import assert_max_queries


class TestUsers:
    async def test_sign_up_stores_the_user(self, underlay_session):
        """A signed-up user is stored with a lower-cased address and database timestamps."""
        user = await services.sign_up(underlay_session, "Ada@Example.com", "Ada")
        stored = await underlay_session.scalar(select(User).where(User.id == user.id))
        assert stored.email == "ada@example.com"
        assert stored.created_at.tzinfo is not None

    async def test_address_is_unique_among_live_users(self, underlay_session):
        """A second live account with the same address is refused."""
        await services.sign_up(underlay_session, "ada@example.com", "Ada")
        with pytest.raises(DuplicateError):
            await services.sign_up(underlay_session, "ada@example.com", "Ada again")

    async def test_closed_account_is_hidden(self, underlay_session):
        """A closed account is soft-deleted: reads no longer return it, the row stays."""
        user = await services.sign_up(underlay_session, "ada@example.com", "Ada")
        await services.close_account(underlay_session, user.id)
        users = services.UserRepository(underlay_session)
        assert await users.get(user.id) is None
        assert (await users.get(user.id, include_deleted=True)).deleted_at is not None

    async def test_closed_account_frees_the_address(self, underlay_session):
        """After an account is closed its address can sign up again (partial unique index)."""
        first = await services.sign_up(underlay_session, "ada@example.com", "Ada")
        await services.close_account(underlay_session, first.id)
        second = await services.sign_up(underlay_session, "ada@example.com", "Ada")
        assert second.id != first.id


class TestPosts:
    async def test_publish_needs_a_live_author(self, underlay_session):
        """Publishing for a closed account raises NotFoundError."""
        user = await services.sign_up(underlay_session, "bob@example.com", "Bob")
        await services.close_account(underlay_session, user.id)
        with pytest.raises(NotFoundError):
            await services.publish(underlay_session, user.id, "Hello")

    async def test_edit_bumps_the_version(self, underlay_session):
        """Each edit moves the post's version on by one."""
        user = await services.sign_up(underlay_session, "bob@example.com", "Bob")
        post = await services.publish(underlay_session, user.id, "Hello")
        assert post.version == 1
        edited = await services.edit(underlay_session, post.id, title="Hi", expected_version=1)
        assert (edited.title, edited.version) == ("Hi", 2)

    async def test_stale_edit_is_refused(self, underlay_session):
        """An edit based on an old version raises StaleVersionError and keeps the title."""
        user = await services.sign_up(underlay_session, "bob@example.com", "Bob")
        post = await services.publish(underlay_session, user.id, "Hello")
        await services.edit(underlay_session, post.id, title="Hi", expected_version=1)
        with pytest.raises(StaleVersionError):
            await services.edit(underlay_session, post.id, title="Late", expected_version=1)
        assert (await underlay_session.get(Post, post.id)).title == "Hi"

    async def test_posts_by_pages_newest_first(self, underlay_session):
        """An author's posts come back newest first, in pages that neither skip nor repeat."""
        user = await services.sign_up(underlay_session, "bob@example.com", "Bob")
        published = [
            (await services.publish(underlay_session, user.id, f"post {i}")).id for i in range(5)
        ]
        seen, after = [], None
        for _ in range(len(published)):  # bounded: a cursor bug must fail, not loop forever
            page = await services.posts_by(underlay_session, user.id, after=after, limit=2)
            seen += [post.id for post in page.items]
            if not page.has_more:
                break
            after = page.next_cursor
        assert seen == sorted(published, reverse=True)

    async def test_post_counts_is_one_query(self, underlay_session):
        """Counting posts per user sends a single statement whatever the number of users."""
        for n in range(3):
            user = await services.sign_up(underlay_session, f"u{n}@example.com", f"U{n}")
            for i in range(n):
                await services.publish(underlay_session, user.id, f"post {i}")
        async with assert_max_queries(1):
            counts = await services.post_counts(underlay_session)
        assert counts == {"u0@example.com": 0, "u1@example.com": 1, "u2@example.com": 2}


class TestIsolation:
    async def test_database_sessions_join_the_test_transaction(
        self, underlay_db: Database, underlay_session
    ):
        """A session the code under test opens through the Database shares the test's data."""
        async with underlay_db.session() as session:
            await services.sign_up(session, "cy@example.com", "Cy")
        assert await underlay_session.scalar(select(func.count()).select_from(User)) == 1

    async def test_each_test_starts_empty(self, underlay_session):
        """Rows committed by earlier tests are gone: every test starts with no users."""
        assert await underlay_session.scalar(select(func.count()).select_from(User)) == 0
