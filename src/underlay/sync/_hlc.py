"""The client's hybrid logical clock."""

from __future__ import annotations

from uuid import UUID

__all__ = ["Clock"]


class Clock:
    """The client's hybrid logical clock: (milliseconds, counter), never moving backwards."""

    def __init__(self, millis: int, counter: int) -> None:
        self.millis = millis
        self.counter = counter

    @classmethod
    def parse(cls, value: str | None) -> Clock:
        if not value:
            return cls(0, 0)
        millis, _, counter = value.partition(":")
        return cls(int(millis), int(counter or 0))

    def tick(self, millis: int, node: UUID) -> str:
        if millis > self.millis:
            self.millis, self.counter = millis, 0
        else:
            self.counter += 1
        return f"{self.millis:015d}:{self.counter:05d}:{node}"

    def dump(self) -> str:
        return f"{self.millis}:{self.counter}"
