"""Static checks of retry_on_conflict's overloads, run by mypy (and imported by pytest)."""

from __future__ import annotations

from typing import assert_type

from underlay import retry_on_conflict
from underlay._retry import ConflictRetry, RetryAttempt


async def fetch(user_id: int, *, fresh: bool = False) -> str:
    return f"{user_id}:{fresh}"


async def retry_types() -> None:
    bare = retry_on_conflict(fetch)
    assert_type(await bare(1, fresh=True), str)
    policy = retry_on_conflict(attempts=3)
    assert_type(policy, ConflictRetry)
    configured = policy(fetch)
    assert_type(await configured(2), str)
    async for attempt in policy:
        assert_type(attempt, RetryAttempt)


def test_module_imports() -> None:
    """The typing module imports: mypy checks its assertions statically."""
    assert callable(retry_types)
