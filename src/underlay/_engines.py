"""How `Database` builds its engines: URLs, drivers, SQLite settings, cheap pre-pings."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, ExceptionContext, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine

from underlay._imports import DRIVER_EXTRAS, require
from underlay._options import NO_BEGIN
from underlay.exceptions import translate_error

__all__ = [
    "async_url",
    "closed_by_server",
    "configure_sqlite",
    "non_negative_int",
    "ping_idle_connections",
    "read_only_connect_args",
    "replica_url",
    "translate_driver_error",
]

_ASYNC_DRIVERS = {"postgresql": "asyncpg", "sqlite": "aiosqlite"}


def non_negative_int(value: str | tuple[str, ...], name: str) -> int:
    """Return a URL query value as an int of 0 or more (the last one if repeated)."""
    text_value = value if isinstance(value, str) else value[-1]
    if not text_value.isdigit():
        raise ValueError(f"{name} in the URL must be a non-negative integer, got {text_value!r}")
    return int(text_value)


def replica_url(primary: URL, url: str | URL) -> URL:
    """Return a replica's async URL, checked against the primary's backend and cache setting."""
    parsed = async_url(url)
    if parsed.get_backend_name() != primary.get_backend_name():
        raise ValueError("a replica must use the same database backend as the primary")
    if (
        primary.query.get("prepared_statement_cache_size")
        and "prepared_statement_cache_size" not in parsed.query
    ):
        parsed = parsed.update_query_dict({"prepared_statement_cache_size": "0"})
    return parsed


def async_url(url: str | URL) -> URL:
    """Return ``url`` with the async driver of its backend, that driver's extra installed."""
    parsed = make_url(url)
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if "+" not in parsed.drivername and backend in _ASYNC_DRIVERS:
        driver = _ASYNC_DRIVERS[backend]
        parsed = parsed.set(drivername=f"{backend}+{driver}")
    if driver in DRIVER_EXTRAS:
        module, extra = DRIVER_EXTRAS[driver]
        require(module, extra=extra)
    return parsed


def translate_driver_error(context: ExceptionContext) -> BaseException | None:
    """``handle_error`` hook: the underlay error for a driver error (pre-pings excepted)."""
    if context.is_pre_ping or context.sqlalchemy_exception is None:
        return None
    return translate_error(context.sqlalchemy_exception)


_RETURNED_AT = "underlay.returned_at"


def ping_idle_connections(engine: AsyncEngine, *, idle: float) -> None:
    """Ping a pooled connection at checkout only if it sat idle for ``idle`` seconds."""
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
        if returned_at is None:
            return  # a new connection
        if closed_by_server(dbapi_connection):
            # The server closed it while it sat in the pool (restart, failover): free to see.
            raise DisconnectionError("the pooled connection was closed by the server")
        if time.monotonic() - returned_at < idle:
            return  # one that worked a moment ago
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool invalidates this connection and checks out (or opens) another.
            raise DisconnectionError(f"pre-ping failed: {exc}") from exc


def closed_by_server(dbapi_connection: Any) -> bool:
    """Whether the driver already knows the server closed ``dbapi_connection``."""
    driver = getattr(dbapi_connection, "driver_connection", None)
    is_closed = getattr(driver, "is_closed", None)
    return bool(is_closed()) if callable(is_closed) else False


def configure_sqlite(engine: AsyncEngine, *, busy_timeout: int, wal: bool) -> None:
    """Set SQLite's PRAGMAs on each connection and send a real ``BEGIN``."""
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
        if conn.get_execution_options().get(NO_BEGIN):
            return  # a read-only session without a snapshot: each statement on its own
        conn.exec_driver_sql("BEGIN")


def read_only_connect_args(connect_args: Any) -> dict[str, Any]:
    """Return ``connect_args`` with the server setting that makes sessions read-only."""
    args = dict(connect_args or {})
    settings = dict(args.get("server_settings") or {})
    settings["default_transaction_read_only"] = "on"
    args["server_settings"] = settings
    return args
