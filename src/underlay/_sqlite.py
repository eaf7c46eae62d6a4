"""Fewer trips to aiosqlite's thread: what `Database` connects SQLite with.

aiosqlite runs every call on a worker thread; each call is a queue hand-off and a wake-up of
the event loop, which costs more than SQLite itself takes to find a row by key. Through
SQLAlchemy, one ``SELECT`` is four such trips (create a cursor, execute, fetch, close the
cursor), a ``BEGIN`` three, and a session ends with a ``COMMIT`` or ``ROLLBACK`` trip even
when no transaction is open. The connection class here keeps SQLAlchemy's driver adapter and
aiosqlite's thread, and changes only where work happens:

* a cursor is created and closed on the event loop's thread (plain object work, no SQL runs);
* ``execute`` fetches the first rows in the same trip as the statement;
* ``commit`` and ``rollback`` return at once when SQLite has no transaction open.

So a ``SELECT`` is one trip, a ``BEGIN`` one, and a read outside a transaction needs no
``COMMIT`` trip. Calling into the connection from the loop's thread is safe because
SQLAlchemy never uses one connection from two tasks at once, so the worker is idle then
(the connection is opened with ``check_same_thread=False``, as SQLAlchemy does for files).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["install_fast_aiosqlite"]

#: Rows fetched together with the statement; the rest (if any) in further trips.
PREFETCH = 256


class _PrefetchCursor(sqlite3.Cursor):
    """A ``sqlite3`` cursor whose ``execute`` also reads the first rows (on the worker)."""

    prefetched: list[Any]
    exhausted: bool

    def execute(self, sql: str, parameters: Any = (), /) -> _PrefetchCursor:
        self.prefetched, self.exhausted = [], True
        super().execute(sql, parameters)
        if self.description is not None:
            self.prefetched = super().fetchmany(PREFETCH)
            self.exhausted = len(self.prefetched) < PREFETCH
        return self

    def executemany(self, sql: str, parameters: Any, /) -> _PrefetchCursor:
        self.prefetched, self.exhausted = [], True
        super().executemany(sql, parameters)
        return self


def _make_classes(aiosqlite: Any) -> tuple[type[Any], type[Any]]:
    from aiosqlite.context import contextmanager  # noqa: PLC0415 - optional dependency

    class Cursor(aiosqlite.Cursor):  # type: ignore[misc]  # aiosqlite is untyped here
        def __init__(self, conn: Any, cursor: _PrefetchCursor) -> None:
            super().__init__(conn, cursor)
            self._sqlite = cursor
            cursor.prefetched, cursor.exhausted = [], True

        def _take(self, size: int | None) -> list[Any]:
            rows = self._sqlite.prefetched
            if size is None or size >= len(rows):
                self._sqlite.prefetched = []
                return rows
            self._sqlite.prefetched = rows[size:]
            return rows[:size]

        async def fetchone(self) -> Any:
            rows = self._take(1)
            if rows:
                return rows[0]
            return None if self._sqlite.exhausted else await super().fetchone()

        async def fetchmany(self, size: int | None = None) -> list[Any]:
            wanted = self.arraysize if size is None else size
            rows = self._take(wanted)
            if len(rows) < wanted and not self._sqlite.exhausted:
                rows = rows + list(await super().fetchmany(wanted - len(rows)))
            return rows

        async def fetchall(self) -> list[Any]:
            rows = self._take(None)
            if not self._sqlite.exhausted:
                rows = rows + list(await super().fetchall())
            return rows

        async def close(self) -> None:
            self._sqlite.close()

    class Connection(aiosqlite.Connection):  # type: ignore[misc]  # aiosqlite is untyped here
        _sqlite: sqlite3.Connection | None = None

        @contextmanager  # type: ignore[untyped-decorator,unused-ignore]  # awaitable and async-with, like aiosqlite's
        async def cursor(self) -> Any:
            if self._sqlite is None:
                return await super().cursor()
            return Cursor(self, self._sqlite.cursor(_PrefetchCursor))

        async def commit(self) -> None:
            if self._sqlite is not None and not self._sqlite.in_transaction:
                return
            await super().commit()

        async def rollback(self) -> None:
            if self._sqlite is not None and not self._sqlite.in_transaction:
                return
            await super().rollback()

    return Connection, Cursor


_CLASSES: list[tuple[type[Any], type[Any]]] = []


def _connect(database: Any, *args: Any, **kwargs: Any) -> Any:
    import aiosqlite  # noqa: PLC0415 - only on SQLite engines

    if not _CLASSES:
        _CLASSES.append(_make_classes(aiosqlite))
    connection_class = _CLASSES[0][0]
    kwargs["check_same_thread"] = False
    location = database.decode() if isinstance(database, bytes) else str(database)

    def connector() -> sqlite3.Connection:
        raw: sqlite3.Connection = sqlite3.connect(location, *args, **kwargs)
        connection._sqlite = raw
        return raw

    connection = connection_class(connector, 64)
    # as SQLAlchemy does for aiosqlite's own connect(): a pooled connection that is never
    # closed must not keep the interpreter from exiting
    thread = getattr(connection, "_thread", connection)
    thread.daemon = True
    return connection


def install_fast_aiosqlite(engine: AsyncEngine) -> None:
    """Make ``engine`` open its aiosqlite connections with the classes above.

    A ``do_connect`` listener adds SQLAlchemy's ``async_creator_fn`` connect argument, so
    the URL's own arguments (path, ``uri``, timeouts) still apply. An engine given its own
    ``creator`` or ``async_creator`` keeps it.
    """

    @event.listens_for(engine.sync_engine, "do_connect")
    def _use_fast_connection(
        _dialect: Any, _record: Any, _cargs: Iterable[Any], cparams: dict[str, Any]
    ) -> None:
        cparams.setdefault("async_creator_fn", _connect)
