"""Run a unit of work again when it loses an optimistic race."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from types import TracebackType
from typing import Any, ParamSpec, TypeVar, overload

from underlay.exceptions import SerializationError, StaleVersionError

__all__ = ["ConflictRetry", "RetryAttempt", "retry_on_conflict"]

logger = logging.getLogger("underlay.retry")

_P = ParamSpec("_P")
_T = TypeVar("_T")

#: The conflicts that re-running the whole unit of work can resolve.
DEFAULT_RETRY_ON: tuple[type[BaseException], ...] = (StaleVersionError, SerializationError)


class RetryAttempt:
    """One attempt of a :class:`ConflictRetry` loop: a context manager around the work.

    A conflict raised inside the block is swallowed when another attempt follows (the loop
    then waits and runs the block again); on the last attempt it propagates. Any other
    exception always propagates.

    Attributes:
        number: The attempt's number, starting at 1.
        error: The conflict this attempt swallowed, if any.
    """

    def __init__(
        self, number: int, *, last: bool, retry_on: tuple[type[BaseException], ...]
    ) -> None:
        self.number = number
        self.error: BaseException | None = None
        self._last = last
        self._retry_on = retry_on

    def __enter__(self) -> RetryAttempt:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is None or self._last or not isinstance(exc, self._retry_on):
            return False
        self.error = exc
        return True


class ConflictRetry:
    """A retry policy for optimistic conflicts: a decorator and an async iterator of attempts.

    Made by :func:`retry_on_conflict`; see there for the arguments.
    """

    def __init__(
        self,
        *,
        attempts: int = 5,
        retry_on: tuple[type[BaseException], ...] = DEFAULT_RETRY_ON,
        base_delay: float = 0.01,
        max_delay: float = 1.0,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        if base_delay < 0 or max_delay < 0:
            raise ValueError("delays must not be negative")
        self.attempts = attempts
        self.retry_on = retry_on
        self.base_delay = base_delay
        self.max_delay = max_delay

    def delay(self, attempt: int) -> float:
        """Return how long to wait after failed attempt number ``attempt`` ("full jitter").

        The bound doubles with each attempt, up to ``max_delay``; the wait is uniform below it,
        so competing writers spread out instead of colliding again in lockstep.
        """
        bound = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return random.uniform(0, bound)  # noqa: S311 - jitter, not cryptography

    async def __aiter__(self) -> AsyncIterator[RetryAttempt]:
        for number in range(1, self.attempts + 1):
            attempt = RetryAttempt(number, last=number == self.attempts, retry_on=self.retry_on)
            yield attempt
            if attempt.error is None:
                return
            await self._pause(number, attempt.error)

    def __call__(self, func: Callable[_P, Awaitable[_T]]) -> Callable[_P, Coroutine[Any, Any, _T]]:
        """Wrap ``func`` so each call runs it again on a conflict, as this policy says."""

        @functools.wraps(func)
        async def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _T:
            number = 1
            while True:
                try:
                    return await func(*args, **kwargs)
                except self.retry_on as exc:
                    if number >= self.attempts:
                        raise
                    await self._pause(number, exc)
                number += 1

        return wrapper

    async def _pause(self, number: int, error: BaseException) -> None:
        wait = self.delay(number)
        logger.debug("attempt %d hit %r; retrying in %.3fs", number, error, wait)
        await asyncio.sleep(wait)


@overload
def retry_on_conflict(
    func: Callable[_P, Awaitable[_T]], /
) -> Callable[_P, Coroutine[Any, Any, _T]]: ...


@overload
def retry_on_conflict(
    *,
    attempts: int = 5,
    retry_on: tuple[type[BaseException], ...] = DEFAULT_RETRY_ON,
    base_delay: float = 0.01,
    max_delay: float = 1.0,
) -> ConflictRetry: ...


def retry_on_conflict(
    func: Callable[_P, Awaitable[_T]] | None = None,
    /,
    *,
    attempts: int = 5,
    retry_on: tuple[type[BaseException], ...] = DEFAULT_RETRY_ON,
    base_delay: float = 0.01,
    max_delay: float = 1.0,
) -> Callable[_P, Coroutine[Any, Any, _T]] | ConflictRetry:
    """Re-run a unit of work that lost an optimistic race, with jittered exponential backoff.

    Only conflicts that a fresh attempt can resolve are retried: by default
    :class:`~underlay.StaleVersionError` and :class:`~underlay.SerializationError`. Anything
    else, including other :class:`~underlay.ConflictError` such as a
    :class:`~underlay.DuplicateError`, propagates at once. After the last attempt the last
    conflict propagates. The unit of work must start its own transaction (open a session
    inside it): a session whose flush failed cannot be reused.

    Use it as a decorator, bare or with options, or iterate over its attempts::

        @retry_on_conflict
        async def rename(user_id: int, name: str) -> None: ...

        @retry_on_conflict(attempts=10)
        async def rename_harder(user_id: int, name: str) -> None: ...

        async for attempt in retry_on_conflict(attempts=3):
            with attempt:
                async with db.session() as session:
                    ...

    Args:
        func: The coroutine function to wrap (when used as a bare decorator).
        attempts: How many times to run the work at most (1 means no retry).
        retry_on: The exception classes that trigger another attempt.
        base_delay: The wait bound in seconds after the first failed attempt; it doubles
            after each further one. The actual wait is uniform between 0 and the bound.
        max_delay: The largest wait bound in seconds.

    Returns:
        The wrapped function when ``func`` is given, else a :class:`ConflictRetry` usable
        as a decorator and as an async iterator of :class:`RetryAttempt`.

    Example:
        >>> import asyncio
        >>> from underlay import StaleVersionError
        >>> calls = []
        >>> @retry_on_conflict(attempts=3, base_delay=0)
        ... async def flaky() -> str:
        ...     calls.append(1)
        ...     if len(calls) < 3:
        ...         raise StaleVersionError()
        ...     return "done"
        >>> asyncio.run(flaky()), len(calls)
        ('done', 3)
    """
    policy = ConflictRetry(
        attempts=attempts, retry_on=retry_on, base_delay=base_delay, max_delay=max_delay
    )
    if func is None:
        return policy
    return policy(func)
