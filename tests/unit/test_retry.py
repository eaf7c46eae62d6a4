"""retry_on_conflict re-runs work on optimistic conflicts only, a bounded number of times."""

from __future__ import annotations

import pytest

from underlay import (
    ConflictError,
    DuplicateError,
    NotFoundError,
    SerializationError,
    StaleVersionError,
    retry_on_conflict,
)
from underlay._retry import ConflictRetry


class _Flaky:
    """A unit of work that fails with the given errors, then returns its call count."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self, label: str = "done") -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return f"{label}:{self.calls}"


class TestDecorator:
    async def test_bare_decorator_retries_until_success(self) -> None:
        """A bare @retry_on_conflict runs the work again after each conflict."""
        work = _Flaky(StaleVersionError(), SerializationError("lost"))
        wrapped = retry_on_conflict(work)
        assert await wrapped("ok") == "ok:3"
        assert work.calls == 3

    async def test_gives_up_after_attempts_with_last_conflict(self) -> None:
        """After the last attempt the last conflict propagates."""
        last = StaleVersionError("third")
        work = _Flaky(StaleVersionError("first"), StaleVersionError("second"), last)
        wrapped = retry_on_conflict(attempts=3, base_delay=0)(work)
        with pytest.raises(StaleVersionError) as info:
            await wrapped()
        assert info.value is last
        assert work.calls == 3

    @pytest.mark.parametrize(
        "error",
        [NotFoundError(), DuplicateError("dup"), ValueError("bad")],
        ids=["not-found", "duplicate-conflict", "value-error"],
    )
    async def test_other_errors_are_not_retried(self, error: BaseException) -> None:
        """Errors outside retry_on propagate from the first attempt, DuplicateError included."""
        work = _Flaky(error)
        with pytest.raises(type(error)):
            await retry_on_conflict(base_delay=0)(work)()
        assert work.calls == 1

    async def test_custom_retry_on(self) -> None:
        """retry_on chooses what is retried, e.g. every ConflictError."""
        work = _Flaky(DuplicateError("dup"))
        wrapped = retry_on_conflict(retry_on=(ConflictError,), base_delay=0)(work)
        assert await wrapped() == "done:2"

    async def test_one_attempt_means_no_retry(self) -> None:
        """attempts=1 runs the work once and lets its conflict out."""
        work = _Flaky(StaleVersionError())
        with pytest.raises(StaleVersionError):
            await retry_on_conflict(attempts=1)(work)()
        assert work.calls == 1

    async def test_keeps_function_metadata(self) -> None:
        """The wrapper looks like the function it wraps."""

        async def rename(user_id: int) -> int:
            """Rename a user."""
            return user_id

        wrapped = retry_on_conflict(rename)
        assert wrapped.__name__ == "rename"
        assert wrapped.__doc__ == "Rename a user."
        assert await wrapped(4) == 4


class TestIterator:
    async def test_attempts_until_block_succeeds(self) -> None:
        """The async-for form repeats the block until it completes without a conflict."""
        work = _Flaky(StaleVersionError(), StaleVersionError())
        seen = []
        async for attempt in retry_on_conflict(attempts=5, base_delay=0):
            with attempt:
                seen.append(attempt.number)
                result = await work()
        assert result == "done:3"
        assert seen == [1, 2, 3]

    async def test_last_attempt_raises(self) -> None:
        """When every attempt conflicts, the last conflict leaves the loop."""
        work = _Flaky(*(StaleVersionError(str(n)) for n in range(3)))
        with pytest.raises(StaleVersionError, match="2"):
            async for attempt in retry_on_conflict(attempts=3, base_delay=0):
                with attempt:
                    await work()
        assert work.calls == 3


class TestBackoff:
    @pytest.mark.parametrize("attempt", [1, 2, 5, 30], ids=["first", "second", "fifth", "30th"])
    def test_delay_within_doubling_bound(self, attempt: int) -> None:
        """Each wait lies between 0 and base * 2**(n-1), capped at max_delay."""
        policy = ConflictRetry(base_delay=0.01, max_delay=0.1)
        bound = min(0.1, 0.01 * 2 ** (attempt - 1))
        waits = [policy.delay(attempt) for _ in range(200)]
        assert all(0 <= wait <= bound for wait in waits)
        assert len(set(waits)) > 1  # jittered, not a fixed schedule

    @pytest.mark.parametrize(
        "options",
        [{"attempts": 0}, {"base_delay": -1.0}, {"max_delay": -0.5}],
        ids=["no-attempts", "negative-base", "negative-max"],
    )
    def test_invalid_policy_refused(self, options: dict[str, float]) -> None:
        """Nonsensical settings are refused when the policy is made."""
        with pytest.raises(ValueError, match="must"):
            retry_on_conflict(**options)  # type: ignore[call-overload]
