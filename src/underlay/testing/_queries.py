"""Count the SQL statements a block of code sends (for N+1 tests)."""

from __future__ import annotations

import re
import threading
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import ORMExecuteState, Session

from underlay.models._lazy import lazy_load_name

__all__ = ["QueryCounter", "assert_max_queries", "count_queries"]

# Transaction bookkeeping the fixtures and the unit of work emit; not the code under test.
_BOOKKEEPING = re.compile(
    r"^\s*(SAVEPOINT|RELEASE\s+SAVEPOINT|ROLLBACK\s+TO\s+SAVEPOINT|BEGIN|COMMIT|ROLLBACK)\b",
    re.IGNORECASE,
)


class QueryCounter:
    """The statements seen while a :func:`count_queries` block was open.

    Attributes:
        statements: The SQL text of each statement, in order (batched executemany counts once).
        lazy_loads: ``"Model.relationship"`` for each lazy load a session started, in order
            (each one is a query that a loader option could have folded into another).
    """

    def __init__(self) -> None:
        self.statements: list[str] = []
        self.lazy_loads: list[str] = []
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        """How many statements were sent."""
        return len(self.statements)

    def _record(  # noqa: PLR0917 - SQLAlchemy's before_cursor_execute signature
        self,
        conn: Any,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        if not _BOOKKEEPING.match(statement):
            with self._lock:
                self.statements.append(statement)

    def _record_orm(self, state: ORMExecuteState) -> None:
        name = lazy_load_name(state)
        if name is not None:
            with self._lock:
                self.lazy_loads.append(name)


class count_queries:  # noqa: N801 - used like a function, as a context manager
    """Count the statements every engine sends while the block runs.

    Use it with ``with`` or ``async with``; the block may ``await`` freely. Works for sync and
    async engines (async engines send through their sync core). Savepoint and transaction
    bookkeeping is not counted.

    Example:
        >>> from sqlalchemy import create_engine, text
        >>> engine = create_engine("sqlite://")
        >>> with count_queries() as counter, engine.connect() as conn:
        ...     _ = conn.execute(text("select 1"))
        >>> counter.count
        1
        >>> engine.dispose()  # closes the pooled connection (Python 3.13 warns about a leak)
    """

    def __init__(self) -> None:
        self.counter = QueryCounter()

    def __enter__(self) -> QueryCounter:
        event.listen(Engine, "before_cursor_execute", self.counter._record)
        event.listen(Session, "do_orm_execute", self.counter._record_orm)
        return self.counter

    def __exit__(self, *exc_info: object) -> None:
        event.remove(Engine, "before_cursor_execute", self.counter._record)
        event.remove(Session, "do_orm_execute", self.counter._record_orm)

    async def __aenter__(self) -> QueryCounter:
        return self.__enter__()

    async def __aexit__(self, *exc_info: object) -> None:
        self.__exit__(*exc_info)


class assert_max_queries(count_queries):  # noqa: N801 - used like a function
    """Fail with an ``AssertionError`` listing the statements if the block sends too many.

    The message also names the relationships that were lazy-loaded in the block (the usual
    cause of an N+1), with the loader option to use instead.

    Use it with ``with`` or ``async with``. The check runs when the block exits without an
    exception of its own.

    Args:
        limit: The most statements the block may send.

    Example:
        >>> from sqlalchemy import create_engine, text
        >>> engine = create_engine("sqlite://")
        >>> with assert_max_queries(0), engine.connect() as conn:
        ...     _ = conn.execute(text("select 1"))
        Traceback (most recent call last):
        ...
        AssertionError: expected at most 0 queries, 1 were sent:
          1. select 1
        >>> engine.dispose()
    """

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def __exit__(self, *exc_info: object) -> None:
        super().__exit__(*exc_info)
        counter = self.counter
        if exc_info[0] is None and counter.count > self.limit:
            listing = "\n".join(f"  {i}. {sql}" for i, sql in enumerate(counter.statements, 1))
            lazy = ""
            if counter.lazy_loads:
                seen = {name: counter.lazy_loads.count(name) for name in counter.lazy_loads}
                lazy = "\nlazy loads (load them with the query, e.g. selectinload): " + ", ".join(
                    f"{name} x{times}" for name, times in seen.items()
                )
            raise AssertionError(
                f"expected at most {self.limit} queries, {counter.count} were sent:\n{listing}"
                + lazy
            )
