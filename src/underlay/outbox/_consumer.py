"""`StreamConsumer`: consumer groups with acks, reclaim, dead letters and bounded concurrency."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from underlay._imports import require
from underlay.outbox._emit import check_name
from underlay.outbox._redis import make_client, redis_errors
from underlay.tenancy._context import tenant_context

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["Handler", "Message", "StreamConsumer"]

logger = logging.getLogger("underlay.outbox")


@dataclass(frozen=True, slots=True)
class Message:
    """One stream entry handed to a handler.

    Attributes:
        stream: The stream name (without the Redis key prefix).
        group: The consumer group reading it.
        id: The entry id, ``"<event id>-0"`` for entries written by `OutboxRelay`.
        payload: The decoded JSON payload.
        key: The event's key, or ``None``.
        deliveries: How many times the entry was delivered, this one included.
        tenant: The tenant the event was emitted for, or ``None``. The handler runs inside
            `tenant_context` of it, so its reads and writes are that tenant's.
    """

    stream: str
    group: str
    id: str
    payload: Any
    key: str | None
    deliveries: int
    tenant: str | None = None


#: A message handler: an async callable that raises to leave the message for a retry.
Handler = Callable[[Message], Awaitable[None]]


class StreamConsumer:
    """Read a Redis stream in a consumer group and hand each entry to ``handler``.

    * An entry is acknowledged (``XACK``) only after the handler returned; one whose handler
      raised stays pending and is retried once it has been idle for ``claim_idle`` seconds.
    * Entries left pending by a consumer that died are reclaimed (``XAUTOCLAIM``) by any
      consumer of the group after ``claim_idle`` seconds. A live consumer keeps the entries
      it is handling fresh (``XCLAIM ... JUSTID`` every ``claim_idle / 3``), so a long
      handler is not taken over while it runs.
    * An entry delivered ``max_deliveries`` times without success, or that is not a JSON
      payload, moves to the dead-letter stream (``prefix + stream + ":dead"`` by default)
      with the fields ``source_id``, ``deliveries`` and ``error``, atomically with its ack.
    * At most ``concurrency`` handlers run at once.
    * `stop` (or leaving ``async with``) stops reading and waits up to ``shutdown_timeout``
      for running handlers; a handler still running then is cancelled and its entry stays
      pending for another consumer.

    Delivery is at least once: make handlers idempotent, for example with
    `effectively_once`.

    Args:
        stream: The stream name; the Redis key is ``prefix + stream``.
        handler: ``async def handler(message: Message) -> None``.
        group: The consumer group; created (at the start of the stream) if missing.
        url: A ``redis://`` URL (ignored when ``client`` is given).
        client: An existing ``redis.asyncio.Redis``; not closed by `aclose`. Its socket
            timeout must exceed ``block``.
        prefix: The Redis key prefix, as given to `OutboxRelay`.
        consumer: This consumer's name in the group (host, pid and a random suffix by
            default).
        concurrency: Handlers running at most at once.
        max_deliveries: Deliveries after which a failing entry is dead-lettered.
        claim_idle: Seconds an entry must be pending before it is reclaimed or retried.
        block: Seconds one read waits for new entries.
        dead_letter_stream: The dead-letter stream name (``stream + ":dead"``).
        shutdown_timeout: Seconds `stop` waits for running handlers.
        timeout: Deadline in seconds for Redis calls other than the blocking read.
    """

    def __init__(
        self,
        stream: str,
        handler: Handler,
        *,
        group: str,
        url: str = "redis://localhost:6379",
        client: Redis | None = None,
        prefix: str = "",
        consumer: str | None = None,
        concurrency: int = 16,
        max_deliveries: int = 5,
        claim_idle: float = 60.0,
        block: float = 1.0,
        dead_letter_stream: str | None = None,
        shutdown_timeout: float = 30.0,
        timeout: float = 5.0,
    ) -> None:
        check_name(stream)
        check_name(group, "group")
        if concurrency < 1 or max_deliveries < 1:
            raise ValueError("concurrency and max_deliveries must be at least 1")
        self.stream = stream
        self.handler = handler
        self.group = group
        self.prefix = prefix
        self.key = prefix + stream
        self.dead_letter_key = prefix + (dead_letter_stream or f"{stream}:dead")
        self.consumer = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.concurrency = concurrency
        self.max_deliveries = max_deliveries
        self.claim_idle = claim_idle
        self.block = block
        self.shutdown_timeout = shutdown_timeout
        self.timeout = timeout
        self._owns_client = client is None
        self.client: Redis = (
            client if client is not None else make_client(url, timeout=block + timeout)
        )
        self._errors = redis_errors()
        self._response_error: type[Exception] = require(
            "redis.exceptions", extra="redis"
        ).ResponseError
        self._running: set[asyncio.Task[None]] = set()
        self._inflight: set[bytes] = set()
        self._stopping = asyncio.Event()
        self._group_ready = False
        self._next_claim = 0.0
        self._next_heartbeat = 0.0

    def __repr__(self) -> str:
        return f"StreamConsumer({self.key!r}, group={self.group!r}, consumer={self.consumer!r})"

    async def run(self) -> None:
        """Consume until `stop` is called, then wait for running handlers.

        Redis failures are logged and retried with a growing pause (up to five seconds).
        """
        backoff = 0.1
        try:
            while not self._stopping.is_set():
                try:
                    await self._pass(block=True)
                except self._errors:
                    logger.warning("stream consumer %r failed; retrying", self, exc_info=True)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(backoff):
                            await self._stopping.wait()
                    backoff = min(backoff * 2, 5.0)
                else:
                    backoff = 0.1
        finally:
            await self._drain()
            self._stopping.clear()

    async def run_once(self) -> int:
        """Reclaim what is due, read what is there (without blocking) and handle it all.

        Returns:
            How many entries were handed to the handler or dead-lettered.
        """
        self._next_claim = 0.0
        started = await self._pass(block=False)
        await self._drain()
        return started

    def stop(self) -> None:
        """Make `run` stop reading and return once running handlers are done."""
        self._stopping.set()

    async def aclose(self) -> None:
        """Stop, wait for running handlers, and close the Redis client it created."""
        self.stop()
        await self._drain()
        if self._owns_client:
            await self.client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _pass(self, *, block: bool) -> int:
        await self._ensure_group()
        started = 0
        if self._inflight and time.monotonic() >= self._next_heartbeat:
            await self._heartbeat()
        if time.monotonic() >= self._next_claim:
            self._next_claim = time.monotonic() + max(self.claim_idle / 4, 0.01)
            started += await self._reclaim()
        free = await self._free_slots()
        if self._stopping.is_set():
            return started
        reply: Any = await self.client.xreadgroup(
            self.group,
            self.consumer,
            {self.key: ">"},
            count=free,
            block=max(1, int(self.block * 1000)) if block else None,
        )
        for _key, entries in reply or ():
            for entry_id, fields in entries:
                self._start(entry_id, fields, 1)
                started += 1
        return started

    async def _free_slots(self) -> int:
        # Read only what can start now, so a busy consumer leaves new entries to the others.
        while len(self._running) >= self.concurrency:
            await asyncio.wait(set(self._running), return_when=asyncio.FIRST_COMPLETED)
        return self.concurrency - len(self._running)

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            async with asyncio.timeout(self.timeout):
                await self.client.xgroup_create(self.key, self.group, id="0", mkstream=True)
        except self._response_error as exc:
            if "BUSYGROUP" not in str(exc):  # the group exists: Redis has no code for it
                raise
        self._group_ready = True

    async def _reclaim(self) -> int:
        started = 0
        start = "0-0"
        while True:
            free = self.concurrency - len(self._running)
            if free <= 0:
                return started
            async with asyncio.timeout(self.timeout):
                reply = await self.client.xautoclaim(
                    self.key,
                    self.group,
                    self.consumer,
                    min_idle_time=max(0, int(self.claim_idle * 1000)),
                    start_id=start,
                    count=free,
                )
            start, claimed = reply[0], [entry for entry in reply[1] if entry[1] is not None]
            if claimed:
                counts = await self._delivery_counts([entry[0] for entry in claimed])
                for entry_id, fields in claimed:
                    if entry_id in self._inflight:
                        continue  # our own handler is still on it
                    self._start(entry_id, fields, counts.get(entry_id, self.max_deliveries))
                    started += 1
            if start in (b"0-0", "0-0"):
                return started

    async def _heartbeat(self) -> None:
        # Claiming our own running entries resets their idle time (JUSTID leaves the delivery
        # count alone), so a handler that runs longer than claim_idle is not taken over.
        self._next_heartbeat = time.monotonic() + max(self.claim_idle / 3, 0.01)
        async with asyncio.timeout(self.timeout):
            await self.client.xclaim(
                self.key,
                self.group,
                self.consumer,
                min_idle_time=0,
                message_ids=list[Any](sorted(self._inflight)),
                justid=True,
            )

    async def _delivery_counts(self, ids: list[bytes]) -> dict[bytes, int]:
        async with asyncio.timeout(self.timeout):
            pending: list[dict[str, Any]] = await self.client.xpending_range(
                self.key, self.group, min=ids[0], max=ids[-1], count=len(ids) + 100
            )
        return {item["message_id"]: int(item["times_delivered"]) for item in pending}

    def _start(self, entry_id: bytes, fields: dict[bytes, bytes], deliveries: int) -> None:
        task = asyncio.create_task(self._handle(entry_id, fields, deliveries))
        self._running.add(task)
        self._inflight.add(entry_id)

        def finished(done: asyncio.Task[None]) -> None:
            self._running.discard(done)
            self._inflight.discard(entry_id)

        task.add_done_callback(finished)

    async def _handle(self, entry_id: bytes, fields: dict[bytes, bytes], deliveries: int) -> None:
        try:
            message = self._message(entry_id, fields, deliveries)
        except (KeyError, ValueError, UnicodeDecodeError) as exc:
            await self._dead_letter(entry_id, fields, deliveries, exc)
            return
        if deliveries > self.max_deliveries:
            await self._dead_letter(entry_id, fields, deliveries, None)
            return
        try:
            if message.tenant is None:
                await self.handler(message)
            else:
                with tenant_context(message.tenant):
                    await self.handler(message)
        except Exception as exc:
            if deliveries >= self.max_deliveries:
                await self._dead_letter(entry_id, fields, deliveries, exc)
            else:
                logger.warning(
                    "handler failed for %s %s (delivery %d of %d); retried after %.1f s",
                    self.key,
                    message.id,
                    deliveries,
                    self.max_deliveries,
                    self.claim_idle,
                    exc_info=True,
                )
            return
        try:
            async with asyncio.timeout(self.timeout):
                await self.client.xack(self.key, self.group, entry_id)
        except self._errors:
            # Not lost: the entry stays pending and is redelivered; handlers are idempotent.
            logger.warning("ack of %s %r failed", self.key, entry_id, exc_info=True)

    def _message(self, entry_id: bytes, fields: dict[bytes, bytes], deliveries: int) -> Message:
        key = fields.get(b"key")
        tenant = fields.get(b"tenant")
        return Message(
            stream=self.stream,
            group=self.group,
            id=entry_id.decode(),
            payload=json.loads(fields[b"payload"]),
            key=key.decode() if key is not None else None,
            deliveries=deliveries,
            tenant=tenant.decode() if tenant is not None else None,
        )

    async def _dead_letter(
        self,
        entry_id: bytes,
        fields: dict[bytes, bytes],
        deliveries: int,
        error: BaseException | None,
    ) -> None:
        letter: dict[Any, Any] = {
            **fields,
            b"source_id": entry_id,
            b"deliveries": str(deliveries).encode(),
            b"error": repr(error).encode() if error is not None else b"",
        }
        try:
            async with asyncio.timeout(self.timeout):
                pipe = self.client.pipeline(transaction=True)
                pipe.xadd(self.dead_letter_key, letter)
                pipe.xack(self.key, self.group, entry_id)
                await pipe.execute()
        except self._errors:
            logger.warning("dead-lettering %s %r failed", self.key, entry_id, exc_info=True)
            return
        logger.error(
            "moved %s %r to %s after %d deliveries",
            self.key,
            entry_id,
            self.dead_letter_key,
            deliveries,
        )

    async def _drain(self) -> None:
        if not self._running:
            return
        _done, pending = await asyncio.wait(set(self._running), timeout=self.shutdown_timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
