"""Transaction-coupled invalidation: what a transaction wrote is invalidated after it commits.

The cache is one subscriber of the transaction-events seam (`underlay.events`): the seam
collects each transaction's writes (savepoints respected) and awaits `CacheInvalidator`
inside ``commit()`` once the database has committed. Invalidating earlier would let a
reader re-cache the old row before the commit lands; a rollback invalidates nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from sqlalchemy import inspect
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import FromClause

from underlay import events
from underlay.cache._keys import lists_namespace, row_namespace, rows_namespace
from underlay.cache._protocol import Cache

if TYPE_CHECKING:
    from underlay.database import Database

__all__ = ["CacheInvalidator", "attach", "namespaces_of", "session_touches"]


class CacheInvalidator:
    """The observer that bumps the namespaces a committed transaction wrote."""

    __slots__ = ("cache",)

    def __init__(self, cache: Cache) -> None:
        self.cache = cache

    async def after_commit(self, writes: events.TransactionWrites) -> None:
        """Bump every namespace the committed writes touched."""
        names = namespaces_of(writes)
        if names:
            await self.cache.bump_namespace(*names)

    def after_rollback(self, writes: events.TransactionWrites) -> None:
        """Nothing was persisted: nothing to invalidate."""

    def __repr__(self) -> str:
        return f"CacheInvalidator({self.cache!r})"


def namespaces_of(writes: Iterable[events.Write]) -> tuple[str, ...]:
    """Return the cache namespaces ``writes`` invalidate, sorted."""
    names: set[str] = set()
    for write in writes:
        names.update(lists_namespace(table) for table in write.tables)
        if write.mapper is None or write.ids is None:
            names.update(rows_namespace(table) for table in write.tables)
        else:
            names.update(row_namespace(write.mapper, ident) for ident in write.ids)
    return tuple(sorted(names))


def attach(database: Database, cache: Cache | None = None) -> Callable[[], None]:
    """Make ``database``'s sessions invalidate ``cache`` (``database.cache``) after each commit.

    Returns:
        A function that unsubscribes again (the test plugin couples a per-test cache to its
        session-wide database this way).
    """
    cache = cache if cache is not None else database.cache
    if cache is None:
        return lambda: None
    return database.subscribe(CacheInvalidator(cache))


def session_touches(session: Session, tables: Iterable[FromClause]) -> bool:
    """Return whether ``session``'s transaction has written, or will flush, any of ``tables``.

    Such a session sees its own uncommitted rows: it must not read them from the cache, nor
    publish them to it. Runs on every cached read, so the common case (nothing written,
    nothing pending) answers from three emptiness checks without building any collection.
    """
    writes = events.transaction_writes(session)
    if writes is not None and writes.touches(tables):
        return True
    # ``new`` / ``deleted`` build sets on every access: look at the session's own dicts
    # first (pending objects are in neither the identity map nor the transaction's writes).
    if not session._new and not session._deleted and not session.identity_map.check_modified():
        return False
    wanted = set(tables)
    return any(
        not wanted.isdisjoint(inspect(obj).mapper.tables)
        for obj in (*session.new, *session.dirty, *session.deleted)
    )


events.register_cache_observer(CacheInvalidator)
