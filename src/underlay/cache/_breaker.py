"""A circuit breaker: stop calling a failing service for a cool-down."""

from __future__ import annotations

import time

__all__ = ["CircuitBreaker"]


class CircuitBreaker:
    """Open after ``threshold`` consecutive failures; let one probe through after ``cooldown``.

    While open, :meth:`allow` is ``False`` and callers skip the service entirely, so a dead
    server costs nothing per call. After the cool-down one caller is let through (half-open);
    its success closes the breaker and its failure re-opens it for another cool-down.

    Args:
        threshold: Consecutive failures that open the breaker.
        cooldown: Seconds the breaker stays open before a probe.
    """

    def __init__(self, *, threshold: int = 5, cooldown: float = 5.0) -> None:
        if threshold < 1:
            raise ValueError("threshold must be at least 1")
        self.threshold = threshold
        self.cooldown = cooldown
        self._failures = 0
        self._open_until: float | None = None
        self._probing = False

    @property
    def is_open(self) -> bool:
        """Whether calls are being skipped right now."""
        return self._open_until is not None and (
            self._probing or time.monotonic() < self._open_until
        )

    def allow(self) -> bool:
        """Return whether a call may go to the service now."""
        if self._open_until is None:
            return True
        if self._probing or time.monotonic() < self._open_until:
            return False
        self._probing = True  # exactly one probe per cool-down
        return True

    def success(self) -> None:
        """Record a call that worked: close the breaker."""
        self._failures = 0
        self._open_until = None
        self._probing = False

    def failure(self) -> None:
        """Record a call that failed or timed out."""
        self._failures += 1
        self._probing = False
        if self._failures >= self.threshold or self._open_until is not None:
            self._open_until = time.monotonic() + self.cooldown
