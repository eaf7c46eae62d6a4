"""Build redis.asyncio clients for one server, a Redis Cluster or a Sentinel-managed master.

Shared by the cache, the session store and the outbox, so every Redis user of underlay
gets the same deadlines and the same no-retry policy (retries multiply the wait on a hung
server; callers handle outages with their own breakers and fail-safe paths).
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

from underlay._imports import require

__all__ = ["client_race", "close", "connect", "is_cluster", "redis_errors"]

# The Sentinel managers behind the master clients `connect` made: closed with the client.
_MANAGERS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


def _address(node: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(node, tuple):
        return node[0], int(node[1])
    host, sep, port = node.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"a node address is 'host:port' or (host, port), not {node!r}")
    return host.strip("[]"), int(port)


def connect(
    url: str | None,
    *,
    timeout: float,
    cluster_nodes: Sequence[str | tuple[str, int]] | None = None,
    sentinels: Sequence[str | tuple[str, int]] | None = None,
    service_name: str | None = None,
    **options: Any,
) -> Any:
    """Return a client for ``url``, a cluster (``cluster_nodes``) or a Sentinel master.

    Args:
        url: A ``redis://`` / ``rediss://`` URL, used when neither of the others is given.
        timeout: Socket and connect deadline in seconds.
        cluster_nodes: Startup nodes of a Redis Cluster (``"host:port"`` or tuples).
        sentinels: Sentinel addresses; with ``service_name``, the master they name.
        service_name: The master's name in the Sentinel configuration.
        **options: Further connection options (``password``, ``ssl``, ...).

    Raises:
        ValueError: More than one topology, or ``sentinels`` without ``service_name``.
        MissingDependencyError: ``redis`` is not installed.
    """
    if cluster_nodes and sentinels:
        raise ValueError("give cluster_nodes or sentinels, not both")
    if sentinels and not service_name:
        raise ValueError("sentinels need the service_name of the master to follow")
    retry = require("redis.asyncio.retry", extra="redis")
    backoff = require("redis.backoff", extra="redis")
    common: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "decode_responses": False,
        **options,
    }
    if cluster_nodes:
        cluster = require("redis.asyncio.cluster", extra="redis")
        nodes = [cluster.ClusterNode(*_address(node)) for node in cluster_nodes]
        # No retries: a failed command surfaces at once (and marks the slot map for a
        # refresh on the next call); MOVED / ASK redirections are still followed.
        return cluster.RedisCluster(
            startup_nodes=nodes, retry=retry.Retry(backoff.NoBackoff(), 0), **common
        )
    if sentinels:
        sentinel = require("redis.asyncio.sentinel", extra="redis")
        manager = sentinel.Sentinel(
            [_address(node) for node in sentinels],
            sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": timeout},
            **common,
        )
        master = manager.master_for(
            service_name, retry=retry.Retry(backoff.NoBackoff(), 0), retry_on_timeout=False
        )
        _MANAGERS[master] = manager
        return master
    redis_asyncio = require("redis.asyncio", extra="redis")
    return redis_asyncio.Redis.from_url(
        url or "redis://localhost:6379",
        retry=retry.Retry(backoff.NoBackoff(), 0),
        retry_on_timeout=False,
        **common,
    )


async def close(client: Any) -> None:
    """Close a client `connect` made (and the Sentinel connections behind it)."""
    await client.aclose()
    manager = _MANAGERS.pop(client, None)
    if manager is not None:
        for node in manager.sentinels:
            await node.aclose()


def is_cluster(client: Any) -> bool:
    """Return whether ``client`` talks to a Redis Cluster."""
    cluster = require("redis.asyncio.cluster", extra="redis")
    return isinstance(client, cluster.RedisCluster)


def redis_errors() -> tuple[type[BaseException], ...]:
    """Return the exception classes that mean "Redis failed or is unreachable".

    They include what a failover raises: connection errors, ``ClusterDownError``,
    ``TryAgainError``, ``ReadOnlyError``, a cluster's ``SlotNotCoveredError`` (not a
    ``RedisError``) and Sentinel's ``MasterNotFoundError``.
    """
    exceptions: Any = require("redis.exceptions", extra="redis")
    return (exceptions.RedisError, exceptions.RedisClusterException, OSError, TimeoutError)


def client_race(exc: BaseException) -> bool:
    """Whether ``exc`` is what redis-py leaks when a connection is closed under a command.

    A connection closed by another task (or by the peer) while a command is being written
    surfaces as an ``AttributeError`` or ``TypeError`` raised inside redis-py's or asyncio's
    transport code (``'NoneType' object has no attribute 'writelines'``; redis-py issues
    3546 and 4287), not as a ``ConnectionError``. Only those raised there count: the same
    types raised anywhere else are bugs and propagate.
    """
    if not isinstance(exc, AttributeError | TypeError):
        return False
    frame = exc.__traceback__
    if frame is None:
        return False
    while frame.tb_next is not None:
        frame = frame.tb_next
    module = frame.tb_frame.f_globals.get("__name__", "")
    return isinstance(module, str) and module.startswith(("redis.", "asyncio."))
