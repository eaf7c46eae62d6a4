"""The :class:`Database`: async engine, session factory and transaction boundaries."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from sqlalchemy import MetaData, event, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import Session

from underlay._engines import (
    async_url,
    configure_sqlite,
    non_negative_int,
    ping_idle_connections,
    read_only_connect_args,
    replica_url,
    translate_driver_error,
)
from underlay._options import NO_BEGIN as _NO_BEGIN
from underlay._routing import ReplicaRouter, ReplicaStats, format_lsn, parse_lsn
from underlay._sqlite import install_fast_aiosqlite
from underlay.events import (
    AFTER_COMMIT_KEY,
    DUE_KEY,
    TransactionObserver,
    call_after_commit,
    observer_for_cache,
    on_commit,
    on_rollback,
    record_write,
    subscribe,
)
from underlay.exceptions import ConnectionLostError, ReadOnlySessionError, translate_error
from underlay.models._lazy import RAISE_ON_LAZY_LOAD, enable_raise_on_lazy_load
from underlay.models._soft_delete import LiveGetSession, enable_soft_delete
from underlay.models._versioning import VersionCheckedSession, enable_versioning
from underlay.tenancy._session import TenantScopedSession, enable_tenancy, set_rls_tenant

if TYPE_CHECKING:
    from underlay.cache import Cache

__all__ = [
    "AFTER_COMMIT_KEY",
    "Database",
    "DatabaseSession",
    "ReplicaStats",
    "call_after_commit",
    "record_write",
]

logger = logging.getLogger("underlay.database")


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
        # Read after the commit: the commit's own flush is what usually writes.
        if self.sync_session.info.pop(_WROTE_KEY, False):
            database = self.sync_session.info.get(_DATABASE_KEY)
            if isinstance(database, Database):
                await database._note_commit()
        await self.run_after_commit()

    async def close(self) -> None:
        """Close the session, first awaiting callbacks of a commit made via ``begin()``."""
        try:
            await self.run_after_commit()
        finally:
            await super().close()

    async def run_after_commit(self) -> None:
        """Await the callbacks due after the last commit, logging (not raising) failures."""
        callbacks = self.sync_session.info.pop(DUE_KEY, None)
        for callback in callbacks or ():
            try:
                await callback()
            except Exception:
                logger.exception("after-commit callback %r failed", callback)


_DATABASE_KEY = "underlay.database"
_READONLY_KEY = "underlay.readonly"
_WROTE_KEY = "underlay.wrote"


def _on_flush_guard(session: Session, _flush: Any, _instances: Any) -> None:
    if session.info.get(_READONLY_KEY) and (session.new or session.dirty or session.deleted):
        raise ReadOnlySessionError(
            "This session was opened with readonly=True and cannot flush changes; "
            "open a db.session() to write."
        )


def _has_changes(session: AsyncSession) -> bool:
    sync = session.sync_session
    return bool(sync.new or sync.dirty or sync.deleted)


def _after_flush_mark(session: Session, _flush: Any) -> None:
    session.info[_WROTE_KEY] = True


def _on_execute_guard(state: Any) -> None:
    session = state.session
    if state.is_select:
        return
    if session.info.get(_READONLY_KEY):
        if state.is_insert or state.is_update or state.is_delete:
            raise ReadOnlySessionError(
                "This session was opened with readonly=True and cannot run "
                f"{type(state.statement).__name__.upper()} statements; open a db.session() "
                "to write."
            )
        return
    # Text and other non-SELECT statements may write: record it for read-your-writes.
    session.info[_WROTE_KEY] = True


def _session_class(*, tenant_rls: bool, replicas: bool) -> type[Session]:
    # One sync Session subclass per Database, so event listeners (soft delete, tenancy, cache
    # invalidation) installed for this database never leak into another one.
    session_class: type[Session] = type(
        "UnderlaySyncSession", (LiveGetSession, TenantScopedSession, VersionCheckedSession), {}
    )
    enable_soft_delete(session_class)
    enable_versioning(session_class)
    enable_raise_on_lazy_load(session_class)
    enable_tenancy(session_class)
    if tenant_rls:
        event.listen(session_class, "after_begin", set_rls_tenant)
    event.listen(session_class, "after_commit", on_commit)
    event.listen(session_class, "after_rollback", on_rollback)
    event.listen(session_class, "before_flush", _on_flush_guard)
    event.listen(session_class, "do_orm_execute", _on_execute_guard)
    if replicas:
        event.listen(session_class, "after_flush", _after_flush_mark)
    return session_class


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
        raise_on_lazy_load: No hidden IO: a lazy load in async code (a relationship or an
            expired attribute that was not loaded) raises `LazyLoadError` at once, naming the
            relationship and the loader option that fixes it (``selectinload(User.posts)``),
            instead of ``MissingGreenlet`` from deep inside the driver. Models can opt in
            alone with ``__raise_on_lazy_load__ = True``.
        pgbouncer: Make asyncpg work behind PgBouncer in transaction mode: both statement
            caches off, so every statement is an unnamed Parse/Bind/Execute that leaves no
            state on the server connection. Features that need session state refuse to run.
        replicas: URLs of streaming read replicas of ``url``. Sessions opened with
            ``session(readonly=True)`` read from one of them once it has replayed this
            context's last commit (see `consistency_token`), else from the primary.
        replica_wait: Seconds a read-only session waits for a replica to replay the
            context's last commit before it reads from the primary instead.
        replica_max_lag: Bytes of WAL a replica may trail the newest commit this process
            saw before it is skipped; ``None`` never skips for lag.
        replica_check_interval: Seconds between replay-position checks of an idle replica.
        replica_retry: Seconds an unreachable or failed replica is skipped.
        sqlite_busy_timeout: Milliseconds SQLite waits for a lock before failing.
        tenant_rls: Tell PostgreSQL the current tenant at the start of every transaction
            (``SET LOCAL``), for the row-level-security policies of
            `underlay.tenancy.enable_tenant_rls`. One statement per transaction.
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
        raise_on_lazy_load: bool = False,
        pgbouncer: bool = False,
        replicas: Sequence[str | URL] = (),
        replica_wait: float = 0.05,
        replica_max_lag: int | None = 16 * 1024 * 1024,
        replica_check_interval: float = 1.0,
        replica_retry: float = 5.0,
        sqlite_busy_timeout: int = 5000,
        tenant_rls: bool = False,
        **engine_options: Any,
    ) -> None:
        self.url = async_url(url)
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
        # asyncpg's own statement cache cannot be set through a URL (SQLAlchemy passes the
        # text on and asyncpg refuses it): take it from the query here, so a URL that
        # carries both PgBouncer settings works as it is.
        url_cache = self.url.query.get("statement_cache_size")
        if url_cache is not None and self.url.get_driver_name() == "asyncpg":
            self.url = self.url.difference_update_query(["statement_cache_size"])
            engine_options["connect_args"] = {
                **engine_options.get("connect_args", {}),
                "statement_cache_size": non_negative_int(url_cache, "statement_cache_size"),
            }
        pgbouncer = pgbouncer or (
            url_cache is not None
            and non_negative_int(url_cache, "statement_cache_size") == 0
            and self.url.query.get("prepared_statement_cache_size") == "0"
        )
        if pgbouncer:
            if self.url.get_driver_name() != "asyncpg":
                raise ValueError("pgbouncer=True applies to postgresql+asyncpg URLs only")
            # Only the two cache settings: a custom prepared_statement_name_func makes
            # asyncpg name (and leave behind) a statement per execution on PgBouncer 1.18.
            connect_args = dict(engine_options.pop("connect_args", {}))
            connect_args.setdefault("statement_cache_size", 0)
            options["connect_args"] = connect_args
            self.url = self.url.update_query_dict({"prepared_statement_cache_size": "0"})
        #: True when this database runs behind PgBouncer in transaction mode; features that
        #: need session state (LISTEN, session-level advisory locks, SET) refuse to run.
        self.pgbouncer = pgbouncer
        options.update(engine_options)

        def make_engine(url: URL, **overrides: Any) -> AsyncEngine:
            engine = create_async_engine(url, **(options | overrides))
            if backend == "sqlite":
                configure_sqlite(engine, busy_timeout=sqlite_busy_timeout, wal=not in_memory)
                if url.get_driver_name() == "aiosqlite":
                    install_fast_aiosqlite(engine)
            event.listen(engine.sync_engine, "handle_error", translate_driver_error)
            if pool_pre_ping:
                ping_idle_connections(engine, idle=pre_ping_idle)
            return engine

        self.engine: AsyncEngine = make_engine(self.url)
        replica_urls = [replica_url(self.url, url) for url in replicas]
        if replica_urls and backend != "postgresql":
            raise ValueError("replicas= applies to PostgreSQL URLs only")
        #: The replica engines, read-only at the transaction level.
        self.replica_engines: list[AsyncEngine] = [
            make_engine(url).execution_options(postgresql_readonly=True) for url in replica_urls
        ]
        self._router = ReplicaRouter(
            self.replica_engines,
            wait=replica_wait,
            max_lag=replica_max_lag,
            check_interval=replica_check_interval,
            retry=replica_retry,
        )
        # Read-only sessions on the primary: one READ ONLY transaction when a snapshot is
        # asked for; otherwise each statement on its own, with no BEGIN / COMMIT trips.
        self._snapshot_primary = (
            self.engine.execution_options(postgresql_readonly=True)
            if backend == "postgresql"
            else self.engine
        )
        self._autocommit_primary: AsyncEngine | None = None
        if backend == "sqlite":
            self._autocommit_primary = self.engine.execution_options(**{_NO_BEGIN: True})
        elif backend == "postgresql" and not pgbouncer and not tenant_rls:
            # a pool of its own whose sessions are read-only on the server, so raw SQL cannot
            # write either (PgBouncer would refuse the startup setting; RLS needs SET LOCAL)
            self._autocommit_primary = make_engine(
                self.url,
                isolation_level="AUTOCOMMIT",
                connect_args=read_only_connect_args(options.get("connect_args")),
            ).execution_options(**{_NO_BEGIN: True})
        self._lsn_engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")

        self.sync_session_class: type[Session] = _session_class(
            tenant_rls=tenant_rls, replicas=bool(self.replica_engines)
        )
        self.sessionmaker: async_sessionmaker[DatabaseSession] = async_sessionmaker(
            self.engine,
            class_=DatabaseSession,
            sync_session_class=self.sync_session_class,
            expire_on_commit=False,
            info={_DATABASE_KEY: self, RAISE_ON_LAZY_LOAD: raise_on_lazy_load},
        )
        if cache is not None:
            self.subscribe(observer_for_cache(cache))

    def subscribe(self, observer: TransactionObserver) -> Callable[[], None]:
        """Make ``observer`` hear of every transaction of this database that writes.

        ``observer.after_commit(writes)`` is awaited inside ``commit()`` once the database has
        committed; ``observer.after_rollback(writes)`` is called on a rollback. See
        `underlay.events` for what a `TransactionWrites` holds.

        Returns:
            A function that unsubscribes ``observer`` again.
        """
        return subscribe(self.sync_session_class, observer)

    def __repr__(self) -> str:
        return f"Database({self.url.render_as_string(hide_password=True)!r})"

    @asynccontextmanager
    async def session(
        self, *, readonly: bool = False, snapshot: bool = False
    ) -> AsyncIterator[DatabaseSession]:
        """Open a session for one unit of work: commit on success, roll back on error.

        The connection goes back to the pool whatever happens, also when the block raises or
        the task is cancelled. SQLAlchemy errors raised in the block or at commit leave as
        underlay errors (the original chained).

        Args:
            readonly: Only read. With ``replicas`` configured the session reads from a
                replica that has replayed this context's last commit (read-your-writes),
                else from the primary; it never switches engines mid-transaction. ORM
                writes raise `ReadOnlySessionError` before any SQL, and on PostgreSQL the
                transaction itself is ``READ ONLY``, so raw SQL cannot write either.
                On the primary, each statement runs on its own (autocommit): no ``BEGIN`` /
                ``COMMIT`` round trips, so the statements of one session may see different
                commits (see ``snapshot``). On PostgreSQL the connection is read-only at
                the server, so raw SQL still cannot write; behind PgBouncer or with
                ``tenant_rls`` the session is one ``READ ONLY`` transaction instead.
                On success the session is closed, not committed (it has nothing to
                commit); changes left pending in it raise `ReadOnlySessionError` there.
            snapshot: With ``readonly``: read in one transaction, so every statement of the
                session sees the same data (SQLite's read transaction; PostgreSQL's at the
                isolation level the engine uses). Costs the ``BEGIN`` and ``COMMIT`` trips.

        Yields:
            A new `DatabaseSession`.
        """
        session = await self._open(readonly=readonly, snapshot=snapshot)
        try:
            yield session
            if not readonly or _has_changes(session):
                # a read-only session with changes commits, so that its flush refuses them
                await session.commit()
        except BaseException as exc:
            await _shielded(_rollback_and_close(session))
            if isinstance(exc, SQLAlchemyError):
                raise _translated(exc, self.engine) from exc
            raise
        else:
            await _shielded(session.close())

    async def _open(self, *, readonly: bool, snapshot: bool = False) -> DatabaseSession:
        if not readonly:
            return self.sessionmaker()
        engine = await self._router.choose() if self.replica_engines else None
        if engine is not None:
            session = self.sessionmaker(bind=engine)
            session.sync_session.info[_READONLY_KEY] = True
            try:
                # Check out the replica connection now: if the replica went away since it
                # was last checked, fall back here rather than fail the caller's first query.
                await session.connection()
            except (OSError, SQLAlchemyError) as exc:
                await _shielded(_rollback_and_close(session))
                self._router.mark_down(engine)
                self._router.stats.primary_fallback["down"] += 1
                logger.warning("replica connection failed, reading from the primary: %s", exc)
            else:
                return session
        primary = self._autocommit_primary
        if snapshot or primary is None:
            primary = self._snapshot_primary
        session = self.sessionmaker(bind=primary)
        session.sync_session.info[_READONLY_KEY] = True
        return session

    def consistency_token(self) -> str | None:
        """Return this context's last commit position, to carry to a later request.

        Read-only sessions of the same context wait for a replica to replay it. An
        application whose client moves between processes (a cookie, a header) passes the
        token back with `read_after` so that its next request still reads its own writes.

        Returns:
            An opaque string, or ``None`` when this context has not committed a write.
        """
        lsn = self._router.token.get()
        return format_lsn(lsn) if lsn else None

    @contextmanager
    def read_after(self, token: str | None) -> Iterator[None]:
        """Make read-only sessions in the block see at least the commit behind ``token``.

        Args:
            token: A value from `consistency_token`, or ``None`` (no requirement).

        Raises:
            InvalidQueryError: ``token`` is not a consistency token.
        """
        if token is None:
            yield
            return
        lsn = parse_lsn(token)
        reset = self._router.token.set(max(lsn, self._router.token.get()))
        try:
            yield
        finally:
            self._router.token.reset(reset)

    @property
    def replica_stats(self) -> ReplicaStats:
        """Return the counts of where read-only sessions went (replica, or primary and why)."""
        return self._router.stats

    async def _note_commit(self) -> None:
        if not self.replica_engines:
            return
        try:
            async with self._lsn_engine.connect() as conn:
                value = (await conn.execute(_CURRENT_LSN)).scalar_one()
        except (OSError, SQLAlchemyError):
            # The commit happened; without its position the next read may be stale, so
            # pin this context to the primary until a later commit is recorded.
            logger.warning("could not read the commit position", exc_info=True)
            self._router.note_commit(_FOREVER)
            return
        self._router.note_commit(parse_lsn(value))

    async def get_session(self) -> AsyncIterator[DatabaseSession]:
        """Yield a session that commits when the generator is closed.

        Warning:
            Do not use this as a FastAPI dependency (``Depends(db.get_session)``): FastAPI
            closes such dependencies *after* the response has been sent, so a commit that
            fails (a duplicate, a stale version, a lost connection) is invisible to the
            client, which was already told the write succeeded. Use
            ``underlay.fastapi.session_dependency(db)``, which commits before the response.
            This generator is for frameworks that finish it before responding.

        Yields:
            A session that commits when the generator finishes normally and rolls back if
            an exception is thrown into it.
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
        for replica in self.replica_engines:
            await replica.dispose()
        if self._autocommit_primary is not None:
            await self._autocommit_primary.dispose()
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


_CURRENT_LSN = text("SELECT pg_current_wal_lsn()::text")
# A token no replica ever reaches: reads go to the primary.
_FOREVER = (1 << 64) - 1
