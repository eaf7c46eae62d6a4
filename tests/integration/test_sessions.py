"""Server-side sessions against real Redis (and the in-process store with a fake clock)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from redis.asyncio import Redis

from underlay import InvalidQueryError, NotFoundError, tenant_context
from underlay.sessions import MemorySessionStore, RedisSessionStore, SessionStore
from underlay.sessions._base import session_digest

pytestmark = pytest.mark.redis


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["redis", "memory"])
async def store(
    request: pytest.FixtureRequest, redis_url: str, prefix: str
) -> AsyncIterator[SessionStore]:
    """A RedisSessionStore with a private prefix, then a MemorySessionStore."""
    built: SessionStore
    if request.param == "redis":
        built = RedisSessionStore(redis_url, prefix=prefix, timeout=2.0)
    else:
        built = MemorySessionStore()
    try:
        yield built
    finally:
        await built.aclose()


class TestStore:
    async def test_ids_are_random_urlsafe_256_bits(self, store: SessionStore) -> None:
        """Ids are 43 URL-safe characters (256 bits) and never repeat."""
        ids = {await store.create({}) for _ in range(50)}
        assert len(ids) == 50
        for sid in ids:
            assert len(sid) == 43
            assert set(sid) <= set(
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
            )

    async def test_data_round_trips_through_json(self, store: SessionStore) -> None:
        """Data comes back equal, decimals included; unsupported types are refused."""
        sid = await store.create({"role": "user", "credit": Decimal("9.90")}, user_id="u1")
        assert await store.get(sid) == {"role": "user", "credit": Decimal("9.90")}
        record = await store.load(sid)
        assert record is not None
        assert record.user_id == "u1"
        with pytest.raises(TypeError):
            await store.create({"obj": object()})

    async def test_save_replaces_data(self, store: SessionStore) -> None:
        """`save` replaces the data of a live session and reports a missing one."""
        sid = await store.create({"a": 1})
        assert await store.save(sid, {"a": 2}) is True
        assert await store.get(sid) == {"a": 2}
        await store.revoke(sid)
        assert await store.save(sid, {"a": 3}) is False

    @pytest.mark.parametrize("bad", ["", "short", "x" * 43 + "!", "../" * 15], ids=str)
    async def test_malformed_ids_are_not_found(self, store: SessionStore, bad: str) -> None:
        """A malformed id is simply no session: get None, revoke False, rotate NotFound."""
        assert await store.get(bad) is None
        assert await store.revoke(bad) is False
        with pytest.raises(NotFoundError):
            await store.rotate(bad)

    async def test_rotation_invalidates_the_old_id(self, store: SessionStore) -> None:
        """After rotate the old id finds nothing; the new one has the data and the user."""
        sid = await store.create({"cart": [1, 2]}, user_id="u1")
        new_sid = await store.rotate(sid)
        assert new_sid != sid
        assert await store.get(sid) is None
        assert await store.get(new_sid) == {"cart": [1, 2]}
        with pytest.raises(NotFoundError):
            await store.rotate(sid)
        assert await store.revoke_all("u1") == 1  # the index follows the rotation
        assert await store.get(new_sid) is None

    async def test_revoke_all_ends_three_concurrent_sessions(self, store: SessionStore) -> None:
        """revoke_all ends every session of the user, made concurrently, and no other's."""
        mine = await asyncio.gather(*(store.create({"n": n}, user_id="u1") for n in range(3)))
        other = await store.create({"n": 9}, user_id="u2")
        assert [await store.get(sid) for sid in mine] == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert await store.revoke_all("u1") == 3
        assert [await store.get(sid) for sid in mine] == [None, None, None]
        assert await store.get(other) == {"n": 9}
        assert await store.revoke_all("u1") == 0

    async def test_revoke_one(self, store: SessionStore) -> None:
        """revoke ends exactly one session and says whether it existed."""
        first = await store.create({}, user_id="u1")
        second = await store.create({}, user_id="u1")
        assert await store.revoke(first) is True
        assert await store.revoke(first) is False
        assert await store.get(second) == {}
        assert await store.revoke_all("u1") == 1


class TestTenants:
    async def test_session_belongs_to_the_tenant_in_effect(self, store: SessionStore) -> None:
        """A session made in a tenant's context is that tenant's, and rotation keeps it."""
        with tenant_context("acme"):
            sid = await store.create({"a": 1}, user_id="u1")
            record = await store.load(sid)
            assert record is not None
            assert (record.user_id, record.tenant) == ("u1", "acme")
            sid = await store.rotate(sid)
        record = await store.load(sid)  # no tenant in effect: still readable, tenant known
        assert record is not None
        assert record.tenant == "acme"

    async def test_another_tenants_context_does_not_see_it(self, store: SessionStore) -> None:
        """A cookie of tenant A replayed in tenant B's context is no session at all."""
        sid = await store.create({"role": "admin"}, user_id="u1", tenant="acme")
        with tenant_context("globex"):
            assert await store.get(sid) is None
            assert await store.load(sid) is None
        with tenant_context("acme"):
            assert await store.get(sid) == {"role": "admin"}

    async def test_session_without_tenant_is_seen_everywhere(self, store: SessionStore) -> None:
        sid = await store.create({"a": 1}, tenant=None)
        with tenant_context("globex"):
            assert await store.get(sid) == {"a": 1}

    async def test_revoke_all_stays_in_its_tenant(self, store: SessionStore) -> None:
        """Users of one id in two tenants are two users: logging one out spares the other."""
        with tenant_context("acme"):
            acme = await store.create({}, user_id="u1")
        with tenant_context("globex"):
            globex = await store.create({}, user_id="u1")
        plain = await store.create({}, user_id="u1", tenant=None)
        # a user id that looks like "tenant/user" is still its own user
        tricky = await store.create({}, user_id="acme/u1", tenant=None)
        with tenant_context("acme"):
            assert await store.revoke_all("u1") == 1
            assert await store.get(acme) is None
            assert await store.get(globex) is None  # another tenant's: not visible here
        with tenant_context("globex"):
            assert await store.get(globex) == {}
        assert await store.get(plain) == {}
        assert await store.get(tricky) == {}
        assert await store.revoke_all("u1", tenant="globex") == 1
        assert await store.revoke_all("u1") == 1  # no tenant in effect: the tenantless user
        assert await store.get(tricky) == {}

    async def test_bad_tenant_is_refused(self, store: SessionStore) -> None:
        with pytest.raises(InvalidQueryError):
            await store.create({}, tenant="")


def key_of(prefix: str, sid: str) -> str:
    return f"{prefix}s:{session_digest(sid)}"


class TestRedisExpiry:
    async def test_a_read_slides_the_idle_expiry(
        self, redis: Redis, redis_url: str, prefix: str
    ) -> None:
        """Reading a session pushes its TTL back out to idle_ttl."""
        async with RedisSessionStore(
            redis_url, prefix=prefix, idle_ttl=100, absolute_ttl=1000
        ) as store:
            sid = await store.create({"a": 1})
            assert 0 < await redis.pttl(key_of(prefix, sid)) <= 100_000
            await redis.pexpire(key_of(prefix, sid), 5_000)  # as if 95 s had passed
            assert await store.get(sid) == {"a": 1}
            assert await redis.pttl(key_of(prefix, sid)) > 5_000

    async def test_idle_session_expires(self, redis_url: str, prefix: str) -> None:
        """A session nobody reads for idle_ttl is gone."""
        async with RedisSessionStore(
            redis_url, prefix=prefix, idle_ttl=0.05, absolute_ttl=1000
        ) as store:
            sid = await store.create({"a": 1})
            async with asyncio.timeout(10):
                while await store.get(sid) is not None:
                    await asyncio.sleep(0.1)

    async def test_absolute_expiry_caps_sliding(
        self, redis: Redis, redis_url: str, prefix: str
    ) -> None:
        """However active, a session ends at its absolute expiry; reads never extend past it."""
        async with RedisSessionStore(
            redis_url, prefix=prefix, idle_ttl=100, absolute_ttl=1000
        ) as store:
            sid = await store.create({"a": 1})
            seconds, micros = await redis.time()
            now_ms = seconds * 1000 + micros // 1000
            await redis.hset(key_of(prefix, sid), "x", now_ms + 2_000)  # 2 s of life left
            assert await store.get(sid) == {"a": 1}
            assert 0 < await redis.pttl(key_of(prefix, sid)) <= 2_000
            await redis.hset(key_of(prefix, sid), "x", now_ms - 1)  # absolute expiry passed
            assert await store.get(sid) is None
            assert not await redis.exists(key_of(prefix, sid))

    async def test_stored_keys_reveal_no_session_id(
        self, redis: Redis, redis_url: str, prefix: str
    ) -> None:
        """Redis keys hold a hash of the id; the data is JSON, never pickle."""
        async with RedisSessionStore(redis_url, prefix=prefix) as store:
            sid = await store.create({"role": "admin"}, user_id="u1")
        keys = [key.decode() async for key in redis.scan_iter(match=f"{prefix}*")]
        assert keys
        assert all(sid not in key for key in keys)
        data = await redis.hget(key_of(prefix, sid), "d")
        assert data == b'{"role":"admin"}'


class TestMemoryExpiry:
    async def test_sliding_and_absolute_expiry(self) -> None:
        """Reads keep a session alive until the absolute expiry; idleness ends it sooner."""
        clock = Clock()
        store = MemorySessionStore(idle_ttl=100, absolute_ttl=250, clock=clock)
        active = await store.create({"a": 1})
        idle = await store.create({"b": 2})
        for _ in range(2):
            clock.now += 90
            assert await store.get(active) == {"a": 1}
        assert await store.get(idle) is None  # 180 s without a read
        clock.now += 80  # 260 s after creation: past the absolute expiry
        assert await store.get(active) is None
