"""The :class:`Database`: async engine, session factory and transaction boundaries."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from uuid import uuid4

from sqlalchemy import MetaData, event, text
from sqlalchemy.engine import URL, ExceptionContext, make_url
from sqlalchemy.exc import DisconnectionError, SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session

from underlay._imports import DRIVER_EXTRAS, require
from underlay.exceptions import ConnectionLostError, translate_error
from underlay.models._soft_delete import LiveGetSession, enable_soft_delete
from underlay.models._versioning import VersionCheckedSession, enable_versioning

if TYPE_CHECKING:
    from underlay.cache import Cache

__all__ = [
    "AFTER_COMMIT_KEY",
    "WRITES_KEY",
    "Database",
    "DatabaseSession",
    "call_after_commit",
    "record_write",
]

logger = logging.getLogger("underlay.database")

#: ``Session.info`` keys: callbacks waiting for the transaction to commit, and callbacks due.
AFTER_COMMIT_KEY = "underlay.after_commit"
_DUE_KEY = "underlay.after_commit.due"

_ASYNC_DRIVERS = {"postgresql": "asyncpg", "sqlite": "aiosqlite"}


def call_after_commit(
    session: Session | AsyncSession, callback: Callable[[], Awaitable[None]]
) -> None:
    """Schedule ``callback`` to be awaited after the current transaction commits.

    The callback runs inside ``await session.commit()`` (and so before a
    :meth:`Database.session` block returns), once the database has committed. A rollback of
    the transaction discards it. Exceptions it raises are logged, never raised: the commit
    already happened. Only sessions made by a :class:`Database` run these callbacks.

    Args:
        session: The session (async, or its ``sync_session`` inside an event hook).
        callback: A zero-argument coroutine function.
    """
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    sync.info.setdefault(AFTER_COMMIT_KEY, []).append(callback)


#: ``Session.info`` key listing writes made outside the ORM (see :func:`record_write`).
WRITES_KEY = "underlay.writes"


def record_write(
    session: Session | AsyncSession, model: type[Any], ids: Iterable[Any] | None = None
) -> None:
    """Record that this transaction wrote rows of ``model`` without the ORM seeing it.

    Writes through ``session.execute`` and ``flush`` are observed by SQLAlchemy's events. A
    write on the raw driver connection (for example a COPY) is not: record it here so
    listeners such as the cache invalidation see it. ``ids=None`` means "any row".

    Args:
        session: The session whose transaction made the write.
        model: The mapped class whose table was written.
        ids: Primary keys of the written rows, when known.
    """
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    sync.info.setdefault(WRITES_KEY, []).append((model, None if ids is None else list(ids)))


def _on_commit(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a released savepoint: the outer transaction may still roll back
    pending = session.info.pop(AFTER_COMMIT_KEY, None)
    if pending:
        session.info.setdefault(_DUE_KEY, []).extend(pending)


def _on_rollback(session: Session) -> None:
    if not session.in_nested_transaction():
        session.info.pop(AFTER_COMMIT_KEY, None)


class DatabaseSession(AsyncSession):
    """The ``AsyncSession`` that :class:`Database` hands out.

    It behaves like ``AsyncSession`` and adds two things: ORM errors at ``flush`` and
    ``commit`` leave as underlay errors (driver errors already do, for any statement), and
    work scheduled with :func:`call_after_commit` is awaited before ``commit()`` returns.
    """

    async def flush(self, objects: Any = None) -> None:
        """Flush pending changes, translating ORM errors such as a stale version."""
        try:
            await super().flush(objects)
        except SQLAlchemyError as exc:
            raise _translated(exc, self.bind) from exc

    async def commit(self) -> None:
        """Commit, then await the callbacks scheduled for after this commit.

        Raises:
            ConnectionLostError: The connection broke; ``outcome_unknown`` is true when it
                broke during ``COMMIT`` itself (the server may have committed).
        """
        # flushed first: a connection lost while flushing certainly committed nothing
        await self.flush()
        try:
            await super().commit()
        except ConnectionLostError as exc:
            raise ConnectionLostError(outcome_unknown=True) from exc
        except SQLAlchemyError as exc:
            error = _translated(exc, self.bind)
            if isinstance(error, ConnectionLostError):
                raise ConnectionLostError(outcome_unknown=True) from exc
            raise error from exc
        await self.run_after_commit()

    async def close(self) -> None:
        """Close the session, first awaiting callbacks of a commit made via ``begin()``."""
        try:
            await self.run_after_commit()
        finally:
            await super().close()

    async def run_after_commit(self) -> None:
        """Await the callbacks due after the last commit, logging (not raising) failures."""
        callbacks = self.sync_session.info.pop(_DUE_KEY, None)
        for callback in callbacks or ():
            try:
                await callback()
            except Exception:
                logger.exception("after-commit callback %r failed", callback)


def _translated(exc: SQLAlchemyError, bind: Any = None) -> BaseException:
    return translate_error(exc, pool=getattr(bind, "pool", None)) or exc


class Database:
    """An async engine and the session factory to go with it.

    Args:
        url: A SQLAlchemy URL. ``postgresql://`` and ``sqlite://`` URLs without a driver get
            the async one (asyncpg, aiosqlite).
        echo: Log every statement.
        pool_size: Connections kept open in the pool (not used for in-memory SQLite).
        max_overflow: Extra connections allowed beyond ``pool_size`` under load.
        pool_timeout: Seconds to wait for a free connection before failing.
        pool_recycle: Seconds after which a connection is replaced; ``-1`` never.
        pool_pre_ping: Test a connection before handing it out, replacing dead ones. Only a
            connection that sat in the pool for ``pre_ping_idle`` seconds or more is tested:
            one returned moments ago was just seen working, and pinging it on every
            checkout would cost a round trip per session.
        pre_ping_idle: Seconds a pooled connection must have been idle before it is pinged.
            ``0`` pings on every checkout.
        cache: A :class:`underlay.cache.Cache` to keep coherent with this database's commits.
        pgbouncer: Make asyncpg work behind PgBouncer in transaction mode (no
            server-side prepared statement cache, unique statement names).
        sqlite_busy_timeout: Milliseconds SQLite waits for a lock before failing.
        **engine_options: Passed to :func:`sqlalchemy.ext.asyncio.create_async_engine`.

    Example:
        >>> import asyncio
        >>> async def main() -> int:
        ...     async with Database("sqlite+aiosqlite:///:memory:") as db:
        ...         async with db.session() as session:
        ...             return (await session.execute(text("select 41 + 1"))).scalar_one()
        >>> asyncio.run(main())
        42
    """

    def __init__(
        self,
        url: str | URL,
        *,
        echo: bool = False,
        pool_size: int = 5,
        max_overflow: int = 10,
        pool_timeout: float = 30,
        pool_recycle: int = 1800,
        pool_pre_ping: bool = True,
        pre_ping_idle: float = 0.5,
        cache: Cache | None = None,
        pgbouncer: bool = False,
        sqlite_busy_timeout: int = 5000,
        **engine_options: Any,
    ) -> None:
        self.url = _async_url(url)
        self.cache = cache
        options: dict[str, Any] = {"echo": echo}
        backend = self.url.get_backend_name()
        in_memory = backend == "sqlite" and self.url.database in (None, "", ":memory:")
        # A caller-chosen pool class (e.g. NullPool for tests) takes no queue sizing options.
        if not in_memory and "poolclass" not in engine_options:
            options.update(
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_timeout=pool_timeout,
                pool_recycle=pool_recycle,
            )
        if pgbouncer:
            if self.url.get_driver_name() != "asyncpg":
                raise ValueError("pgbouncer=True applies to postgresql+asyncpg URLs only")
            connect_args = dict(engine_options.pop("connect_args", {}))
            connect_args.setdefault("statement_cache_size", 0)
            connect_args.setdefault(
                "prepared_statement_name_func", lambda: f"__underlay_{uuid4().hex}__"
            )
            options["connect_args"] = connect_args
            self.url = self.url.update_query_dict({"prepared_statement_cache_size": "0"})
        options.update(engine_options)

        self.engine: AsyncEngine = create_async_engine(self.url, **options)
        if backend == "sqlite":
            _configure_sqlite(self.engine, busy_timeout=sqlite_busy_timeout, wal=not in_memory)
        event.listen(self.engine.sync_engine, "handle_error", _translate_driver_error)
        if pool_pre_ping:
            _ping_idle_connections(self.engine, idle=pre_ping_idle)

        # One sync Session subclass per Database, so event listeners (soft delete, cache
        # invalidation) installed for this database never leak into another one.
        self.sync_session_class: type[Session] = type(
            "UnderlaySyncSession", (LiveGetSession, VersionCheckedSession), {}
        )
        enable_soft_delete(self.sync_session_class)
        enable_versioning(self.sync_session_class)
        event.listen(self.sync_session_class, "after_commit", _on_commit)
        event.listen(self.sync_session_class, "after_rollback", _on_rollback)
        self.sessionmaker: async_sessionmaker[DatabaseSession] = async_sessionmaker(
            self.engine,
            class_=DatabaseSession,
            sync_session_class=self.sync_session_class,
            expire_on_commit=False,
            info={"underlay.database": self},
        )
        if cache is not None:
            from underlay.cache._attach import attach  # noqa: PLC0415 - the cache is optional

            attach(self)

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)!r})"

    @asynccontextmanager
    async def session(self) -> AsyncIterator[DatabaseSession]:
        """Open a session for one unit of work: commit on success, roll back on error.

        The connection goes back to the pool whatever happens, also when the block raises or
        the task is cancelled. SQLAlchemy errors raised in the block or at commit leave as
        underlay errors (the original chained).

        Yields:
            A new :class:`DatabaseSession`.
        """
        session = self.sessionmaker()
        try:
            yield session
            await session.commit()
        except BaseException as exc:
            await _shielded(_rollback_and_close(session))
            if isinstance(exc, SQLAlchemyError):
                raise _translated(exc, self.engine) from exc
            raise
        else:
            await _shielded(session.close())

    async def get_session(self) -> AsyncIterator[DatabaseSession]:
        """Yield a session per request: a FastAPI-style dependency.

        Example::

            @app.get("/users/{id}")
            async def read(id: int, session: AsyncSession = Depends(db.get_session)): ...

        Yields:
            A session that commits when the request handler returns and rolls back if it
            raises.
        """
        async with self.session() as session:
            yield session

    async def create_all(self, metadata: MetaData) -> None:
        """Create every table of ``metadata`` that does not exist yet (development, tests).

        Use migrations for anything that lives longer than a test run.
        """
        async with self.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)

    async def drop_all(self, metadata: MetaData) -> None:
        """Drop every table of ``metadata`` that exists."""
        async with self.engine.begin() as conn:
            await conn.run_sync(metadata.drop_all)

    async def ping(self, *, timeout: float = 5.0) -> bool:  # noqa: ASYNC109 - a health check's own bound
        """Return whether the database answers a trivial query within ``timeout`` seconds."""
        try:
            async with asyncio.timeout(timeout), self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except (OSError, SQLAlchemyError, TimeoutError):
            logger.warning("database ping failed", exc_info=True)
            return False
        return True

    async def dispose(self) -> None:
        """Close every pooled connection. The engine stays usable and reconnects on demand."""
        await self.engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.dispose()


async def _rollback_and_close(session: AsyncSession) -> None:
    try:
        await session.rollback()
    finally:
        await session.close()


async def _shielded(awaitable: Awaitable[None]) -> None:
    # Shield the clean-up from a second cancellation: an interrupted close() is what leaks
    # pooled connections in async SQLAlchemy code.
    task = asyncio.ensure_future(awaitable)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        raise


def _async_url(url: str | URL) -> URL:
    parsed = make_url(url)
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if "+" not in parsed.drivername and backend in _ASYNC_DRIVERS:
        driver = _ASYNC_DRIVERS[backend]
        parsed = parsed.set(drivername=f"{backend}+{driver}")
    if driver in DRIVER_EXTRAS:
        module, extra = DRIVER_EXTRAS[driver]
        require(module, extra=extra)
    return parsed


def _translate_driver_error(context: ExceptionContext) -> BaseException | None:
    if context.is_pre_ping or context.sqlalchemy_exception is None:
        return None
    return translate_error(context.sqlalchemy_exception)


_RETURNED_AT = "underlay.returned_at"


def _ping_idle_connections(engine: AsyncEngine, *, idle: float) -> None:
    # SQLAlchemy's pool_pre_ping pings on every checkout: a round trip per session, most of a
    # short request's overhead. A connection checked in less than ``idle`` seconds ago was
    # just used successfully, so only older ones are pinged (HikariCP's bypass window).
    sync_engine = engine.sync_engine
    dialect = sync_engine.dialect

    @event.listens_for(sync_engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info[_RETURNED_AT] = time.monotonic()

    @event.listens_for(sync_engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        is_closed = getattr(getattr(dbapi_connection, "driver_connection", None), "is_closed", None)
        if callable(is_closed) and is_closed():
            # the server closed it while it sat in the pool (a restart, a killed backend):
            # known without a round trip, so also within the idle window
            raise DisconnectionError("the pooled connection was closed by the server")
        returned_at = record.info.get(_RETURNED_AT)
        if returned_at is None or time.monotonic() - returned_at < idle:
            return  # a new connection, or one that worked a moment ago
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool invalidates this connection and checks out (or opens) another.
            raise DisconnectionError(f"pre-ping failed: {exc}") from exc


def _configure_sqlite(engine: AsyncEngine, *, busy_timeout: int, wal: bool) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin, so BEGIN is
        # real (savepoints and isolation work) and PRAGMAs run outside a transaction.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout)}")
            if wal:
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA synchronous = NORMAL")
        finally:
            cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN")
