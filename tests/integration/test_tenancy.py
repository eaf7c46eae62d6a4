"""Tenancy on every path: two tenants with interleaved rows, tenant A never sees tenant B.

Each read and write path is a test of its own, listed in ``READ_PATHS`` / ``WRITE_PATHS``; a
test checks that the lists and the tests agree, so a new path without a test is visible.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import BaseModel
from sqlalchemy import (
    ForeignKey,
    MetaData,
    String,
    UniqueConstraint,
    delete,
    func,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy.orm import Mapped, joinedload, mapped_column, relationship, selectinload

from tests.conftest import Backend
from tests.integration.models import new_base
from underlay import (
    AuditMixin,
    Database,
    DuplicateError,
    InvalidQueryError,
    NotFoundError,
    SoftDeleteMixin,
    SQLAlchemyRepository,
    TenantMixin,
    TenantRequiredError,
    UUIDv7Mixin,
    VersionedMixin,
    actor_context,
    all_tenants,
    tenant_context,
)
from underlay.cache import CachedRepository, MemoryCache

TenantBase = new_base()


class Folder(TenantBase):
    """Not a tenant model: reaches tenant rows only through joins."""

    __tablename__ = "folders"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


class Doc(TenantMixin, AuditMixin, SoftDeleteMixin, VersionedMixin, TenantBase):
    __tablename__ = "docs"
    __table_args__ = (UniqueConstraint("tenant_id", "slug"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(50))
    code: Mapped[str] = mapped_column(String(50), unique=True)  # unique across tenants
    title: Mapped[str] = mapped_column(String(100), default="")
    folder_id: Mapped[int | None] = mapped_column(ForeignKey("folders.id"), default=None)

    notes: Mapped[list[Note]] = relationship(back_populates="doc", lazy="select")


class Note(TenantMixin, TenantBase):
    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    doc_id: Mapped[int] = mapped_column(ForeignKey("docs.id"))
    body: Mapped[str] = mapped_column(String(100))

    doc: Mapped[Doc] = relationship(back_populates="notes")


class Ticket(UUIDv7Mixin, TenantBase):
    __tablename__ = "tickets"

    title: Mapped[str] = mapped_column(String(50))


class DocRepository(SQLAlchemyRepository[Doc]):
    sortable_fields = ("id", "slug")
    filterable_fields = ("slug",)


class TicketRepository(SQLAlchemyRepository[Ticket]):
    sortable_fields = ("id",)


@pytest.fixture
def metadata() -> MetaData:
    return TenantBase.metadata


#: Tenant "a" owns odd ids, tenant "b" even ids, so their rows interleave.
A_IDS = [1, 3, 5]
B_IDS = [2, 4, 6]


@pytest.fixture
async def tdb(db: Database) -> Database:
    """The database with one folder and three docs (each with a note) per tenant."""
    async with db.session() as session:
        session.add(Folder(id=1, name="shared"))
    for tenant, ids in (("a", A_IDS), ("b", B_IDS)):
        with tenant_context(tenant), actor_context(f"{tenant}-admin"):
            async with db.session() as session:
                for i in ids:
                    session.add(Doc(id=i, slug=f"s{i}", code=f"c{i}", folder_id=1))
                    session.add(Note(id=i, doc_id=i, body=f"note {i}"))
    return db


async def _ids(db: Database, statement: Any) -> list[int]:
    async with db.session() as session:
        return sorted((await session.execute(statement)).scalars().all())


READ_PATHS = (
    "get",
    "identity_map_get",
    "select",
    "join_on_clause",
    "selectin_load",
    "joined_load",
    "lazy_load",
    "subquery",
    "cte",
    "union",
    "count",
    "exists",
    "repository_reads",
    "repository_paginate",
)
WRITE_PATHS = (
    "orm_add",
    "orm_add_other_tenant",
    "insert_many",
    "insert_many_copy",
    "upsert",
    "upsert_conflict_other_tenant",
    "update",
    "orm_update_statement",
    "orm_delete_statement",
    "repository_delete",
    "orm_change_tenant",
)


def test_every_path_has_a_test() -> None:
    """Each listed path has a test named after it in this module."""
    names = set(globals()["TestReadPaths"].__dict__) | set(globals()["TestWritePaths"].__dict__)
    missing = [path for path in (*READ_PATHS, *WRITE_PATHS) if f"test_{path}" not in names]
    assert missing == []


class TestReadPaths:
    async def test_get(self, tdb: Database) -> None:
        """get of another tenant's id is None; of one's own, the row."""
        with tenant_context("a"):
            async with tdb.session() as session:
                assert await session.get(Doc, 2) is None
                assert (await session.get(Doc, 1)) is not None

    async def test_identity_map_get(self, tdb: Database) -> None:
        """A row of B already in the session's identity map is not returned to A."""
        async with tdb.session() as session:
            with all_tenants():
                assert await session.get(Doc, 2) is not None
            with tenant_context("a"):
                assert await session.get(Doc, 2) is None

    async def test_select(self, tdb: Database) -> None:
        """A plain select returns only the tenant's rows."""
        with tenant_context("a"):
            assert await _ids(tdb, select(Doc.id)) == A_IDS
        with tenant_context("b"):
            assert await _ids(tdb, select(Doc.id)) == B_IDS

    async def test_join_on_clause(self, tdb: Database) -> None:
        """Joining from a non-tenant model to a tenant one filters in the join."""
        with tenant_context("a"):
            statement = select(Doc.id).select_from(Folder).join(Doc, Doc.folder_id == Folder.id)
            assert await _ids(tdb, statement) == A_IDS

    async def test_selectin_load(self, tdb: Database) -> None:
        """selectinload of children shows only the tenant's children."""
        with tenant_context("a"):
            async with tdb.session() as session:
                docs = (await session.scalars(select(Doc).options(selectinload(Doc.notes)))).all()
                assert sorted(n.id for d in docs for n in d.notes) == A_IDS

    async def test_joined_load(self, tdb: Database) -> None:
        """joinedload of children shows only the tenant's children."""
        with tenant_context("b"):
            async with tdb.session() as session:
                docs = (
                    (await session.scalars(select(Doc).options(joinedload(Doc.notes))))
                    .unique()
                    .all()
                )
                assert sorted(n.id for d in docs for n in d.notes) == B_IDS

    async def test_lazy_load(self, tdb: Database) -> None:
        """A lazy load from a row of A shows A's children only, and needs a tenant."""
        with tenant_context("a"):
            async with tdb.session() as session:
                doc = await session.get(Doc, 1)
                assert doc is not None
                notes = await doc.awaitable_attrs.notes
                assert [n.id for n in notes] == [1]

    async def test_subquery(self, tdb: Database) -> None:
        """A tenant entity inside a subquery is filtered there."""
        with tenant_context("a"):
            inner = select(Doc.id).scalar_subquery()
            statement = select(Note.id).where(Note.doc_id.in_(inner))
            assert await _ids(tdb, statement) == A_IDS

    async def test_cte(self, tdb: Database) -> None:
        """A CTE over a tenant entity is filtered."""
        with tenant_context("b"):
            cte = select(Doc.id.label("id")).cte("tenant_docs")
            assert await _ids(tdb, select(cte.c.id)) == B_IDS

    async def test_union(self, tdb: Database) -> None:
        """Both sides of a union are filtered."""
        with tenant_context("a"):
            statement = union_all(select(Doc.id), select(Note.id))
            async with tdb.session() as session:
                rows = sorted((await session.execute(statement)).scalars().all())
            assert rows == sorted(A_IDS * 2)

    async def test_count(self, tdb: Database) -> None:
        """count(*) over a tenant model counts the tenant's rows."""
        with tenant_context("a"):
            async with tdb.session() as session:
                assert await session.scalar(select(func.count()).select_from(Doc)) == 3
                assert await DocRepository(session).count() == 3

    async def test_exists(self, tdb: Database) -> None:
        """exists() is false for another tenant's row."""
        with tenant_context("a"):
            async with tdb.session() as session:
                assert (
                    await session.scalar(select(select(Doc.id).where(Doc.id == 2).exists()))
                    is False
                )
                assert await DocRepository(session).exists(Doc.id == 2) is False
                assert await DocRepository(session).exists(Doc.id == 1) is True

    async def test_repository_reads(self, tdb: Database) -> None:
        """list_all, get_one and page see only the tenant's rows."""
        with tenant_context("b"):
            async with tdb.session() as session:
                repo = DocRepository(session)
                assert [d.id for d in await repo.list_all(order_by="id")] == B_IDS
                with pytest.raises(NotFoundError):
                    await repo.get_one(1)
                page = await repo.page(order_by="id", size=2)
                assert page.total == 3
                assert [d.id for d in page.items] == B_IDS[:2]

    async def test_repository_paginate(self, tdb: Database) -> None:
        """Keyset pages walk the tenant's rows only."""
        with tenant_context("a"):
            async with tdb.session() as session:
                repo = DocRepository(session)
                first = await repo.paginate(order_by="id", limit=2)
                second = await repo.paginate(order_by="id", limit=2, after=first.next_cursor)
                assert [d.id for d in (*first.items, *second.items)] == A_IDS


class TestWritePaths:
    async def test_orm_add(self, tdb: Database) -> None:
        """A new row is stamped with the current tenant and actor."""
        with tenant_context("a"), actor_context("ada"):
            async with tdb.session() as session:
                session.add(Doc(id=7, slug="s7", code="c7"))
            async with tdb.session() as session:
                doc = await session.get(Doc, 7)
                assert doc is not None
                assert (doc.tenant_id, doc.created_by, doc.updated_by) == ("a", "ada", "ada")

    async def test_orm_add_other_tenant(self, tdb: Database) -> None:
        """Adding a row that names another tenant is refused before any SQL."""
        with tenant_context("a"), pytest.raises(InvalidQueryError, match="tenant"):
            async with tdb.session() as session:
                session.add(Doc(id=7, slug="s7", code="c7", tenant_id="b"))
        with all_tenants():
            assert await _ids(tdb, select(Doc.id).where(Doc.id == 7)) == []

    async def test_insert_many(self, tdb: Database) -> None:
        """insert_many stamps tenant and actor; rows naming tenant_id are refused."""
        with tenant_context("b"), actor_context("bob"):
            async with tdb.session() as session:
                repo = DocRepository(session)
                await repo.insert_many(
                    [
                        {"id": 8, "slug": "s8", "code": "c8"},
                        {"id": 10, "slug": "s10", "code": "c10"},
                    ],
                    method="values",
                )
                with pytest.raises(InvalidQueryError, match="tenant_id"):
                    await repo.insert_many([{"id": 12, "slug": "x", "code": "x", "tenant_id": "a"}])
            async with tdb.session() as session:
                docs = await DocRepository(session).list_all(Doc.id.in_([8, 10]))
                assert {(d.tenant_id, d.created_by) for d in docs} == {("b", "bob")}

    async def test_insert_many_copy(self, tdb: Database, backend: Backend) -> None:
        """The COPY path stamps the tenant and actor too."""
        if not backend.is_postgres:
            pytest.skip("COPY is PostgreSQL's")
        with tenant_context("a"), actor_context("ada"):
            async with tdb.session() as session:
                await DocRepository(session).insert_many(
                    [{"id": 100 + i, "slug": f"k{i}", "code": f"k{i}"} for i in range(50)],
                    method="copy",
                )
        with all_tenants():
            async with tdb.session() as session:
                rows = (
                    await session.execute(
                        select(Doc.tenant_id, Doc.created_by).where(Doc.id >= 100).distinct()
                    )
                ).all()
        assert [tuple(row) for row in rows] == [("a", "ada")]

    async def test_upsert(self, tdb: Database) -> None:
        """upsert stamps the tenant; its update branch stamps updated_by."""
        with tenant_context("a"), actor_context("ann"):
            async with tdb.session() as session:
                repo = DocRepository(session)
                doc = await repo.upsert(
                    {"slug": "s1", "code": "c1", "title": "new"}, conflict_on=["code"]
                )
                assert (doc.id, doc.title, doc.updated_by, doc.created_by) == (
                    1,
                    "new",
                    "ann",
                    "a-admin",
                )
                fresh = await repo.upsert(
                    {"id": 9, "slug": "s9", "code": "c9"}, conflict_on=["code"]
                )
                assert (fresh.tenant_id, fresh.created_by) == ("a", "ann")

    async def test_upsert_conflict_other_tenant(self, tdb: Database) -> None:
        """An upsert whose key is another tenant's row changes nothing and is refused."""
        with tenant_context("a"):
            async with tdb.session() as session:
                with pytest.raises(DuplicateError, match="another tenant"):
                    await DocRepository(session).upsert(
                        {"id": 50, "slug": "s50", "code": "c2", "title": "stolen"},
                        conflict_on=["code"],
                    )
        with all_tenants():
            async with tdb.session() as session:
                doc = await session.get(Doc, 2)
                assert doc is not None
                assert (doc.tenant_id, doc.title) == ("b", "")

    async def test_update(self, tdb: Database) -> None:
        """update of another tenant's id is NotFoundError; of one's own, stamped."""
        with tenant_context("a"), actor_context("al"):
            async with tdb.session() as session:
                repo = DocRepository(session)
                with pytest.raises(NotFoundError):
                    await repo.update(2, {"title": "x"})
                doc = await repo.update(1, {"title": "mine"})
                assert (doc.title, doc.updated_by) == ("mine", "al")

    async def test_orm_update_statement(self, tdb: Database) -> None:
        """An ORM UPDATE without a WHERE touches the tenant's rows only."""
        with tenant_context("b"):
            async with tdb.session() as session:
                result = await session.execute(update(Doc).values(title="bulk"))
                assert result.rowcount == 3
        with all_tenants():
            titles = await _titles(tdb)
        assert titles == {1: "", 2: "bulk", 3: "", 4: "bulk", 5: "", 6: "bulk"}

    async def test_orm_delete_statement(self, tdb: Database) -> None:
        """An ORM DELETE without a WHERE deletes the tenant's rows only."""
        with tenant_context("a"):
            async with tdb.session() as session:
                await session.execute(delete(Note))
        with all_tenants():
            assert await _ids(tdb, select(Note.id)) == B_IDS

    async def test_repository_delete(self, tdb: Database) -> None:
        """delete of another tenant's id is NotFoundError; a soft delete stamps deleted_by."""
        with tenant_context("a"), actor_context("al"):
            async with tdb.session() as session:
                repo = DocRepository(session)
                with pytest.raises(NotFoundError):
                    await repo.delete(2)
                await repo.delete(1)
                assert await repo.delete_where(Doc.id.in_([2, 3])) == 1
            async with tdb.session() as session:
                gone = await session.get(Doc, 1, execution_options={"include_deleted": True})
                assert gone is not None
                assert gone.deleted_by == "al"
        with all_tenants():
            async with tdb.session() as session:
                assert (await session.get(Doc, 2)) is not None

    async def test_orm_change_tenant(self, tdb: Database) -> None:
        """Moving a loaded row to another tenant is refused."""
        with tenant_context("a"), pytest.raises(InvalidQueryError, match="tenant_id"):
            async with tdb.session() as session:
                doc = await session.get(Doc, 1)
                assert doc is not None
                doc.tenant_id = "b"


async def _titles(db: Database) -> dict[int, str]:
    async with db.session() as session:
        return {row.id: row.title for row in await session.execute(select(Doc.id, Doc.title))}


class TestNoTenant:
    async def test_first_query_raises(self, tdb: Database) -> None:
        """A task that forgot the tenant gets TenantRequiredError, not all tenants."""
        async with tdb.session() as session:
            with pytest.raises(TenantRequiredError):
                await session.get(Doc, 1)
            with pytest.raises(TenantRequiredError):
                await session.execute(select(Note))
            with pytest.raises(TenantRequiredError):
                await DocRepository(session).count()

    async def test_writes_raise(self, tdb: Database) -> None:
        """Adding or bulk-inserting a tenant row without a tenant raises."""
        with pytest.raises(TenantRequiredError):
            async with tdb.session() as session:
                session.add(Doc(id=20, slug="x", code="x"))
        with pytest.raises(TenantRequiredError):
            async with tdb.session() as session:
                await DocRepository(session).insert_many([{"id": 21, "slug": "y", "code": "y"}])

    async def test_join_to_tenant_model_raises(self, tdb: Database) -> None:
        """A tenant model reached only through a join is refused without a tenant too."""
        statement = select(Folder.id).join(Doc, Doc.folder_id == Folder.id)
        with pytest.raises(TenantRequiredError):
            await _ids(tdb, statement)

    async def test_non_tenant_models_need_no_tenant(self, tdb: Database) -> None:
        """Models without TenantMixin work outside any tenant context."""
        assert await _ids(tdb, select(Folder.id)) == [1]

    async def test_all_tenants_sees_everything(self, tdb: Database) -> None:
        """all_tenants() is the explicit escape hatch."""
        with all_tenants():
            assert await _ids(tdb, select(Doc.id)) == sorted(A_IDS + B_IDS)

    def test_bad_tenant_refused(self) -> None:
        """An empty or oversized tenant id is an InvalidQueryError."""
        for bad in ("", "x" * 65, "a\x00b"):
            with pytest.raises(InvalidQueryError), tenant_context(bad):
                pass


class TestUUIDv7Keys:
    async def test_keyset_pagination_over_uuid7(self, db: Database) -> None:
        """UUIDv7 keys sort by creation on both backends; keyset pages follow that order."""
        async with db.session() as session:
            created = []
            for number in range(7):
                ticket = Ticket(title=f"t{number}")
                session.add(ticket)
                await session.flush()
                created.append(ticket.id)
        assert all(isinstance(i, uuid.UUID) and i.version == 7 for i in created)
        assert created == sorted(created)
        async with db.session() as session:
            repo = TicketRepository(session)
            seen: list[uuid.UUID] = []
            after = None
            while True:
                page = await repo.paginate(order_by="id", limit=3, after=after)
                seen.extend(t.id for t in page.items)
                if not page.has_more:
                    break
                after = page.next_cursor
            assert seen == created
            assert (await session.get(Ticket, created[3])).title == "t3"  # type: ignore[union-attr]


@pytest.mark.no_pgbouncer  # logs in as a role of its own, which PgBouncer does not know
class TestRowLevelSecurity:
    async def test_raw_sql_cannot_cross_tenants(self, tdb: Database, backend: Backend) -> None:
        """With RLS and an ordinary role, raw SQL on a session sees and writes one tenant."""
        if not backend.is_postgres:
            pytest.skip("row-level security is PostgreSQL's")
        from sqlalchemy.engine import make_url

        from underlay.tenancy import tenant_rls_statements

        role = f"tenant_app_{uuid.uuid4().hex[:8]}"
        async with tdb.engine.begin() as conn:
            await conn.execute(text(f'CREATE ROLE "{role}" LOGIN'))
            await conn.execute(text(f'GRANT USAGE ON SCHEMA public TO "{role}"'))
            for table in ("docs", "notes", "folders"):
                await conn.execute(
                    text(f'GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO "{role}"')
                )
            for table in ("docs", "notes"):
                for statement in tenant_rls_statements(table):
                    await conn.execute(text(statement))
        app = Database(make_url(backend.url).set(username=role), tenant_rls=True)
        try:
            with tenant_context("a"):
                async with app.session() as session:
                    rows = (
                        await session.execute(text("SELECT id FROM docs ORDER BY id"))
                    ).scalars()
                    assert list(rows) == A_IDS
                with pytest.raises(Exception, match="row-level security"):
                    async with app.session() as session:
                        await session.execute(
                            text(
                                "INSERT INTO docs (id, tenant_id, slug, code, title, version) "
                                "VALUES (99, 'b', 'z', 'z', '', 1)"
                            )
                        )
            with all_tenants():
                async with app.session() as session:
                    count = await session.scalar(text("SELECT count(*) FROM docs"))
                    assert count == 6
            async with app.session() as session:
                # no tenant: the policy compares with an empty setting and matches nothing
                assert await session.scalar(text("SELECT count(*) FROM docs")) == 0
        finally:
            await app.dispose()
            async with tdb.engine.begin() as conn:
                await conn.execute(text(f'DROP OWNED BY "{role}"'))
                await conn.execute(text(f'DROP ROLE "{role}"'))


class DocOut(BaseModel):
    id: int
    tenant_id: str
    title: str


class TestCache:
    async def test_cached_reads_never_cross_tenants(self, tdb: Database) -> None:
        """A row cached for tenant A is never served to B, nor to a task without a tenant."""
        cache = MemoryCache()
        cached_db = Database(tdb.url, cache=cache)
        try:
            with tenant_context("a"):
                async with cached_db.session() as session:
                    repo = CachedRepository(DocRepository(session), cache, schema=DocOut)
                    assert (await repo.get(1)) is not None  # filled for tenant a
                    assert [d.id for d in await repo.list_all()] == A_IDS
            with tenant_context("b"):
                async with cached_db.session() as session:
                    repo = CachedRepository(DocRepository(session), cache, schema=DocOut)
                    assert await repo.get(1) is None
                    assert [d.id for d in await repo.list_all()] == B_IDS
            async with cached_db.session() as session:
                repo = CachedRepository(DocRepository(session), cache, schema=DocOut)
                with pytest.raises(TenantRequiredError):
                    await repo.get(1)
                with pytest.raises(TenantRequiredError):
                    await repo.list_all()
        finally:
            await cached_db.dispose()
