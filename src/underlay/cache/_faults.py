"""The fault policy of a cache: deadlines, the circuit breaker, fail-safe invalidation.

Reads fail open (a failure is a miss). Invalidations fail safe: retried, and one that still
cannot be delivered is owed as an epoch bump (every entry invalid), sent before this process
trusts the store again and retried in the background so other processes see it promptly.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from underlay.cache._breaker import CircuitBreaker
from underlay.cache._deadline import Deadlines
from underlay.cache._stats import CacheStats

__all__ = ["FAILED", "Failed", "FaultPolicy"]

logger = logging.getLogger("underlay.cache")

R = TypeVar("R")


class Failed:
    """The result of a cache operation that failed, timed out or was skipped."""


FAILED: Final = Failed()


class FaultPolicy(abc.ABC):
    """Runs store operations under the policy; subclasses provide ``_bump``."""

    #: Exceptions that mean "the store failed" (fail open), as opposed to bugs.
    _store_errors: tuple[type[BaseException], ...] = ()

    @staticmethod
    def _client_fault(exc: BaseException) -> bool:
        """Whether ``exc``, not one of `_store_errors`, still means "the store failed"."""
        return False

    stats: CacheStats
    timeout: float | None
    invalidation_timeout: float | None
    invalidation_attempts: int
    _breaker: CircuitBreaker
    _sequence: int
    _lost: int
    _recovery: asyncio.Task[None] | None
    _deadlines: dict[float, Deadlines]

    @abc.abstractmethod
    async def _bump(self, names: tuple[str, ...], *, epoch: bool) -> None:
        """Move the generation of each namespace (and the epoch) to a value never used."""

    async def _attempt(
        self, operation: Callable[..., Awaitable[R]], deadline: float | None, *args: Any
    ) -> Any:
        if not self._breaker.allow():
            self.stats.skipped += 1
            return FAILED
        try:
            if deadline is None:
                result = await operation(*args)
            else:
                # One shared timer per delay rather than one per operation (see Deadlines).
                deadlines = self._deadlines.get(deadline)
                if deadlines is None:
                    deadlines = self._deadlines[deadline] = Deadlines(deadline)
                result = await deadlines.run(operation, *args)
        except self._store_errors as exc:
            return self._failed(exc)
        except (AttributeError, TypeError) as exc:
            if self._client_fault(exc):
                return self._failed(exc)
            self._breaker.failure()
            raise
        except BaseException:
            self._breaker.failure()
            raise
        self._breaker.success()
        return result

    def _failed(self, exc: BaseException) -> Failed:
        self._breaker.failure()
        self.stats.errors += 1
        logger.warning("cache operation failed: %s", type(exc).__name__ + f": {exc}")
        return FAILED

    async def _guarded_read(self, operation: Callable[..., Awaitable[R]], *args: Any) -> R | Failed:
        """Run ``operation(*args)``, a read or fill: fail open, within the deadline."""
        # Never before recovery: an owed epoch bump goes first.
        if self._lost and not await self._recover(self.timeout):
            self.stats.skipped += 1
            return FAILED
        result: R | Failed = await self._attempt(operation, self.timeout, *args)
        return result

    async def _invalidate(
        self, operation: Callable[[], Awaitable[None]], *, deadline: float | Failed | None = FAILED
    ) -> None:
        """Run an invalidation: retried within the budget, else covered by an epoch bump."""
        if isinstance(deadline, Failed):
            deadline = self.invalidation_timeout
        self._sequence += 1
        if self._lost:
            # The epoch bump owed for an earlier loss invalidates this key as well.
            if not await self._recover(self.invalidation_timeout):
                self._lose()
            return
        for attempt in range(self.invalidation_attempts):
            if attempt:
                await asyncio.sleep(0.01 * 2**attempt)
            if not isinstance(await self._attempt(operation, deadline), Failed):
                self.stats.invalidations += 1
                return
            if self._breaker.is_open:
                break
        self._lose()

    def _lose(self) -> None:
        self._lost += 1
        self.stats.invalidations_lost += 1
        logger.error("cache invalidation could not be delivered; every entry will be dropped")
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.get_running_loop().create_task(self._recover_loop())

    async def _recover(self, deadline: float | None) -> bool:
        """Bump the epoch owed for lost invalidations; return whether none is owed any more."""
        owed = self._lost
        if not owed:
            return True
        result = await self._attempt(lambda: self._bump((), epoch=True), deadline)
        if isinstance(result, Failed):
            return False
        if self._lost == owed:  # a loss recorded meanwhile may predate the bump's effect
            self._lost = 0
            self.stats.invalidations += 1
            logger.warning("cache reachable again: epoch bumped, every older entry dropped")
        return self._lost == 0

    async def _recover_loop(self) -> None:
        # Other processes keep serving their view until this bump lands, so retry promptly
        # instead of waiting for this process's next cache call.
        interval = min(1.0, self._breaker.cooldown)
        while self._lost:
            await asyncio.sleep(interval)
            await self._recover(self.invalidation_timeout)
