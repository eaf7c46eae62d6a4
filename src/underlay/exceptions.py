"""The underlay error tree and the translation of driver and ORM errors.

Every error underlay raises derives from :class:`UnderlayError`::

    UnderlayError
    ├── NotFoundError (LookupError)          no row with that identity
    ├── MultipleResultsError (LookupError)   more than one row where one was expected
    ├── ConflictError                        the write lost against the database's current state
    │   ├── StaleVersionError                an optimistic-lock version check failed
    │   ├── DuplicateError                   a unique constraint was violated
    │   ├── ForeignKeyError                  a foreign key points at a missing row
    │   └── SerializationError               a concurrent transaction won (retry the unit of work)
    ├── ConstraintError (ValueError)         a NOT NULL or CHECK constraint rejected a value
    ├── InvalidQueryError (ValueError)       a query built from bad input, refused before any SQL
    ├── TenantRequiredError                  a tenant model used with no tenant set
    ├── ConnectionLostError (ConnectionError) the connection broke mid-transaction or at COMMIT
    ├── PoolTimeoutError (TimeoutError)      no pooled connection became free in time
    ├── LazyLoadError (RuntimeError)         a lazy load in async code, refused (no hidden IO)
    ├── ReadOnlySessionError                 a write in a session opened with readonly=True
    └── MissingDependencyError (ImportError) an optional extra is not installed

Driver and ORM errors are classified at one boundary, :func:`translate_error`, by SQLSTATE
(PostgreSQL), extended result code (SQLite) or server error number (MySQL / MariaDB), never
by parsing messages. The original
exception is always chained as ``__cause__``.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import exc as orm_exc

__all__ = [
    "ConflictError",
    "ConnectionLostError",
    "ConstraintError",
    "DuplicateError",
    "ForeignKeyError",
    "InvalidQueryError",
    "LazyLoadError",
    "MissingDependencyError",
    "MultipleResultsError",
    "NotFoundError",
    "PoolTimeoutError",
    "ReadOnlySessionError",
    "SerializationError",
    "StaleVersionError",
    "TenantRequiredError",
    "UnderlayError",
    "translate_error",
]


class UnderlayError(Exception):
    """Root of every error underlay raises.

    Catch this to handle any failure of the data layer in one place.
    """


def _describe(model: type[Any] | None) -> str:
    return model.__name__ if model is not None else "row"


class NotFoundError(UnderlayError, LookupError):
    """Raised when no row matches an identity or criteria that must match one.

    Attributes:
        model: The mapped class that was queried, when known.
        id: The primary key that was looked up, when known.
    """

    def __init__(
        self, message: str | None = None, *, model: type[Any] | None = None, id: Any = None
    ) -> None:
        self.model = model
        self.id = id
        if message is None:
            message = (
                f"No {_describe(model)} with id {id!r} exists; check the id or create it first."
            )
        super().__init__(message)


class MultipleResultsError(UnderlayError, LookupError):
    """Raised when a query expected to return at most one row returned several.

    Attributes:
        model: The mapped class that was queried, when known.
    """

    def __init__(self, message: str | None = None, *, model: type[Any] | None = None) -> None:
        self.model = model
        if message is None:
            message = (
                f"More than one {_describe(model)} matched where at most one was expected; "
                "narrow the criteria."
            )
        super().__init__(message)


class ConflictError(UnderlayError):
    """Raised when a write conflicts with the current state of the database.

    Conflicts are expected under concurrency: re-read and retry the unit of work (see
    :func:`underlay.retry_on_conflict`) or report the conflict to the caller.

    Attributes:
        model: The mapped class involved, when known.
        id: The primary key involved, when known.
    """

    def __init__(self, message: str, *, model: type[Any] | None = None, id: Any = None) -> None:
        self.model = model
        self.id = id
        super().__init__(message)


class StaleVersionError(ConflictError):
    """Raised when an optimistic-lock version check fails.

    Another transaction changed (or deleted) the row since the version the caller holds was
    read. Nothing was written.

    Attributes:
        expected_version: The version the caller expected, when known.
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        model: type[Any] | None = None,
        id: Any = None,
        expected_version: int | None = None,
    ) -> None:
        self.expected_version = expected_version
        if message is None:
            message = (
                f"{_describe(model)} {id!r} was changed by someone else"
                + (
                    f" (expected version {expected_version})"
                    if expected_version is not None
                    else ""
                )
                + "; reload it and apply the change again."
            )
        super().__init__(message, model=model, id=id)


class DuplicateError(ConflictError):
    """Raised when an INSERT or UPDATE violates a unique constraint or primary key.

    Attributes:
        constraint: The name of the violated constraint, when the driver reports it.
    """

    def __init__(
        self,
        message: str,
        *,
        model: type[Any] | None = None,
        id: Any = None,
        constraint: str | None = None,
    ) -> None:
        self.constraint = constraint
        super().__init__(message, model=model, id=id)


class ForeignKeyError(ConflictError):
    """Raised when a write references a missing row, or deletes a row still referenced.

    Attributes:
        constraint: The name of the violated constraint, when the driver reports it.
    """

    def __init__(
        self,
        message: str,
        *,
        model: type[Any] | None = None,
        id: Any = None,
        constraint: str | None = None,
    ) -> None:
        self.constraint = constraint
        super().__init__(message, model=model, id=id)


class SerializationError(ConflictError):
    """Raised when a concurrent transaction won: serialization failure, deadlock or lock busy.

    The transaction was rolled back; running the whole unit of work again is safe.
    """


class ConstraintError(UnderlayError, ValueError):
    """Raised when a NOT NULL or CHECK constraint rejects a value.

    Attributes:
        constraint: The name of the violated constraint, when the driver reports it.
    """

    def __init__(self, message: str, *, constraint: str | None = None) -> None:
        self.constraint = constraint
        super().__init__(message)


class InvalidQueryError(UnderlayError, ValueError):
    """Raised when a query built from caller input is refused before any SQL is sent.

    Typical causes: a sort or filter field that the repository does not declare, a cursor
    that was not minted by underlay, or a malformed argument.
    """


class ConnectionLostError(UnderlayError, ConnectionError):
    """Raised when the connection to the database broke during a statement or a commit.

    The transaction is gone: its uncommitted work was rolled back by the server, and the
    connection is discarded from the pool (the next session gets a fresh one). When the
    connection broke during ``COMMIT``, ``outcome_unknown`` is true: the server may have
    committed the transaction before the connection died, so check before you retry
    anything that is not idempotent.

    Attributes:
        outcome_unknown: Whether the break happened while committing.
    """

    def __init__(self, message: str | None = None, *, outcome_unknown: bool = False) -> None:
        self.outcome_unknown = outcome_unknown
        if message is None:
            if outcome_unknown:
                message = (
                    "The database connection was lost during COMMIT: the transaction may or "
                    "may not have been committed; check its effects before retrying."
                )
            else:
                message = (
                    "The database connection was lost; the transaction was not committed. "
                    "Run the unit of work again."
                )
        super().__init__(message)


class PoolTimeoutError(UnderlayError, TimeoutError):
    """Raised when no pooled connection became free within the pool's timeout.

    Every connection is checked out by other sessions: raise ``pool_size`` /
    ``max_overflow`` or make transactions shorter.

    Attributes:
        pool_size: Connections the pool keeps, when known.
        max_overflow: Extra connections it may open beyond ``pool_size``, when known.
        timeout: Seconds waited, when known.
    """

    def __init__(
        self,
        message: str | None = None,
        *,
        pool_size: int | None = None,
        max_overflow: int | None = None,
        timeout: float | None = None,
    ) -> None:
        self.pool_size = pool_size
        self.max_overflow = max_overflow
        self.timeout = timeout
        if message is None:
            size = "all" if pool_size is None else f"all {pool_size}"
            extra = "" if max_overflow is None else f" (+{max_overflow} overflow)"
            waited = "" if timeout is None else f" within {timeout:g} s"
            message = (
                f"No database connection became free{waited}: {size} pooled connections"
                f"{extra} are in use. Raise pool_size / max_overflow or shorten transactions."
            )
        super().__init__(message)


def _pool_timeout_error(pool: Any) -> PoolTimeoutError:
    """Return the `PoolTimeoutError` for an exhausted SQLAlchemy ``pool`` (sizes read off it)."""
    size, timeout = getattr(pool, "size", None), getattr(pool, "timeout", None)
    return PoolTimeoutError(
        pool_size=size() if callable(size) else None,
        timeout=timeout() if callable(timeout) else None,
    )


class LazyLoadError(UnderlayError, RuntimeError):
    """Raised when async code reads a relationship or attribute that is not loaded.

    Only where the no-hidden-IO mode is on (``Database(url, raise_on_lazy_load=True)`` or a
    model with ``__raise_on_lazy_load__ = True``). The message names the attribute and the
    loader option that loads it with the query, such as ``selectinload(User.posts)``.

    Attributes:
        attribute: ``"Model.attribute"`` (or the model's name for a column load).
    """

    def __init__(self, message: str, *, attribute: str) -> None:
        self.attribute = attribute
        super().__init__(message)


class ReadOnlySessionError(UnderlayError):
    """Raised when a session opened with ``readonly=True`` is asked to write.

    ORM flushes and ORM-enabled INSERT / UPDATE / DELETE are refused before any SQL is sent;
    on PostgreSQL the transaction is also ``READ ONLY``, so raw SQL writes fail in the server.
    Open a writing session (``db.session()``) for the write.
    """


class TenantRequiredError(UnderlayError):
    """Raised when a tenant model is queried or written with no tenant set.

    Wrap the work in ``tenant_context(tenant_id)``, or in ``all_tenants()`` for an explicit
    cross-tenant read. Never "all tenants" by default: a forgotten context is an error on the
    first query, not a data leak.
    """


class MissingDependencyError(UnderlayError, ImportError):
    """Raised when a feature needs an optional dependency that is not installed.

    Attributes:
        extra: The underlay extra that installs the dependency.
    """

    def __init__(self, package: str, *, extra: str) -> None:
        self.extra = extra
        self.package = package
        super().__init__(
            f"{package!r} is not installed; install it with: pip install 'underlay[{extra}]'",
            name=package,
        )


# PostgreSQL SQLSTATE codes, see https://www.postgresql.org/docs/current/errcodes-appendix.html
_PG_UNIQUE = "23505"
_PG_FOREIGN_KEY = "23503"
_PG_NOT_NULL = "23502"
_PG_CHECK = "23514"
_PG_CONFLICTS = frozenset({"40001", "40P01", "55P03"})
_PG_READ_ONLY = "25006"  # read_only_sql_transaction
_PG_KINDS: dict[str, type[UnderlayError]] = {
    _PG_UNIQUE: DuplicateError,
    _PG_FOREIGN_KEY: ForeignKeyError,
    _PG_NOT_NULL: ConstraintError,
    _PG_CHECK: ConstraintError,
    **dict.fromkeys(_PG_CONFLICTS, SerializationError),
    _PG_READ_ONLY: ReadOnlySessionError,
}

# SQLite extended result codes, see https://www.sqlite.org/rescode.html
_SQLITE_UNIQUE = frozenset({1555, 2067})  # CONSTRAINT_PRIMARYKEY, CONSTRAINT_UNIQUE
_SQLITE_FOREIGN_KEY = 787
_SQLITE_NOT_NULL = 1299
_SQLITE_CHECK = 275
_SQLITE_BUSY_OR_LOCKED = frozenset({5, 6})  # primary codes of SQLITE_BUSY* and SQLITE_LOCKED*

# MySQL / MariaDB server error numbers, as the drivers pass them in ``args[0]``.
_MYSQL_KINDS: dict[int, type[UnderlayError]] = {
    1062: DuplicateError,  # ER_DUP_ENTRY
    1586: DuplicateError,  # ER_DUP_ENTRY_WITH_KEY_NAME
    1216: ForeignKeyError,  # ER_NO_REFERENCED_ROW
    1217: ForeignKeyError,  # ER_ROW_IS_REFERENCED
    1451: ForeignKeyError,  # ER_ROW_IS_REFERENCED_2
    1452: ForeignKeyError,  # ER_NO_REFERENCED_ROW_2
    1048: ConstraintError,  # ER_BAD_NULL_ERROR
    1364: ConstraintError,  # ER_NO_DEFAULT_FOR_FIELD (strict mode, NOT NULL left out)
    3819: ConstraintError,  # ER_CHECK_CONSTRAINT_VIOLATED (MySQL)
    4025: ConstraintError,  # ER_CONSTRAINT_FAILED (MariaDB's CHECK)
    1213: SerializationError,  # ER_LOCK_DEADLOCK
    1205: SerializationError,  # ER_LOCK_WAIT_TIMEOUT
    1020: SerializationError,  # ER_CHECKREAD (MariaDB snapshot isolation)
}
_MYSQL_DRIVERS = frozenset({"pymysql", "aiomysql", "asyncmy", "MySQLdb", "mariadb"})


def _sqlstate(orig: BaseException | None) -> str | None:
    seen = 0
    while orig is not None and seen < 3:
        for attr in ("sqlstate", "pgcode"):
            code = getattr(orig, attr, None)
            if isinstance(code, str):
                return code
        orig = orig.__cause__
        seen += 1
    return None


def _sqlite_code(orig: BaseException | None) -> int | None:
    if isinstance(orig, sqlite3.Error):
        code = getattr(orig, "sqlite_errorcode", None)
        return code if isinstance(code, int) else None
    return None


def _mysql_errno(orig: BaseException | None) -> int | None:
    seen = 0
    while orig is not None and seen < 3:
        driver = type(orig).__module__.partition(".")[0]
        if driver in _MYSQL_DRIVERS and orig.args and isinstance(orig.args[0], int):
            return orig.args[0]
        orig = orig.__cause__
        seen += 1
    return None


def _constraint_name(orig: BaseException | None) -> str | None:
    while orig is not None:
        name = getattr(orig, "constraint_name", None)
        if isinstance(name, str):
            return name
        orig = orig.__cause__
    return None


def translate_error(
    exc: BaseException, *, model: type[Any] | None = None, id: Any = None, pool: Any = None
) -> UnderlayError | None:
    """Map a SQLAlchemy or driver error to the most specific underlay error.

    Args:
        exc: The exception raised by SQLAlchemy or the driver.
        model: The mapped class involved, when the caller knows it.
        id: The primary key involved, when the caller knows it.
        pool: The engine's connection pool, to name its size in a `PoolTimeoutError`.

    Returns:
        The underlay error to raise (``raise translated from exc``), or ``None`` when the error
        has no underlay meaning and should propagate unchanged.

    Example:
        >>> from sqlalchemy.orm.exc import StaleDataError
        >>> type(translate_error(StaleDataError("boom"))).__name__
        'StaleVersionError'
    """
    if not isinstance(exc, sa_exc.DBAPIError):
        return _translate_other(exc, model=model, id=id, pool=pool)
    if exc.connection_invalidated:
        # the dialect classified the driver error as a disconnect
        return ConnectionLostError()
    orig = exc.orig
    kind, detail = _classify(orig)
    if kind is None:
        return None
    constraint = _constraint_name(orig)
    if kind is DuplicateError:
        return DuplicateError(
            f"Duplicate value: {detail}. Use a different value or upsert instead.",
            model=model,
            id=id,
            constraint=constraint,
        )
    if kind is ForeignKeyError:
        return ForeignKeyError(
            f"Foreign key violated: {detail}.", model=model, id=id, constraint=constraint
        )
    if kind is ConstraintError:
        return ConstraintError(f"Constraint violated: {detail}.", constraint=constraint)
    if kind is ReadOnlySessionError:
        return ReadOnlySessionError(
            f"The transaction is read-only: {detail}. Open a db.session() to write."
        )
    return SerializationError(
        f"A concurrent transaction won: {detail}. Run the unit of work again.",
        model=model,
        id=id,
    )


def _translate_other(
    exc: BaseException, *, model: type[Any] | None, id: Any, pool: Any
) -> UnderlayError | None:
    if isinstance(exc, UnderlayError):
        return exc
    if isinstance(exc, sa_exc.StatementError) and isinstance(exc.orig, UnderlayError):
        return exc.orig  # raised by our own code inside SQLAlchemy (a column default)
    if isinstance(exc, orm_exc.StaleDataError):
        return StaleVersionError(model=model, id=id)
    if isinstance(exc, sa_exc.NoResultFound):
        return NotFoundError(model=model, id=id)
    if isinstance(exc, sa_exc.MultipleResultsFound):
        return MultipleResultsError(model=model)
    if isinstance(exc, sa_exc.TimeoutError):
        return _pool_timeout_error(pool)
    return None


def _classify(orig: BaseException | None) -> tuple[type[UnderlayError] | None, str]:
    """Return the underlay error class for a driver error and the server's message."""
    detail = str(orig).strip().splitlines()[0] if orig is not None else ""
    errno = _mysql_errno(orig)
    # MySQL drivers may carry a SQLSTATE too, but only the class ("23000"): the number decides.
    if errno is not None:
        if orig is not None and len(orig.args) > 1:
            detail = str(orig.args[1])  # the server's message, without the driver's tuple
        return _MYSQL_KINDS.get(errno), detail
    state = _sqlstate(orig)
    if state is not None:
        return _PG_KINDS.get(state), detail
    code = _sqlite_code(orig)
    return (None if code is None else _sqlite_kind(code)), detail


def _sqlite_kind(code: int) -> type[UnderlayError] | None:
    if code in _SQLITE_UNIQUE:
        return DuplicateError
    if code == _SQLITE_FOREIGN_KEY:
        return ForeignKeyError
    if code in (_SQLITE_NOT_NULL, _SQLITE_CHECK):
        return ConstraintError
    if code & 0xFF in _SQLITE_BUSY_OR_LOCKED:
        return SerializationError
    return None
