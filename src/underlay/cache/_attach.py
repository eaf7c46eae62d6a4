"""Transaction-coupled invalidation: what a transaction wrote is invalidated after it commits.

Writes are collected per transaction from SQLAlchemy's session events (ORM flushes, ORM and
Core DML sent through the session, :func:`~underlay.record_write` entries). Each savepoint
keeps its own record: a rolled-back savepoint's writes are dropped, a released one's join
its parent. The first write of a transaction schedules the delivery with
:func:`~underlay.database.call_after_commit`, so it is awaited inside ``commit()`` once the
database has committed (invalidating earlier would let a reader re-cache the old row before
the commit lands); a rollback discards it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Final

from sqlalchemy import event, inspect
from sqlalchemy.orm import Mapper, ORMExecuteState, Session, SessionTransaction, UOWTransaction
from sqlalchemy.sql import operators
from sqlalchemy.sql.expression import BinaryExpression, BindParameter, BooleanClauseList, FromClause

from underlay.cache._keys import lists_namespace, row_namespace, rows_namespace
from underlay.cache._protocol import Cache
from underlay.database import WRITES_KEY, call_after_commit

if TYPE_CHECKING:
    from underlay.database import Database

__all__ = ["attach", "session_touches"]

_TRACKER: Final = "underlay.cache.writes"
_ROOT: Final = "root"


class _Writes:
    """The namespaces one transaction (and each of its open savepoints) invalidates."""

    def __init__(self) -> None:
        self.buckets: dict[object, set[str]] = {}
        self.tables: dict[object, set[FromClause]] = {}

    def add(self, scope: object, tables: Iterable[FromClause], names: Iterable[str]) -> None:
        self.buckets.setdefault(scope, set()).update(names)
        self.tables.setdefault(scope, set()).update(tables)

    def drop(self, scope: object) -> None:
        self.buckets.pop(scope, None)
        self.tables.pop(scope, None)

    def merge(self, scope: object, into: object) -> None:
        names, tables = self.buckets.pop(scope, None), self.tables.pop(scope, None)
        if names is not None and tables is not None:
            self.add(into, tables, names)

    def namespaces(self) -> tuple[str, ...]:
        return tuple(sorted(set().union(*self.buckets.values())))

    def touched(self) -> set[FromClause]:
        return set().union(*self.tables.values())


def attach(database: Database) -> Callable[[], None]:
    """Make ``database``'s sessions invalidate ``database.cache`` after each commit.

    Listeners go on the database's own session class, so other databases are unaffected.

    Returns:
        A function that removes the listeners again (the test plugin couples a per-test
        cache to its session-wide database this way).
    """
    if database.cache is None:
        return lambda: None
    listeners = _Listeners(database.cache)
    session_class = database.sync_session_class
    hooks: list[tuple[str, Callable[..., Any]]] = [
        ("after_flush", listeners.after_flush),
        ("do_orm_execute", listeners.on_execute),
        ("before_commit", listeners.before_commit),
        ("after_rollback", listeners.after_rollback),
        ("after_transaction_end", listeners.after_transaction_end),
    ]
    for name, hook in hooks:
        event.listen(session_class, name, hook)

    def detach() -> None:
        for name, hook in hooks:
            event.remove(session_class, name, hook)

    return detach


class _Listeners:
    def __init__(self, cache: Cache) -> None:
        self.cache = cache

    def record(self, session: Session, tables: Iterable[FromClause], names: Iterable[str]) -> None:
        writes = session.info.get(_TRACKER)
        if writes is None:
            writes = session.info[_TRACKER] = _Writes()
            call_after_commit(session, _deliverer(self.cache, writes))
        writes.add(_scope(session), tables, names)

    def after_flush(self, session: Session, _flush: UOWTransaction) -> None:
        modified = [o for o in session.dirty if session.is_modified(o, include_collections=False)]
        for obj in (*session.new, *modified, *session.deleted):
            state = inspect(obj)
            mapper = state.mapper
            names = {lists_namespace(table) for table in mapper.tables}
            for ident in {state.identity, tuple(mapper.primary_key_from_instance(obj))}:
                if ident is not None and None not in ident:
                    names.add(row_namespace(mapper, ident))
            self.record(session, mapper.tables, names)

    def on_execute(self, state: ORMExecuteState) -> None:
        if not (state.is_insert or state.is_update or state.is_delete):
            return
        mapper = state.bind_mapper
        if mapper is not None:
            tables: list[FromClause] = list(mapper.tables)
            ids = None if state.is_insert else _target_ids(state, mapper)
            if ids is not None:
                names = {lists_namespace(table) for table in tables}
                names.update(row_namespace(mapper, ident) for ident in ids)
                self.record(state.session, tables, names)
                return
        else:
            table = getattr(state.statement, "table", None)
            tables = [table] if isinstance(table, FromClause) else []
        if tables:
            self.record(state.session, tables, _all_rows(tables))

    def before_commit(self, session: Session) -> None:
        if session.in_nested_transaction():
            return  # releasing a savepoint: the outer transaction may still roll back
        # Read, not popped: other listeners may consume the same records at commit.
        for model, ids in session.info.get(WRITES_KEY, ()):
            mapper: Mapper[Any] = inspect(model)
            tables = list(mapper.tables)
            if ids is None:
                self.record(session, tables, _all_rows(tables))
            else:
                names = {lists_namespace(table) for table in tables}
                names.update(row_namespace(mapper, ident) for ident in ids)
                self.record(session, tables, names)

    def after_rollback(self, session: Session) -> None:
        writes = session.info.get(_TRACKER)
        nested = session.get_nested_transaction()
        if nested is not None:
            if writes is not None:
                writes.drop(nested)
            return
        session.info.pop(_TRACKER, None)
        session.info.pop(WRITES_KEY, None)

    def after_transaction_end(self, session: Session, transaction: SessionTransaction) -> None:
        if transaction.parent is None:
            # The delivery scheduled for this transaction holds its own reference.
            session.info.pop(_TRACKER, None)
            session.info.pop(WRITES_KEY, None)  # they belonged to the transaction that ended
            return
        writes = session.info.get(_TRACKER)
        if writes is not None and transaction.nested:
            writes.merge(transaction, _enclosing(transaction.parent))


def _scope(session: Session) -> object:
    return session.get_nested_transaction() or _ROOT


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


def _all_rows(tables: Iterable[FromClause]) -> set[str]:
    return {name for table in tables for name in (lists_namespace(table), rows_namespace(table))}


def _deliverer(cache: Cache, writes: _Writes) -> Any:
    async def deliver() -> None:
        names = writes.namespaces()
        if names:
            await cache.bump_namespace(*names)

    return deliver


def session_touches(session: Session, tables: Iterable[FromClause]) -> bool:
    """Return whether ``session``'s transaction has written, or will flush, any of ``tables``.

    Such a session sees its own uncommitted rows: it must not read them from the cache, nor
    publish them to it.
    """
    wanted = set(tables)
    writes = session.info.get(_TRACKER)
    if writes is not None and wanted & writes.touched():
        return True
    for obj in (*session.new, *session.dirty, *session.deleted):
        if wanted.intersection(inspect(obj).mapper.tables):
            return True
    return bool(wanted & _pending_raw_writes(session))


def _pending_raw_writes(session: Session) -> set[FromClause]:
    found: set[FromClause] = set()
    for model, _ids in session.info.get(WRITES_KEY, ()):
        found.update(inspect(model).mapper.tables)
    return found
