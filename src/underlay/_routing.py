"""Read replicas: pick an engine for a read-only session, and read-your-writes by WAL position.

After a session that wrote commits on the primary, its commit position
(`pg_current_wal_lsn()`, read *after* COMMIT, so it covers the commit record) becomes the
context's consistency token. A later read-only session goes to a replica only once that
replica's replay position (`pg_last_wal_replay_lsn()`) has reached the token; it waits up to
`replica_wait` seconds for that, polling, and otherwise reads from the primary. A replica
that cannot be reached, or lags the newest commit this process saw by more than
`replica_max_lag` bytes, is skipped for `replica_retry` seconds; the caller never sees an
error for it. Time windows ("read the primary for 2 s after a write") are not used: they are
either too long (wasted primary reads) or too short (stale reads under load).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Final

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from underlay.exceptions import InvalidQueryError, UnderlayError

__all__ = ["ReplicaRouter", "ReplicaStats", "format_lsn", "parse_lsn"]

logger = logging.getLogger("underlay.database.replicas")

_REPLAY: Final = text("SELECT pg_last_wal_replay_lsn()::text")
_POLL_INTERVAL: Final = 0.001


def parse_lsn(value: str) -> int:
    """Return a PostgreSQL LSN (`"16/B374D848"`) as an integer, for comparisons.

    Raises:
        InvalidQueryError: `value` is not an LSN (for example a forged consistency token).
    """
    high, sep, low = value.partition("/")
    if sep and 0 < len(high) <= 8 and 0 < len(low) <= 8 and _is_hex(high) and _is_hex(low):
        return (int(high, 16) << 32) | int(low, 16)
    raise InvalidQueryError(
        f"{value[:40]!r} is not a consistency token; pass one from consistency_token()."
    )


def _is_hex(part: str) -> bool:
    return all(char in "0123456789abcdefABCDEF" for char in part)


def format_lsn(value: int) -> str:
    """Return an integer LSN in PostgreSQL's `X/Y` text form."""
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


@dataclass
class _Replica:
    engine: AsyncEngine
    replayed: int = 0  # the highest replay position seen on it
    checked_at: float = float("-inf")
    down_until: float = float("-inf")


@dataclass
class ReplicaStats:
    """Counts of where read-only sessions went, for logs, metrics and tests.

    Attributes:
        replica: Read-only sessions served by a replica.
        primary_fallback: Read-only sessions sent to the primary, by reason
            (`"not_replayed"`, `"down"`, `"lagging"`, `"no_replica"`).
        waits: Seconds each barrier wait took before the replica had replayed the token.
    """

    replica: int = 0
    primary_fallback: Counter[str] = field(default_factory=Counter)
    waits: list[float] = field(default_factory=list)


class ReplicaRouter:
    """Choose the engine for read-only sessions among replicas, or fall back to the primary."""

    def __init__(
        self,
        replicas: Sequence[AsyncEngine],
        *,
        wait: float,
        max_lag: int | None,
        check_interval: float,
        retry: float,
    ) -> None:
        self.replicas = [_Replica(engine) for engine in replicas]
        self.wait = wait
        self.max_lag = max_lag
        self.check_interval = check_interval
        self.retry = retry
        self.newest_commit = 0
        self.stats = ReplicaStats()
        self._turn = itertools.count()
        self.token: ContextVar[int] = ContextVar(f"underlay.lsn.{id(self)}", default=0)

    def note_commit(self, lsn: int) -> None:
        """Record a commit position: the context's token and the process's newest commit."""
        self.newest_commit = max(self.newest_commit, lsn)
        if lsn > self.token.get():
            self.token.set(lsn)

    async def choose(self) -> AsyncEngine | None:
        """Return a replica that has replayed this context's token, or `None` for the primary."""
        if not self.replicas:
            self.stats.primary_fallback["no_replica"] += 1
            return None
        token = self.token.get()
        start = next(self._turn)
        count = len(self.replicas)
        reason = "down"
        for offset in range(count):
            replica = self.replicas[(start + offset) % count]
            now = time.monotonic()
            if replica.down_until > now:
                continue
            try:
                if now - replica.checked_at >= self.check_interval:
                    await self._check(replica)
                if self._lagging(replica):
                    reason = "lagging"
                    continue
                if token > replica.replayed and not await self._wait_for(replica, token):
                    reason = "not_replayed"
                    continue
            except (OSError, SQLAlchemyError, UnderlayError, TimeoutError):
                replica.down_until = time.monotonic() + self.retry
                logger.warning(
                    "replica %s unreachable; reading from the primary for %.1f s",
                    replica.engine.url.render_as_string(hide_password=True),
                    self.retry,
                    exc_info=True,
                )
                reason = "down"
                continue
            self.stats.replica += 1
            return replica.engine
        self.stats.primary_fallback[reason] += 1
        logger.info("read-only session sent to the primary (%s)", reason)
        return None

    def mark_down(self, engine: AsyncEngine) -> None:
        """Skip `engine` for `retry` seconds (its connection failed at session start)."""
        for replica in self.replicas:
            if replica.engine is engine:
                replica.down_until = time.monotonic() + self.retry
                replica.checked_at = float("-inf")

    def _lagging(self, replica: _Replica) -> bool:
        return self.max_lag is not None and self.newest_commit - replica.replayed > self.max_lag

    async def _check(self, replica: _Replica) -> None:
        async with asyncio.timeout(max(self.wait, 1.0)):
            replica.replayed = max(replica.replayed, await _replayed(replica.engine))
        replica.checked_at = time.monotonic()

    async def _wait_for(self, replica: _Replica, token: int) -> bool:
        started = time.monotonic()
        deadline = started + self.wait
        async with asyncio.timeout(self.wait + 1.0), replica.engine.connect() as conn:
            while True:
                replayed = _lsn_or_zero((await conn.execute(_REPLAY)).scalar_one())
                replica.replayed = max(replica.replayed, replayed)
                if replayed >= token:
                    self.stats.waits.append(time.monotonic() - started)
                    return True
                if time.monotonic() >= deadline:
                    return False
                await asyncio.sleep(_POLL_INTERVAL)


async def _replayed(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return _lsn_or_zero((await conn.execute(_REPLAY)).scalar_one())


def _lsn_or_zero(value: str | None) -> int:
    # NULL on a server that is not in recovery: treat it as having replayed nothing.
    return 0 if value is None else parse_lsn(value)
