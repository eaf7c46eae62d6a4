"""Database + cache: commits invalidate, rollbacks do not, fills never publish stale data."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import ForeignKey, MetaData, Numeric, String, delete, text, update
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from tests.conftest import Backend, reset_schema
from tests.integration.test_cache import drop_prefix, make_cache
from underlay import (
    Database,
    DuplicateError,
    NotFoundError,
    SoftDeleteMixin,
    SQLAlchemyRepository,
    TimestampMixin,
    UTCDateTime,
    record_write,
)
from underlay.cache import CachedRepository, RedisCache
from underlay.cache._base import BaseCache
from underlay.models import NAMING_CONVENTION


class CacheBase(AsyncAttrs, DeclarativeBase):
    """A registry of this module's own: model names never clash with other test modules."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {dt.datetime: UTCDateTime()}  # noqa: RUF012 - SQLAlchemy reads it


class Product(TimestampMixin, CacheBase):
    __tablename__ = "cache_products"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    price: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    tenant: Mapped[str] = mapped_column(String(20), default="a")


class Review(CacheBase):
    __tablename__ = "cache_reviews"

    id: Mapped[int] = mapped_column(primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("cache_products.id"))
    stars: Mapped[int]


class Note(SoftDeleteMixin, CacheBase):
    __tablename__ = "cache_notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(String(100))


class NoteOut(BaseModel):
    id: int
    text: str
    deleted_at: dt.datetime | None


class NoteRepository(SQLAlchemyRepository[Note]):
    pass


class ProductOut(BaseModel):
    id: int
    name: str
    price: Decimal
    created_at: dt.datetime


class ProductName(BaseModel):
    id: int
    name: str


class ProductRepository(SQLAlchemyRepository[Product]):
    sortable_fields = ("id", "name")


class GatedRepository(ProductRepository):
    """Reads from the database, then waits to be let go: a slow reader."""

    read = asyncio.Event()
    release = asyncio.Event()

    async def get(self, id: Any, **options: Any) -> Product | None:
        entity = await super().get(id, **options)
        type(self).read.set()
        await type(self).release.wait()
        return entity


class CountingRepository(ProductRepository):
    gets = 0

    async def get(self, id: Any, **options: Any) -> Product | None:
        type(self).gets += 1
        await asyncio.sleep(0)  # let every concurrent caller arrive while this one loads
        return await super().get(id, **options)


@pytest.fixture
def metadata() -> MetaData:
    return CacheBase.metadata


@pytest.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest) -> AsyncIterator[BaseCache]:
    """The cache the database invalidates: in-process, then Redis."""
    built = await make_cache(request.param, request, f"underlay-test-{uuid.uuid4().hex}:")
    try:
        yield built
    finally:
        if isinstance(built, RedisCache):
            await drop_prefix(built)
        await built.aclose()


@pytest.fixture
async def cdb(backend: Backend, metadata: MetaData, cache: BaseCache) -> AsyncIterator[Database]:
    """A Database wired to the cache, with the test tables and one product."""
    database = Database(backend.url, pool_size=5, max_overflow=5, cache=cache)
    await reset_schema(database)
    await database.create_all(metadata)
    async with database.session() as session:
        session.add(Product(id=1, name="lamp", price=Decimal("10.50")))
    try:
        yield database
    finally:
        await database.dispose()


def cached(
    session: Any,
    cache: BaseCache,
    repository: type[ProductRepository] = ProductRepository,
    **options: Any,
) -> CachedRepository[ProductOut]:
    return CachedRepository(repository(session, **options), cache, schema=ProductOut)


async def read(db: Database, cache: BaseCache, id: int = 1) -> ProductOut | None:
    async with db.session() as session:
        return await cached(session, cache).get(id)


async def names(db: Database, cache: BaseCache, **where: Any) -> list[str]:
    async with db.session() as session:
        return [p.name for p in await cached(session, cache).list_all(order_by="id", **where)]


class TestReads:
    async def test_get_is_cached_and_round_trips_exactly(
        self, cdb: Database, cache: BaseCache
    ) -> None:
        """The second read is a hit and equals the first, decimals and datetimes included."""
        first = await read(cdb, cache)
        second = await read(cdb, cache)
        assert first == second
        assert second is not None
        assert second.price == Decimal("10.50")
        assert second.created_at.tzinfo is not None
        assert cache.stats.hits == 1

    async def test_missing_row_reads_none(self, cdb: Database, cache: BaseCache) -> None:
        """An absent id reads as None, from the database and then from the cache."""
        assert await read(cdb, cache, 99) is None
        assert await read(cdb, cache, 99) is None
        assert cache.stats.hits == 1

    async def test_get_one_raises_for_a_missing_row(self, cdb: Database, cache: BaseCache) -> None:
        """get_one returns the schema, or raises NotFoundError naming the model and id."""
        async with cdb.session() as session:
            assert (await cached(session, cache).get_one(1)).name == "lamp"
            with pytest.raises(NotFoundError) as info:
                await cached(session, cache).get_one(99)
        assert info.value.id == 99
        assert info.value.model is Product

    async def test_get_many_reads_hits_and_loads_misses_together(
        self, cdb: Database, cache: BaseCache
    ) -> None:
        """get_many returns rows by id, caches them, and leaves out ids without a row."""
        async with cdb.session() as session:
            session.add(Product(id=2, name="desk", price=Decimal(1)))
        assert await read(cdb, cache, 1) is not None
        async with cdb.session() as session:
            found = await cached(session, cache).get_many([1, 2, 3])
        assert {id: p.name for id, p in found.items()} == {1: "lamp", 2: "desk"}
        hits = cache.stats.hits
        async with cdb.session() as session:
            again = await cached(session, cache).get_many([1, 2, 3])
        assert again == found
        assert cache.stats.hits == hits + 3
        async with cdb.session() as session:
            await ProductRepository(session).update(2, {"name": "moved"})
        async with cdb.session() as session:
            moved = await cached(session, cache).get_many([2])
        assert moved[2].name == "moved"

    async def test_scopes_never_share_entries(self, cdb: Database, cache: BaseCache) -> None:
        """Repositories with different base criteria keep separate entries."""
        async with cdb.session() as session:
            session.add(Product(id=2, name="desk", price=Decimal(5), tenant="b"))
        async with cdb.session() as session:
            tenant_a = cached(session, cache, where=[Product.tenant == "a"])
            tenant_b = cached(session, cache, where=[Product.tenant == "b"])
            assert [p.name for p in await tenant_a.list_all()] == ["lamp"]
            assert [p.name for p in await tenant_b.list_all()] == ["desk"]
            assert await tenant_b.get(1) is None
            assert await tenant_a.get(1) is not None

    async def test_new_instances_share_only_unscoped_entries(
        self, cdb: Database, cache: BaseCache
    ) -> None:
        """A repository built per request hits the entry; a scoped one of the class never does."""
        async with cdb.session() as session:
            assert await cached(session, cache).get(1) is not None
        hits = cache.stats.hits
        async with cdb.session() as session:
            assert await cached(session, cache).get(1) is not None
        assert cache.stats.hits == hits + 1
        async with cdb.session() as session:
            assert await cached(session, cache, where=[Product.tenant == "b"]).get(1) is None
        assert cache.stats.hits == hits + 1

    async def test_schemas_never_share_entries(self, cdb: Database, cache: BaseCache) -> None:
        """Two schemas of one model are cached apart (the key holds the schema fingerprint)."""
        async with cdb.session() as session:
            full = await cached(session, cache).get(1)
            short = await CachedRepository(
                ProductRepository(session), cache, schema=ProductName
            ).get(1)
        assert isinstance(full, ProductOut)
        assert isinstance(short, ProductName)
        assert cache.stats.hits == 0

    async def test_hundred_concurrent_misses_load_once(
        self, cdb: Database, cache: BaseCache
    ) -> None:
        """100 concurrent requests for one uncached row query the database once."""
        CountingRepository.gets = 0

        async def one() -> ProductOut | None:
            async with cdb.session() as session:
                return await cached(session, cache, CountingRepository).get(1)

        results = await asyncio.gather(*(one() for _ in range(100)))
        assert CountingRepository.gets == 1
        assert {r.name for r in results if r is not None} == {"lamp"}
        assert len([r for r in results if r is not None]) == 100


class TestCommitInvalidates:
    async def test_update_refreshes_cached_get(self, cdb: Database, cache: BaseCache) -> None:
        """A committed update is visible to the next cached read."""
        await read(cdb, cache)
        async with cdb.session() as session:
            await ProductRepository(session).update(1, {"name": "bright lamp"})
        fresh = await read(cdb, cache)
        assert fresh is not None
        assert fresh.name == "bright lamp"

    async def test_manual_commit_invalidates_before_returning(
        self, cdb: Database, cache: BaseCache
    ) -> None:
        """`await session.commit()` has invalidated by the time it returns."""
        await read(cdb, cache)
        session = cdb.sessionmaker()
        try:
            product = await session.get(Product, 1)
            assert product is not None
            product.name = "renamed"
            await session.commit()
            fresh = await cached(session, cache).get(1)
            assert fresh is not None
            assert fresh.name == "renamed"
        finally:
            await session.close()

    async def test_insert_invalidates_lists(self, cdb: Database, cache: BaseCache) -> None:
        """A committed insert shows up in a cached list and a cached negative get."""
        assert await names(cdb, cache) == ["lamp"]
        assert await read(cdb, cache, 2) is None
        async with cdb.session() as session:
            await ProductRepository(session).save(Product(id=2, name="desk", price=Decimal(1)))
        assert await names(cdb, cache) == ["lamp", "desk"]
        desk = await read(cdb, cache, 2)
        assert desk is not None

    async def test_bulk_delete_invalidates_lists_and_rows(
        self, cdb: Database, cache: BaseCache
    ) -> None:
        """delete_where (one DELETE statement) drops cached lists and single rows."""
        assert await names(cdb, cache) == ["lamp"]
        assert await read(cdb, cache) is not None
        async with cdb.session() as session:
            assert await ProductRepository(session).delete_where(Product.price > 1) == 1
        assert await names(cdb, cache) == []
        assert await read(cdb, cache) is None

    async def test_bulk_insert_and_core_update_invalidate(
        self, cdb: Database, cache: BaseCache
    ) -> None:
        """insert_many and a Core UPDATE through the session invalidate like ORM writes."""
        assert await names(cdb, cache) == ["lamp"]
        async with cdb.session() as session:
            await ProductRepository(session).insert_many(
                [{"id": 3, "name": "chair", "price": Decimal(2)}]
            )
        assert await names(cdb, cache) == ["lamp", "chair"]
        assert await read(cdb, cache, 1) is not None
        async with cdb.session() as session:
            await session.execute(update(Product.__table__).values(name="x"))
        assert await names(cdb, cache) == ["x", "x"]
        one = await read(cdb, cache, 1)
        assert one is not None
        assert one.name == "x"

    async def test_record_write_invalidates(self, cdb: Database, cache: BaseCache) -> None:
        """A write the ORM cannot see, recorded with record_write, invalidates on commit."""
        await read(cdb, cache)
        async with cdb.session() as session:
            await session.execute(text("UPDATE cache_products SET name = 'raw' WHERE id = 1"))
            record_write(session, Product, [1])
        fresh = await read(cdb, cache)
        assert fresh is not None
        assert fresh.name == "raw"

    @pytest.mark.parametrize("form", ["eq", "in-list", "bulk-by-pk"])
    async def test_writes_by_primary_key_invalidate_only_those_rows(
        self, cdb: Database, cache: BaseCache, form: str
    ) -> None:
        """UPDATE ... WHERE pk = / IN (...) and bulk UPDATE by primary key spare other rows."""
        async with cdb.session() as session:
            session.add(Product(id=2, name="desk", price=Decimal(1)))
        await read(cdb, cache, 1)
        await read(cdb, cache, 2)
        async with cdb.session() as session:
            if form == "eq":
                await session.execute(update(Product).where(Product.id == 1).values(name="x"))
            elif form == "in-list":
                await session.execute(update(Product).where(Product.id.in_([1])).values(name="x"))
            else:
                await session.execute(update(Product), [{"id": 1, "name": "x"}])
        hits = cache.stats.hits
        one, two = await read(cdb, cache, 1), await read(cdb, cache, 2)
        assert one is not None
        assert two is not None
        assert (one.name, two.name) == ("x", "desk")
        assert cache.stats.hits == hits + 1  # row 2 still cached

    async def test_record_write_without_ids_invalidates_every_row(
        self, cdb: Database, cache: BaseCache
    ) -> None:
        """record_write(session, Model) with no ids drops every entry of the model."""
        await read(cdb, cache)
        async with cdb.session() as session:
            await session.execute(text("UPDATE cache_products SET name = 'all'"))
            record_write(session, Product)
        fresh = await read(cdb, cache)
        assert fresh is not None
        assert fresh.name == "all"

    async def test_explicit_invalidate_for_outside_writers(
        self, cdb: Database, cache: BaseCache
    ) -> None:
        """A write outside underlay is picked up after CachedRepository.invalidate."""
        await read(cdb, cache)
        async with cdb.engine.begin() as conn:
            await conn.execute(text("UPDATE cache_products SET name = 'outside' WHERE id = 1"))
        stale = await read(cdb, cache)
        assert stale is not None
        assert stale.name == "lamp"  # documented: writers that bypass underlay must invalidate
        async with cdb.session() as session:
            await cached(session, cache).invalidate(1)
        fresh = await read(cdb, cache)
        assert fresh is not None
        assert fresh.name == "outside"

    async def test_dependency_write_invalidates(self, cdb: Database, cache: BaseCache) -> None:
        """A write to a model listed in depends_on invalidates the dependent entries."""

        async def read_with_dependency() -> None:
            async with cdb.session() as session:
                await CachedRepository(
                    ProductRepository(session), cache, schema=ProductOut, depends_on=[Review]
                ).get(1)

        await read_with_dependency()
        await read_with_dependency()
        assert cache.stats.hits == 1
        async with cdb.session() as session:
            session.add(Review(id=1, product_id=1, stars=5))
        await read_with_dependency()
        assert cache.stats.hits == 1


class TestTwoWorkers:
    async def test_write_in_one_worker_refreshes_the_other(
        self, backend: Backend, metadata: MetaData, redis_url: str
    ) -> None:
        """Another Database/RedisCache pair's commit invalidates this worker's entries."""
        prefix = f"underlay-test-{uuid.uuid4().hex}:"
        cache = RedisCache(redis_url, prefix=prefix, timeout=1.0)
        other_cache = RedisCache(redis_url, prefix=prefix, timeout=1.0)
        db = Database(backend.url, cache=cache)
        other = Database(backend.url, cache=other_cache)
        try:
            await reset_schema(db)
            await db.create_all(metadata)
            async with db.session() as session:
                session.add(Product(id=1, name="lamp", price=Decimal("10.50")))
            assert await names(db, cache) == ["lamp"]
            assert await read(db, cache) is not None
            async with other.session() as session:
                await ProductRepository(session).update(1, {"name": "moved"})
                session.add(Product(id=2, name="new", price=Decimal(3)))
            fresh = await read(db, cache)
            assert fresh is not None
            assert fresh.name == "moved"
            assert await names(db, cache) == ["moved", "new"]
        finally:
            await drop_prefix(cache)
            for database in (db, other):
                await database.dispose()
            for each in (cache, other_cache):
                await each.aclose()


class TestRollback:
    async def test_rollback_invalidates_nothing_and_reads_stay_right(
        self, cdb: Database, cache: BaseCache
    ) -> None:
        """A rolled-back write leaves the cached entry in place and correct."""
        await read(cdb, cache)
        delivered = cache.stats.invalidations
        with pytest.raises(RuntimeError):
            async with cdb.session() as session:
                await ProductRepository(session).update(1, {"name": "never"})
                raise RuntimeError("abort")
        again = await read(cdb, cache)
        assert again is not None
        assert again.name == "lamp"
        assert cache.stats.hits == 1
        assert cache.stats.invalidations == delivered

    async def test_rolled_back_savepoint_is_not_invalidated(
        self, cdb: Database, cache: BaseCache
    ) -> None:
        """Only the writes that committed invalidate; a rolled-back savepoint's are dropped."""
        async with cdb.session() as session:
            session.add(Product(id=2, name="desk", price=Decimal(1)))
        await read(cdb, cache, 1)
        await read(cdb, cache, 2)
        async with cdb.session() as session:
            repo = ProductRepository(session)
            with pytest.raises(RuntimeError):
                async with session.begin_nested():
                    await repo.update(1, {"name": "never"})
                    raise RuntimeError("undo savepoint")
            async with session.begin_nested():
                await repo.update(2, {"name": "kept"})
        hits = cache.stats.hits
        one, two = await read(cdb, cache, 1), await read(cdb, cache, 2)
        assert one is not None
        assert two is not None
        assert (one.name, two.name) == ("lamp", "kept")
        assert cache.stats.hits == hits + 1  # row 1 still cached, row 2 reloaded

    async def test_uncommitted_changes_are_never_published(
        self, cdb: Database, cache: BaseCache
    ) -> None:
        """A read in a transaction with pending changes sees them but does not cache them."""
        await read(cdb, cache)
        with pytest.raises(RuntimeError):
            async with cdb.session() as session:
                await ProductRepository(session).update(1, {"name": "draft"})
                own = await cached(session, cache).get(1)
                assert own is not None
                assert own.name == "draft"
                outside = await read(cdb, cache)
                assert outside is not None
                assert outside.name == "lamp"
                raise RuntimeError("abort")
        after = await read(cdb, cache)
        assert after is not None
        assert after.name == "lamp"

    async def test_pending_objects_bypass_the_cache(self, cdb: Database, cache: BaseCache) -> None:
        """An added but unflushed object of the model sends cached reads to the database."""
        await read(cdb, cache)
        async with cdb.session() as session:
            session.add(Product(id=2, name="pending", price=Decimal(1)))
            repo = cached(session, cache)
            assert [p.name for p in await repo.list_all(order_by="id")] == ["lamp", "pending"]
            record_write(session, Product, [1])
            assert await repo.get(1) is not None
        assert await names(cdb, cache) == ["lamp", "pending"]

    async def test_failed_commit_invalidates_nothing(self, cdb: Database, cache: BaseCache) -> None:
        """A commit that fails (a duplicate key) leaves the cache untouched."""
        await read(cdb, cache)
        delivered = cache.stats.invalidations
        with pytest.raises(DuplicateError):
            async with cdb.session() as session:
                await session.execute(update(Product).where(Product.id == 1).values(name="dup"))
                session.add(Product(id=1, name="clash", price=Decimal(1)))
        assert cache.stats.invalidations == delivered


class TestSoftDelete:
    async def test_soft_delete_invalidates_and_scopes_stay_apart(
        self, cdb: Database, cache: BaseCache
    ) -> None:
        """A soft delete hides the row from cached reads; include_deleted reads are their own."""

        async def notes(**options: Any) -> tuple[NoteOut | None, list[str]]:
            async with cdb.session() as session:
                one = await CachedRepository(NoteRepository(session), cache, schema=NoteOut).get(
                    1, **options
                )
            async with cdb.session() as session:
                repo = CachedRepository(NoteRepository(session), cache, schema=NoteOut)
                return one, [n.text for n in await repo.list_all(**options)]

        async with cdb.session() as session:
            session.add(Note(id=1, text="hello"))
        live, texts = await notes()
        assert live is not None
        assert texts == ["hello"]
        async with cdb.session() as session:
            await NoteRepository(session).delete(1)
        assert await notes() == (None, [])
        deleted, texts = await notes(include_deleted=True)
        assert deleted is not None
        assert deleted.deleted_at is not None
        assert texts == ["hello"]
        assert await notes() == (None, [])


class TestSnapshots:
    async def test_read_from_an_old_snapshot_is_not_published(
        self, cdb: Database, cache: BaseCache
    ) -> None:
        """A transaction that started before a commit never caches what it still sees."""
        async with cdb.session() as reader:
            await reader.execute(text("SELECT count(*) FROM cache_products"))  # snapshot taken
            async with cdb.session() as writer:
                await ProductRepository(writer).update(1, {"name": "new"})
            seen = await cached(reader, cache).get(1)
            assert seen is not None
            assert seen.name in {"lamp", "new"}  # "lamp" where the snapshot is transaction-wide
        fresh = await read(cdb, cache)
        assert fresh is not None
        assert fresh.name == "new"


class TestIdentityMap:
    async def test_objects_held_by_the_session_are_not_published(
        self, cdb: Database, cache: BaseCache
    ) -> None:
        """A session holding an object loaded before a commit never caches its old state."""
        session = cdb.sessionmaker()
        try:
            held = await ProductRepository(session).get(1)  # now in the identity map
            assert held is not None
            await session.commit()  # objects are not expired: they keep what they loaded
            async with cdb.session() as writer:
                await ProductRepository(writer).update(1, {"name": "new"})
            await cached(session, cache).get(1)
            await cached(session, cache).list_all()
        finally:
            await session.close()
        fresh = await read(cdb, cache)
        assert fresh is not None
        assert fresh.name == "new"
        assert await names(cdb, cache) == ["new"]

    async def test_cached_reads_leave_the_identity_map_as_they_found_it(
        self, cdb: Database, cache: BaseCache
    ) -> None:
        """Objects a cached read loaded are let go; objects the caller loaded stay."""
        async with cdb.session() as session:
            session.add(Product(id=2, name="desk", price=Decimal(1)))
        async with cdb.session() as session:
            mine = await session.get(Product, 2)
            assert mine is not None
            await cached(session, cache).get(1)
            await cached(session, cache).list_all()
            assert list(session.identity_map.values()) == [mine]


class TestStaleFill:
    async def test_slow_reader_cannot_put_old_data_back(
        self, cdb: Database, cache: BaseCache
    ) -> None:
        """A reader that loaded the row before a committed update does not cache it after."""
        GatedRepository.read = asyncio.Event()
        GatedRepository.release = asyncio.Event()

        async def slow_read() -> ProductOut | None:
            async with cdb.session() as session:
                return await cached(session, cache, GatedRepository).get(1)

        reader = asyncio.create_task(slow_read())
        await GatedRepository.read.wait()
        async with cdb.session() as session:
            await ProductRepository(session).update(1, {"name": "new"})
        GatedRepository.release.set()
        old = await reader
        assert old is not None
        assert old.name == "lamp"
        assert cache.stats.fill_rejected == 1
        fresh = await read(cdb, cache)
        assert fresh is not None
        assert fresh.name == "new"

    async def test_core_delete_during_slow_list_read(self, cdb: Database, cache: BaseCache) -> None:
        """A list loaded before a bulk delete committed is not cached after it."""
        gate = asyncio.Event()
        release = asyncio.Event()

        class SlowList(ProductRepository):
            async def list_all(self, *where: Any, **options: Any) -> list[Product]:
                rows = await super().list_all(*where, **options)
                gate.set()
                await release.wait()
                return rows

        async def slow() -> list[str]:
            async with cdb.session() as session:
                return [p.name for p in await cached(session, cache, SlowList).list_all()]

        reader = asyncio.create_task(slow())
        await gate.wait()
        async with cdb.session() as session:
            await session.execute(delete(Product))
        release.set()
        assert await reader == ["lamp"]
        assert await names(cdb, cache) == []
