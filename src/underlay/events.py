"""The transaction-events seam: what a transaction wrote, and whether it committed.

This module sits at the bottom of the layers (it imports only SQLAlchemy). `Database` drives
it; the cache, the outbox, metrics and applications subscribe to it, so none of them needs
to import the others:

* `TransactionObserver` is the protocol a subscriber implements: `after_commit` is awaited
  inside ``commit()`` once the database has committed, `after_rollback` is called when the
  transaction rolls back. Both receive the transaction's `TransactionWrites`.
* Writes are collected from SQLAlchemy's session events (ORM flushes, ORM-enabled and Core
  INSERT / UPDATE / DELETE sent through the session) and from `record_write`, for writes
  made on the raw driver connection (a COPY, for instance).
* Savepoints are respected: the writes of a rolled-back savepoint are dropped, those of a
  released one join the enclosing transaction, so observers only hear of what committed.
* A transaction that wrote nothing is not reported, and with no observer subscribed the
  write tracking is not installed at all: it costs nothing.

`call_after_commit` schedules one coroutine after the current transaction commits, for code
that needs no write list.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, runtime_checkable

from sqlalchemy import event, inspect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapper, ORMExecuteState, Session, SessionTransaction, UOWTransaction
from sqlalchemy.sql import operators
from sqlalchemy.sql.expression import BinaryExpression, BindParameter, BooleanClauseList, FromClause

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "TransactionObserver",
    "TransactionWrites",
    "Write",
    "call_after_commit",
    "observer_for_cache",
    "observers_of",
    "record_write",
    "register_cache_observer",
    "subscribe",
    "transaction_writes",
]

logger = logging.getLogger("underlay.events")

#: ``Session.info`` key: callbacks waiting for the transaction to commit.
AFTER_COMMIT_KEY: Final = "underlay.after_commit"
#: ``Session.info`` key: callbacks whose transaction committed, awaited by the session.
DUE_KEY: Final = "underlay.after_commit.due"
_TRACKER: Final = "underlay.writes"
_OBSERVERS: Final = "_underlay_observers"
_ROOT: Final = "root"

WriteKind = Literal["insert", "update", "delete", "write"]


@dataclass(frozen=True, slots=True)
class Write:
    """One write a transaction made.

    Attributes:
        tables: The tables written.
        mapper: The mapped class's mapper, or ``None`` for Core DML on a bare table.
        ids: Primary keys of the rows written (a value, or a tuple for composite keys), or
            ``None`` when they are not known: treat it as "any row of these tables".
        kind: ``"insert"``, ``"update"``, ``"delete"``, or ``"write"`` when the kind is not
            known (a flush that inserted and updated, a raw write recorded by hand).
    """

    tables: tuple[FromClause, ...]
    mapper: Mapper[Any] | None
    ids: tuple[Any, ...] | None
    kind: WriteKind

    @property
    def model(self) -> type[Any] | None:
        """Return the mapped class written, or ``None`` for Core DML on a bare table."""
        return None if self.mapper is None else self.mapper.class_


class TransactionWrites:
    """The writes of one transaction, kept per open savepoint until it ends."""

    __slots__ = ("_scopes",)

    def __init__(self) -> None:
        self._scopes: dict[object, list[Write]] = {}

    def add(self, scope: object, write: Write) -> None:
        """Record ``write`` under ``scope`` (a savepoint, or the transaction itself)."""
        self._scopes.setdefault(scope, []).append(write)

    def drop(self, scope: object) -> None:
        """Forget what a rolled-back savepoint wrote."""
        self._scopes.pop(scope, None)

    def merge(self, scope: object, into: object) -> None:
        """Move what a released savepoint wrote into its enclosing scope."""
        writes = self._scopes.pop(scope, None)
        if writes:
            self._scopes.setdefault(into, []).extend(writes)

    def __iter__(self) -> Iterator[Write]:
        for writes in list(self._scopes.values()):
            yield from writes

    def __bool__(self) -> bool:
        return any(self._scopes.values())

    def __len__(self) -> int:
        return sum(len(writes) for writes in self._scopes.values())

    def tables(self) -> set[FromClause]:
        """Return every table written."""
        return {table for write in self for table in write.tables}

    def models(self) -> set[type[Any]]:
        """Return every mapped class written."""
        return {write.mapper.class_ for write in self if write.mapper is not None}

    def touches(self, tables: Iterable[FromClause]) -> bool:
        """Return whether any of ``tables`` was written."""
        return not self.tables().isdisjoint(tables)

    def __repr__(self) -> str:
        return f"TransactionWrites({list(self)!r})"


@runtime_checkable
class TransactionObserver(Protocol):
    """What a subscriber to a database's transactions implements.

    Both methods see only transactions that wrote something. Exceptions are logged and
    swallowed: the transaction's outcome is already settled, and one observer's failure
    must not keep the others from hearing of it.
    """

    async def after_commit(self, writes: TransactionWrites) -> None:
        """Awaited inside ``commit()``, after the database committed ``writes``."""

    def after_rollback(self, writes: TransactionWrites) -> None:
        """Called when the transaction that made ``writes`` rolled back (none persisted)."""


def subscribe(session_class: type[Session], observer: TransactionObserver) -> Callable[[], None]:
    """Make ``observer`` hear of every transaction of sessions of ``session_class``.

    `Database.subscribe` is the usual way in; this is for code that builds its own session
    class. The write tracking is installed with the first observer and removed with the
    last, so a class with no observer pays nothing.

    Returns:
        A function that unsubscribes ``observer`` (calling it twice is harmless).
    """
    if not isinstance(observer, TransactionObserver):
        raise TypeError(
            f"{observer!r} is not a TransactionObserver (after_commit / after_rollback)"
        )
    observers: list[TransactionObserver] | None = session_class.__dict__.get(_OBSERVERS)
    if observers is None:
        observers = []
        setattr(session_class, _OBSERVERS, observers)
    if not observers:
        for name, hook in _HOOKS:
            event.listen(session_class, name, hook)
    observers.append(observer)

    def unsubscribe() -> None:
        if observer in observers:
            observers.remove(observer)
            if not observers:
                for name, hook in _HOOKS:
                    event.remove(session_class, name, hook)

    return unsubscribe


_cache_observer_factory: Callable[[Any], TransactionObserver] | None = None


def register_cache_observer(factory: Callable[[Any], TransactionObserver]) -> None:
    """Name the observer that keeps a cache coherent (`underlay.cache` registers its own).

    `Database` takes a ``cache=`` without importing the cache layer: it asks this module
    for the cache's observer instead.
    """
    global _cache_observer_factory  # noqa: PLW0603 - one registration, made at import
    _cache_observer_factory = factory


def observer_for_cache(cache: Any) -> TransactionObserver:
    """Return the observer that invalidates ``cache`` after each commit."""
    if _cache_observer_factory is None:
        raise TypeError(
            f"{cache!r} cannot be kept coherent: no cache layer is loaded (import underlay.cache)"
        )
    return _cache_observer_factory(cache)


def observers_of(session_class: type[Session]) -> tuple[TransactionObserver, ...]:
    """Return the observers subscribed to ``session_class``."""
    return tuple(getattr(session_class, _OBSERVERS, ()))


def transaction_writes(session: Session | AsyncSession) -> TransactionWrites | None:
    """Return what ``session``'s current transaction has written so far.

    ``None`` when it wrote nothing, or when no observer is subscribed (nothing is tracked).
    Writes still pending in the session (not flushed yet) are not included.
    """
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    writes = sync.info.get(_TRACKER)
    return writes if isinstance(writes, TransactionWrites) else None


def call_after_commit(
    session: Session | AsyncSession, callback: Callable[[], Awaitable[None]]
) -> None:
    """Schedule ``callback`` to be awaited after the current transaction commits.

    The callback runs inside ``await session.commit()`` (and so before a
    `Database.session` block returns), once the database has committed. A rollback of
    the transaction discards it. Exceptions it raises are logged, never raised: the commit
    already happened. Only sessions made by a `Database` run these callbacks.

    Args:
        session: The session (async, or its ``sync_session`` inside an event hook).
        callback: A zero-argument coroutine function.
    """
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    sync.info.setdefault(AFTER_COMMIT_KEY, []).append(callback)


def record_write(
    session: Session | AsyncSession, model: type[Any], ids: Iterable[Any] | None = None
) -> None:
    """Record that this transaction wrote rows of ``model`` without the ORM seeing it.

    Writes through ``session.execute`` and ``flush`` are observed by SQLAlchemy's events. A
    write on the raw driver connection (for example a COPY) is not: record it here so
    observers such as the cache invalidation hear of it. ``ids=None`` means "any row".
    Without an observer subscribed to the session's database this does nothing.

    Args:
        session: The session whose transaction made the write.
        model: The mapped class whose table was written.
        ids: Primary keys of the written rows, when known.
    """
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    if not getattr(type(sync), _OBSERVERS, None):
        return
    mapper: Mapper[Any] = inspect(model)
    _record(
        sync,
        Write(tuple(mapper.tables), mapper, None if ids is None else tuple(ids), "write"),
    )


# -- the after-commit queue, driven by Database's session class ---------------------------


def on_commit(session: Session) -> None:
    """Move the callbacks of a committed transaction to the due list (session hook)."""
    if session.in_nested_transaction():
        return  # a released savepoint: the outer transaction may still roll back
    pending = session.info.pop(AFTER_COMMIT_KEY, None)
    if pending:
        session.info.setdefault(DUE_KEY, []).extend(pending)


def on_rollback(session: Session) -> None:
    """Discard the callbacks of a transaction that rolled back (session hook)."""
    if not session.in_nested_transaction():
        session.info.pop(AFTER_COMMIT_KEY, None)


# -- write tracking, installed with the first observer ------------------------------------


def _record(session: Session, write: Write) -> None:
    writes = session.info.get(_TRACKER)
    if writes is None:
        writes = session.info[_TRACKER] = TransactionWrites()
        observers = observers_of(type(session))
        call_after_commit(session, _deliverer(observers, writes))
    writes.add(session.get_nested_transaction() or _ROOT, write)


def _deliverer(
    observers: Sequence[TransactionObserver], writes: TransactionWrites
) -> Callable[[], Awaitable[None]]:
    async def deliver() -> None:
        if not writes:
            return
        for observer in observers:
            try:
                await observer.after_commit(writes)
            except Exception:
                logger.exception("transaction observer %r failed after commit", observer)

    return deliver


def _after_flush(session: Session, _flush: UOWTransaction) -> None:
    modified = [o for o in session.dirty if session.is_modified(o, include_collections=False)]
    groups: tuple[tuple[WriteKind, Iterable[Any]], ...] = (
        ("insert", session.new),
        ("update", modified),
        ("delete", session.deleted),
    )
    for kind, objects in groups:
        for obj in objects:
            state = inspect(obj)
            mapper = state.mapper
            idents = {state.identity, tuple(mapper.primary_key_from_instance(obj))}
            ids = tuple(i for i in idents if i is not None and None not in i)
            _record(session, Write(tuple(mapper.tables), mapper, ids, kind))


def _on_execute(state: ORMExecuteState) -> None:
    if state.is_select:
        return
    if state.is_insert:
        kind: WriteKind = "insert"
    elif state.is_update:
        kind = "update"
    elif state.is_delete:
        kind = "delete"
    else:
        return
    mapper = state.bind_mapper
    if mapper is not None:
        ids = None if kind == "insert" else _target_ids(state, mapper)
        _record(
            state.session,
            Write(tuple(mapper.tables), mapper, None if ids is None else tuple(ids), kind),
        )
        return
    table = getattr(state.statement, "table", None)
    if isinstance(table, FromClause):
        _record(state.session, Write((table,), None, None, kind))


def _after_rollback(session: Session) -> None:
    writes = session.info.get(_TRACKER)
    if writes is None:
        return
    nested = session.get_nested_transaction()
    if nested is not None:
        writes.drop(nested)
        return
    session.info.pop(_TRACKER, None)
    if not writes:
        return
    for observer in observers_of(type(session)):
        try:
            observer.after_rollback(writes)
        except Exception:
            logger.exception("transaction observer %r failed after rollback", observer)


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        # The delivery scheduled for this transaction holds its own reference.
        session.info.pop(_TRACKER, None)
        return
    writes = session.info.get(_TRACKER)
    if writes is not None and transaction.nested:
        writes.merge(transaction, _enclosing(transaction.parent))


def _enclosing(transaction: SessionTransaction | None) -> object:
    while transaction is not None and not transaction.nested:
        transaction = transaction.parent
    return transaction or _ROOT


def _target_ids(state: ORMExecuteState, mapper: Mapper[Any]) -> list[Any] | None:
    """Return the primary keys an UPDATE / DELETE is limited to, or ``None`` if unknown.

    Recognised: bulk-by-primary-key parameter lists, and a WHERE clause that ANDs
    ``pk = value`` or ``pk IN (values)`` with anything else. Anything else is "any row".
    """
    if len(mapper.primary_key) != 1:
        return None
    column = mapper.primary_key[0]
    parameters = state.parameters
    if isinstance(parameters, list) and parameters:
        keys = [row.get(column.key) for row in parameters if isinstance(row, dict)]
        return keys if len(keys) == len(parameters) and None not in keys else None
    where = getattr(state.statement, "whereclause", None)
    if where is None:
        return None
    clauses = where.clauses if isinstance(where, BooleanClauseList) else [where]
    if isinstance(where, BooleanClauseList) and where.operator is not operators.and_:
        return None
    for clause in clauses:
        if not (
            isinstance(clause, BinaryExpression)
            and isinstance(clause.right, BindParameter)
            and getattr(clause.left, "key", None) == column.key
            and getattr(getattr(clause.left, "table", None), "name", None) == column.table.name
        ):
            continue
        value = clause.right.effective_value
        if clause.operator is operators.eq and value is not None:
            return [value]
        if clause.operator is operators.in_op and isinstance(value, list | tuple):
            return list(value)
    return None


_HOOKS: Final[tuple[tuple[str, Callable[..., Any]], ...]] = (
    ("after_flush", _after_flush),
    ("do_orm_execute", _on_execute),
    ("after_rollback", _after_rollback),
    ("after_transaction_end", _after_transaction_end),
)
