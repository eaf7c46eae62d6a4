"""RedisCache options that need no server: replicated mode and what counts as a Redis failure."""

from __future__ import annotations

import pytest

from underlay._redis_client import redis_errors
from underlay.cache import RedisCache


class TestWaitReplicas:
    @pytest.mark.parametrize(
        ("options", "expected"),
        [
            ({}, 0),
            ({"cluster_nodes": ["127.0.0.1:1"]}, 1),
            ({"sentinels": ["127.0.0.1:1"], "service_name": "m"}, 1),
            ({"cluster_nodes": ["127.0.0.1:1"], "wait_replicas": 0}, 0),
            ({"wait_replicas": 2}, 2),
        ],
        ids=["one-server", "cluster", "sentinel", "cluster-off", "explicit"],
    )
    async def test_default_follows_the_topology(
        self, options: dict[str, object], expected: int
    ) -> None:
        """Invalidations wait for a replica on a cluster or behind Sentinel, not on one server."""
        cache = RedisCache(prefix="unit:", **options)  # type: ignore[arg-type]  # parametrised
        try:
            assert cache.wait_replicas == expected
        finally:
            await cache.aclose()

    def test_negative_is_refused(self) -> None:
        """A negative replica count is a ValueError naming the option."""
        with pytest.raises(ValueError, match="wait_replicas"):
            RedisCache(wait_replicas=-1)


def test_slot_not_covered_counts_as_a_redis_failure() -> None:
    """A cluster's SlotNotCoveredError (not a RedisError) fails open like any outage."""
    from redis.exceptions import SlotNotCoveredError

    assert issubclass(SlotNotCoveredError, redis_errors())
