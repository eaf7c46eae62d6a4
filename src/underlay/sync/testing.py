"""Test doubles for the sync: a transport that injects the faults networks produce."""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from underlay.sync._errors import SyncTransportError
from underlay.sync._transport import SyncTransport
from underlay.sync._wire import PullRequest, PullResponse, PushRequest, PushResponse

__all__ = ["Fault", "FaultyTransport"]

Fault = Literal["drop_request", "drop_response", "duplicate", "error_5xx", "cut_page", "hold"]


@dataclass
class FaultyTransport:
    """Wrap a transport and fail the next calls in chosen ways.

    Faults are queued per operation (``"pull"`` or ``"push"``) and each is used once:

    * ``drop_request``: the request never reaches the server.
    * ``drop_response``: the server handles it, the answer is lost.
    * ``duplicate``: the request arrives twice; the second answer is returned.
    * ``error_5xx``: the server answers 503 without handling it.
    * ``cut_page``: (pull) the connection breaks while the page is read.
    * ``hold``: the request waits until `release` is called (reordering, concurrency).

    Attributes:
        inner: The transport that reaches the server.
        calls: The operations sent to the server so far, in order.
    """

    inner: SyncTransport
    calls: list[str] = field(default_factory=list)
    _faults: dict[str, deque[Fault]] = field(
        default_factory=lambda: {"pull": deque(), "push": deque()}
    )
    _release: asyncio.Event = field(default_factory=asyncio.Event)
    held: asyncio.Event = field(default_factory=asyncio.Event)

    def fail_next(self, operation: Literal["pull", "push"], *faults: Fault) -> None:
        """Queue ``faults`` for the next calls of ``operation``, one fault per call."""
        self._faults[operation].extend(faults)

    def release(self) -> None:
        """Let requests waiting in a ``hold`` fault continue."""
        self._release.set()

    async def pull(self, request: PullRequest) -> PullResponse:
        """Pull through the inner transport, applying the next queued fault."""
        fault = await self._before("pull")
        response = await self.inner.pull(request)
        if fault == "duplicate":
            response = await self.inner.pull(request)
        if fault in {"drop_response", "cut_page"}:
            raise SyncTransportError(f"pull: injected {fault}")
        return response

    async def push(self, request: PushRequest) -> PushResponse:
        """Push through the inner transport, applying the next queued fault."""
        fault = await self._before("push")
        response = await self.inner.push(request)
        if fault == "duplicate":
            response = await self.inner.push(request)
        if fault == "drop_response":
            raise SyncTransportError("push: injected drop_response")
        return response

    async def _before(self, operation: str) -> Fault | None:
        queue = self._faults[operation]
        fault = queue.popleft() if queue else None
        if fault == "drop_request":
            raise SyncTransportError(f"{operation}: injected drop_request")
        if fault == "error_5xx":
            raise SyncTransportError(f"{operation}: injected 503", status=503)
        if fault == "hold":
            self.held.set()
            await self._release.wait()
        self.calls.append(operation)
        return fault
