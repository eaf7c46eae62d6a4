"""Relationship loads and the tenant in effect when they run.

The tenant criterion's parameter is read when a statement executes, so a lazy load is
filtered by the tenant of the context it runs in, and inside `all_tenants()` it sees every
tenant's rows, even for an object first read in one tenant's context.
"""

from __future__ import annotations

import pytest
from sqlalchemy import MetaData

from tests.integration.test_tenancy import Doc, DocRepository, Note, TenantBase, tdb
from underlay import Database, all_tenants, tenant_context

__all__ = ["tdb"]  # the fixture, shared with test_tenancy


@pytest.fixture
def metadata() -> MetaData:
    return TenantBase.metadata


@pytest.fixture
async def crossed(tdb: Database) -> Database:
    """Doc 1 (tenant a) also has a note of tenant b, 99."""
    with tenant_context("b"):
        async with tdb.session() as session:
            session.add(Note(id=99, doc_id=1, body="b's note on a's doc"))
    return tdb


async def _note_ids(db: Database, read_in: str, load_in: str | None) -> list[int]:
    async with db.session() as session:
        with tenant_context(read_in):
            doc = await DocRepository(session).get(1)
            assert doc is not None
        if load_in is None:
            with all_tenants():
                notes = await doc.awaitable_attrs.notes
        else:
            with tenant_context(load_in):
                notes = await doc.awaitable_attrs.notes
        return sorted(note.id for note in notes)


class TestLazyLoads:
    async def test_in_the_same_tenant(self, crossed: Database) -> None:
        assert await _note_ids(crossed, "a", "a") == [1]

    async def test_in_another_tenant(self, crossed: Database) -> None:
        """The load runs in b's context: it sees b's rows only."""
        assert await _note_ids(crossed, "a", "b") == [99]

    async def test_inside_all_tenants(self, crossed: Database) -> None:
        """Inside all_tenants() the load sees every tenant, as every read there does."""
        assert await _note_ids(crossed, "a", None) == [1, 99]

    async def test_without_a_tenant(self, crossed: Database) -> None:
        """A load with no tenant set is refused, like any first query without one."""
        from underlay import TenantRequiredError

        async with crossed.session() as session:
            with tenant_context("a"):
                doc = await session.get(Doc, 1)
                assert doc is not None
            with pytest.raises(TenantRequiredError):
                await doc.awaitable_attrs.notes
