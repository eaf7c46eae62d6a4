"""Errors of the outbox and the stream consumers."""

from __future__ import annotations

from underlay.exceptions import UnderlayError

__all__ = ["InvalidEventError"]


class InvalidEventError(UnderlayError, ValueError):
    """Raised by `emit` for a stream name or payload it cannot store, before any SQL.

    Attributes:
        stream: The stream the event was meant for.
    """

    def __init__(self, message: str, *, stream: object = None) -> None:
        self.stream = stream
        super().__init__(message)
