"""CachedRepository keys: canonical ids, loader criteria, schema identity, invalid entries."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel, field_serializer
from sqlalchemy import ForeignKey, MetaData, String, delete
from sqlalchemy.orm import Mapped, mapped_column, relationship, selectinload, with_loader_criteria

from tests.conftest import Backend, reset_schema
from tests.integration.models import new_base
from tests.integration.test_cache_database import cache  # noqa: F401 - the cache fixture
from underlay import Database, InvalidQueryError, SQLAlchemyRepository
from underlay.cache import CachedRepository
from underlay.cache._base import BaseCache
from underlay.testing import count_queries

KeyBase = new_base()


class Account(KeyBase):
    __tablename__ = "key_accounts"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(100))
    tenant: Mapped[int] = mapped_column(default=1)

    notes: Mapped[list[AccountNote]] = relationship(lazy="raise", order_by="AccountNote.id")


class AccountNote(KeyBase):
    __tablename__ = "key_account_notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("key_accounts.id"))
    body: Mapped[str] = mapped_column(String(20))


class Token(KeyBase):
    __tablename__ = "key_tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(String(20))


class AccountRepository(SQLAlchemyRepository[Account]):
    filterable_fields = ("tenant",)


class TokenRepository(SQLAlchemyRepository[Token]):
    pass


class AccountOut(BaseModel):
    id: int
    email: str


class NoteOut(BaseModel):
    body: str


class AccountWithNotes(BaseModel):
    id: int
    notes: list[NoteOut]


class TokenOut(BaseModel):
    id: uuid.UUID
    label: str


def account_view(*, masked: bool) -> type[BaseModel]:
    """Two schemas named AccountView with the same fields; one masks the email."""
    if masked:

        class AccountView(BaseModel):
            id: int
            email: str

            @field_serializer("email")
            def hide(self, value: str) -> str:
                return "***"

        return AccountView

    class AccountView(BaseModel):  # type: ignore[no-redef]  # the point: same name and fields
        id: int
        email: str

    return AccountView


TOKEN = uuid.UUID("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")


@pytest.fixture
def metadata() -> MetaData:
    return KeyBase.metadata


@pytest.fixture
async def kdb(
    backend: Backend,
    metadata: MetaData,
    cache: BaseCache,  # noqa: F811 - the imported fixture
) -> AsyncIterator[Database]:
    """A cached Database with two accounts (tenants 1 and 2), notes and a token."""
    database = Database(backend.url, pool_size=5, max_overflow=5, cache=cache)
    await reset_schema(database)
    await database.create_all(metadata)
    async with database.session() as session:
        session.add_all(
            [
                Account(id=1, email="ada@x.io", tenant=1),
                Account(id=2, email="bob@x.io", tenant=2),
                Token(id=TOKEN, label="t"),
            ]
        )
        await session.flush()
        session.add_all(
            [
                AccountNote(id=1, account_id=1, body="red"),
                AccountNote(id=2, account_id=1, body="blue"),
            ]
        )
    try:
        yield database
    finally:
        await database.dispose()


def accounts(session: Any, store: BaseCache, schema: type[Any] = AccountOut) -> Any:
    return CachedRepository(AccountRepository(session), store, schema=schema)


class TestCanonicalIds:
    async def test_other_spellings_share_the_entry_a_delete_invalidates(
        self,
        kdb: Database,
        cache: BaseCache,  # noqa: F811 - the imported fixture
    ) -> None:
        """get("01") after delete(1) committed is None: the key is the canonical id."""
        for spelling in ("01", "1", (1,), 1):
            async with kdb.session() as session:
                assert await accounts(session, cache).get(spelling) is not None
        async with kdb.session() as session:
            await session.execute(delete(AccountNote))
            await AccountRepository(session).delete(1)
        for spelling in ("01", "1", (1,), 1, "+1"):
            async with kdb.session() as session:
                assert await accounts(session, cache).get(spelling) is None, spelling

    async def test_spellings_that_do_not_fit_are_refused_before_cache_and_sql(
        self,
        kdb: Database,
        cache: BaseCache,  # noqa: F811 - the imported fixture
    ) -> None:
        """get(True), get(1.0), get(" 1") raise InvalidQueryError; no SQL, no cache read."""
        async with kdb.session() as session:
            repository = accounts(session, cache)
            before = (cache.stats.hits, cache.stats.misses)
            for ident in (True, 1.0, " 1", 1.5, None, (1, 2), "\udc80"):
                for call in (repository.get, repository.get_one, repository.invalidate):
                    with count_queries() as counter, pytest.raises(InvalidQueryError):
                        await call(ident)
                    assert counter.statements == []
                with pytest.raises(InvalidQueryError):
                    await repository.get_many([1, ident])
            assert (cache.stats.hits, cache.stats.misses) == before

    async def test_uuid_spellings_share_one_entry(
        self,
        kdb: Database,
        cache: BaseCache,  # noqa: F811 - the imported fixture
    ) -> None:
        """Upper-case and bare-hex UUIDs read the entry; a write to the row invalidates all."""
        spellings: list[Any] = [TOKEN, str(TOKEN).upper(), TOKEN.hex]
        for spelling in spellings:
            async with kdb.session() as session:
                tokens = CachedRepository(TokenRepository(session), cache, schema=TokenOut)
                found = await tokens.get(spelling)
                assert found is not None
                assert found.label == "t"
        assert cache.stats.hits == 2
        async with kdb.session() as session:
            await TokenRepository(session).update(TOKEN, {"label": "u"})
        for spelling in spellings:
            async with kdb.session() as session:
                tokens = CachedRepository(TokenRepository(session), cache, schema=TokenOut)
                found = await tokens.get(spelling)
                assert found is not None
                assert found.label == "u"

    async def test_get_many_keys_results_by_canonical_id(
        self,
        kdb: Database,
        cache: BaseCache,  # noqa: F811 - the imported fixture
    ) -> None:
        """get_many(["1", 2]) returns {1: ..., 2: ...}."""
        async with kdb.session() as session:
            found = await accounts(session, cache).get_many(["1", 2, "3"])
        assert sorted(found) == [1, 2]


class TestLoaderCriteria:
    async def test_with_loader_criteria_is_not_served_an_unscoped_entry(
        self,
        kdb: Database,
        cache: BaseCache,  # noqa: F811 - the imported fixture
    ) -> None:
        """A read scoped to tenant 2 never sees tenant 1's row cached by an unscoped read."""
        scoped = [with_loader_criteria(Account, Account.tenant == 2)]
        other = [with_loader_criteria(Account, Account.tenant == 1)]

        async def call(method: str, *args: Any, **kwargs: Any) -> Any:
            # a session per read: each fill is published (also on SQLite)
            async with kdb.session() as session:
                return await getattr(accounts(session, cache), method)(*args, **kwargs)

        assert await call("get", 1) is not None
        assert await call("get", 1, options=other) is not None
        assert len(await call("list_all")) == 2
        assert len(await call("list_all", options=other)) == 1
        assert list(await call("get_many", [1, 2], options=other)) == [1]
        assert await call("get", 1, options=scoped) is None
        assert [a.id for a in await call("list_all", options=scoped)] == [2]
        assert list(await call("get_many", [1, 2], options=scoped)) == [2]

    async def test_relationship_criteria_are_not_served_other_children(
        self,
        kdb: Database,
        cache: BaseCache,  # noqa: F811 - the imported fixture
    ) -> None:
        """selectinload(notes.and_(blue)) after a cached (red) read returns the blue note."""

        def only(body: str) -> list[Any]:
            return [selectinload(Account.notes.and_(AccountNote.body == body))]

        async with kdb.session() as session:
            red = await accounts(session, cache, AccountWithNotes).get(1, options=only("red"))
            assert [n.body for n in red.notes] == ["red"]
        async with kdb.session() as session:
            blue = await accounts(session, cache, AccountWithNotes).get(1, options=only("blue"))
            assert [n.body for n in blue.notes] == ["blue"]
            listed = await accounts(session, cache, AccountWithNotes).list_all(
                Account.id == 1, options=only("blue")
            )
            assert [n.body for n in listed[0].notes] == ["blue"]


class TestSchemaIdentity:
    async def test_same_name_and_fields_never_share_entries(
        self,
        kdb: Database,
        cache: BaseCache,  # noqa: F811 - the imported fixture
    ) -> None:
        """A masking AccountView filled first is not served to an unmasked AccountView."""
        masked, plain = account_view(masked=True), account_view(masked=False)
        async with kdb.session() as session:
            assert (await accounts(session, cache, masked).get(1)).email == "***"
            assert (await accounts(session, cache, masked).list_all())[0].email == "***"
        async with kdb.session() as session:
            assert (await accounts(session, cache, plain).get(1)).email == "ada@x.io"
            assert (await accounts(session, cache, plain).list_all())[0].email == "ada@x.io"
            assert (await accounts(session, cache, plain).get_many([1]))[1].email == "ada@x.io"


class Spy:
    """Records the keys and namespaces CachedRepository asks the cache to load."""

    def __init__(self, store: BaseCache) -> None:
        self.entries: dict[str, Any] = {}
        self._load, self._load_many = store.load, store.load_many

    async def load(self, key: str, loader: Any, **kwargs: Any) -> Any:
        self.entries[key] = kwargs.get("namespaces", ())
        return await self._load(key, loader, **kwargs)

    async def load_many(self, entries: dict[str, Any], loader: Any, **kwargs: Any) -> Any:
        self.entries.update(entries)
        return await self._load_many(entries, loader, **kwargs)


class TestInvalidEntries:
    async def test_entry_failing_the_schema_is_a_miss_and_is_replaced(
        self,
        kdb: Database,
        cache: BaseCache,  # noqa: F811 - the imported fixture
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """get and get_many treat an entry the schema refuses as a miss and replace it."""
        spy = Spy(cache)
        monkeypatch.setattr(cache, "load", spy.load)
        monkeypatch.setattr(cache, "load_many", spy.load_many)
        async with kdb.session() as session:
            await accounts(session, cache).get(2)
        ((key, namespaces),) = spy.entries.items()
        bad = {"id": "not a number", "email": 5}
        for read in ("get", "get_many"):
            await cache.set(key, bad, namespaces=namespaces)
            async with kdb.session() as session:
                repository = accounts(session, cache)
                if read == "get":
                    found = await repository.get(2)
                else:
                    found = (await repository.get_many([2]))[2]
            assert found is not None
            assert found.email == "bob@x.io"
            assert await cache.get(key) != bad, read

    async def test_invalid_list_entry_is_a_miss(
        self,
        kdb: Database,
        cache: BaseCache,  # noqa: F811 - the imported fixture
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A cached list holding a payload the schema refuses is read again."""
        spy = Spy(cache)
        monkeypatch.setattr(cache, "load", spy.load)
        async with kdb.session() as session:
            await accounts(session, cache).list_all(order_by=Account.id)
        ((key, namespaces),) = spy.entries.items()
        await cache.set(key, [{"id": 1}], namespaces=namespaces)
        async with kdb.session() as session:
            listed = await accounts(session, cache).list_all(order_by=Account.id)
        assert [a.email for a in listed] == ["ada@x.io", "bob@x.io"]
        assert await cache.get(key) != [{"id": 1}]
