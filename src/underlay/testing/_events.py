"""Record what a database's transactions wrote (for tests of code that writes)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from underlay.events import TransactionWrites, Write

if TYPE_CHECKING:
    from underlay.database import Database

__all__ = ["TransactionLog", "record_transactions"]


@dataclass
class TransactionLog:
    """The transactions a `record_transactions` block saw end.

    Attributes:
        committed: The writes of each committed transaction, in commit order.
        rolled_back: The writes of each transaction that rolled back.
    """

    committed: list[TransactionWrites] = field(default_factory=list)
    rolled_back: list[TransactionWrites] = field(default_factory=list)

    @property
    def writes(self) -> list[Write]:
        """Every write of every committed transaction, in order."""
        return [write for writes in self.committed for write in writes]

    async def after_commit(self, writes: TransactionWrites) -> None:
        """Keep a committed transaction's writes."""
        self.committed.append(writes)

    def after_rollback(self, writes: TransactionWrites) -> None:
        """Keep a rolled-back transaction's writes."""
        self.rolled_back.append(writes)


@contextmanager
def record_transactions(database: Database) -> Iterator[TransactionLog]:
    """Subscribe a `TransactionLog` to ``database`` for the block.

    Example:
        >>> with record_transactions(db) as log:  # doctest: +SKIP
        ...     async with db.session() as session:
        ...         session.add(User(email="ada@example.com"))
        >>> [write.kind for write in log.writes]  # doctest: +SKIP
        ['insert']
    """
    log = TransactionLog()
    unsubscribe = database.subscribe(log)
    try:
        yield log
    finally:
        unsubscribe()
