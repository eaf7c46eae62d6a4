"""The per-request session dependency whose commit runs before the response is sent."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import Depends

from underlay.database import Database, DatabaseSession

__all__ = ["session_dependency"]


def session_dependency(db: Database) -> Any:
    """Return a FastAPI dependency giving each request a session that commits in time.

    The session commits when the path operation function returns, *before* FastAPI sends
    the response, and rolls back when it raises. A commit that fails (a duplicate, a stale
    version, a serialization failure, a lost connection) therefore raises into FastAPI's
    exception handling and becomes an error response (see `install`), never a 2xx for a
    write that did not happen. It uses ``Depends(..., scope="function")`` (FastAPI 0.121
    and later, which the ``fastapi`` extra requires). The plain ``Depends(db.get_session)``
    commits after the response has been sent.

    Because the commit happens before the response is built, return values are serialised
    from committed objects; sessions never expire on commit, so reading their loaded
    attributes needs no IO. Dependencies with ``scope="request"`` cannot depend on it.

    Args:
        db: The application's `Database`.

    Returns:
        The ``Depends(...)`` marker; use it as
        ``SessionDep = Annotated[AsyncSession, session_dependency(db)]``.

    Example:
        >>> from typing import Annotated
        >>> from sqlalchemy.ext.asyncio import AsyncSession
        >>> db = Database("sqlite+aiosqlite:///:memory:")
        >>> SessionDep = Annotated[AsyncSession, session_dependency(db)]
    """

    async def underlay_session() -> AsyncIterator[DatabaseSession]:
        async with db.session() as session:
            yield session

    return Depends(underlay_session, scope="function")
