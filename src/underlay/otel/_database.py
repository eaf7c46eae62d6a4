"""Commit spans and write metrics for one database, from its session events and the seam."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from opentelemetry.trace import Status, StatusCode
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from underlay.events import TransactionWrites
from underlay.otel._names import ATTRIBUTES, METRIC_NAMES, SPAN_NAMES

if TYPE_CHECKING:
    from underlay.database import Database

__all__ = ["DatabaseInstruments"]

_SPAN: Final = "underlay.otel.commit"


class DatabaseInstruments:
    """A commit span and histogram (every commit) and write counters (from the seam)."""

    def __init__(self, database: Database, tracer: Any, meter: Any) -> None:
        self._database = database
        self._tracer = tracer
        self._system = database.engine.dialect.name
        self._commit_duration = meter.create_histogram(
            METRIC_NAMES["commit_duration"],
            unit="s",
            description="Duration of COMMIT, flush included, per root transaction",
        )
        self._writes = meter.create_counter(
            METRIC_NAMES["writes"],
            unit="{write}",
            description="Writes (statements or flushed rows) of committed transactions",
        )
        self._rollbacks = meter.create_counter(
            METRIC_NAMES["rollbacks"],
            unit="{transaction}",
            description="Transactions that wrote and then rolled back",
        )
        self._hooks: list[tuple[str, Callable[..., Any]]] = [
            ("before_commit", self._before_commit),
            ("after_commit", self._after_commit),
            ("after_transaction_end", self._after_transaction_end),
        ]
        self._unsubscribe: Callable[[], None] | None = None

    def install(self) -> None:
        """Listen to the database's sessions and subscribe to its transaction events."""
        for name, hook in self._hooks:
            event.listen(self._database.sync_session_class, name, hook)
        self._unsubscribe = self._database.subscribe(self)

    def uninstall(self) -> None:
        """Stop listening."""
        for name, hook in self._hooks:
            event.remove(self._database.sync_session_class, name, hook)
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    # -- the transaction-events seam -------------------------------------------------------

    async def after_commit(self, writes: TransactionWrites) -> None:
        """Count the committed writes per table and kind."""
        for write in writes:
            for table in write.tables:
                self._writes.add(
                    1,
                    {
                        ATTRIBUTES["table"]: str(getattr(table, "fullname", table)),
                        ATTRIBUTES["kind"]: write.kind,
                        ATTRIBUTES["db_system"]: self._system,
                    },
                )

    def after_rollback(self, writes: TransactionWrites) -> None:
        """Count a writing transaction that rolled back."""
        self._rollbacks.add(1, {ATTRIBUTES["db_system"]: self._system})

    # -- session events: a span from the start of commit() to its end ----------------------

    def _before_commit(self, session: Session) -> None:
        if session.in_nested_transaction() or _SPAN in session.info:
            return
        span = self._tracer.start_span(
            SPAN_NAMES["commit"], attributes={ATTRIBUTES["db_system"]: self._system}
        )
        session.info[_SPAN] = (span, time.perf_counter())

    def _after_commit(self, session: Session) -> None:
        if not session.in_nested_transaction():
            self._finish(session, "committed")

    def _after_transaction_end(self, session: Session, transaction: SessionTransaction) -> None:
        if transaction.parent is None:
            self._finish(session, "failed")  # commit() raised: no after_commit came

    def _finish(self, session: Session, outcome: str) -> None:
        started = session.info.pop(_SPAN, None)
        if started is None:
            return
        span, start = started
        span.set_attribute(ATTRIBUTES["outcome"], outcome)
        if outcome != "committed":
            span.set_status(Status(StatusCode.ERROR, "the commit did not complete"))
        span.end()
        self._commit_duration.record(
            time.perf_counter() - start,
            {ATTRIBUTES["db_system"]: self._system, ATTRIBUTES["outcome"]: outcome},
        )
