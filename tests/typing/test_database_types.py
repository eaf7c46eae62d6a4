"""Static checks of the foundation's types, run by mypy (and imported by pytest)."""

from __future__ import annotations

from typing import assert_type

from sqlalchemy.ext.asyncio import AsyncEngine

from underlay import Database, DatabaseSession


async def session_types(db: Database) -> None:
    assert_type(db.engine, AsyncEngine)
    async with db.session() as session:
        assert_type(session, DatabaseSession)
    async for request_session in db.get_session():
        assert_type(request_session, DatabaseSession)
    assert_type(await db.ping(), bool)


def test_module_imports() -> None:
    """The typing module imports: mypy checks its assertions statically."""
    assert callable(session_types)
