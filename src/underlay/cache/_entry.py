r"""The stored entry format, and the check a hit makes against the current generations.

An entry is ``u1\n<epoch>\n<n>\n<ns 1>\n<gen 1>\n...<payload>``: it names the epoch and the
namespace generations it was stored under. A hit reads the entry and the current counters
in one plain ``MGET`` and compares them here, in Python, with no script. Kept apart from
the Redis client so an in-process layer in front of it can run the same check.

Counters are compared as bytes, never as numbers (they may exceed a double's precision).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

__all__ = ["INVALID", "UNKNOWN", "Entry", "check", "current_payload", "judge", "parse"]

_MAGIC: Final = b"u1\n"

#: ``check`` result: a generation moved (or the epoch): the entry is stale, a miss.
INVALID: Final = 0
#: ``check`` result: the entry names a counter the caller did not read.
UNKNOWN: Final = 2


class Entry:
    """A parsed entry: the epoch and generations it was stored under, and its payload."""

    __slots__ = ("epoch", "generations", "payload")

    def __init__(
        self, epoch: bytes, generations: tuple[tuple[bytes, bytes], ...], payload: bytes
    ) -> None:
        self.epoch = epoch
        self.generations = generations
        self.payload = payload

    @property
    def namespaces(self) -> tuple[str, ...]:
        """The namespaces the entry was stored under."""
        return tuple(name.decode() for name, _ in self.generations)


def parse(raw: bytes | str) -> Entry | None:
    """Return the entry ``raw`` holds, or ``None`` for bytes this cache did not write."""
    if isinstance(raw, str):  # a caller's client may decode replies
        raw = raw.encode()
    if not raw.startswith(_MAGIC):
        return None
    parts = raw.split(b"\n", 3)
    if len(parts) != 4 or not parts[2].isdigit():
        return None
    count = int(parts[2])
    if not count:
        return Entry(parts[1], (), parts[3])
    fields = parts[3].split(b"\n", 2 * count)
    if len(fields) != 2 * count + 1:
        return None
    pairs = tuple((fields[i], fields[i + 1]) for i in range(0, 2 * count, 2))
    return Entry(parts[1], pairs, fields[-1])


def check(entry: Entry, epoch: bytes | None, counters: Mapping[bytes, bytes | None]) -> int:
    """Return ``HIT`` (1) if ``entry`` is current, `INVALID` if stale, `UNKNOWN` if unsure.

    Args:
        entry: The parsed entry.
        epoch: The current epoch (``None`` if it does not exist).
        counters: The current generation of each namespace read with the entry, by name
            (``None`` for a counter that does not exist).
    """
    if epoch != entry.epoch:
        return INVALID
    for name, generation in entry.generations:
        current = counters.get(name, b"")
        if current == b"":
            return UNKNOWN
        if current != generation:
            return INVALID
    return 1


def judge(
    raw: bytes | str | None, epoch: bytes | str | None, counters: dict[bytes, Any]
) -> tuple[int, bytes | None]:
    """Decide an entry read with ``MGET`` along with the epoch and ``counters``.

    Returns ``(1, payload)`` for a hit, ``(INVALID, None)`` for a miss (absent or stale),
    and ``(UNKNOWN, None)`` when the read cannot decide: a value this cache did not write,
    or an entry naming counters that were not read.
    """
    if raw is None:
        return INVALID, None
    entry = parse(raw)
    if entry is None:
        return UNKNOWN, None
    if isinstance(epoch, str):  # a caller's client may decode replies
        epoch = epoch.encode()
        counters = {
            name: value.encode() if isinstance(value, str) else value
            for name, value in counters.items()
        }
    status = check(entry, epoch, counters)
    return (1, entry.payload) if status == 1 else (status, None)


def current_payload(
    raw: object, epoch: object, names: list[bytes], generations: list[object]
) -> bytes | None:
    """Return the payload of ``raw`` if it was stored under exactly these values, else ``None``.

    The hit path's shortcut: an entry stored under the current ``epoch`` and, in this order,
    the namespaces ``names`` at their current ``generations`` starts with the header those
    values make, and is current. Every field of a header ends in a newline and none holds
    one, so matching the header is matching each field. ``None`` decides nothing: use
    `judge`.
    """
    if type(raw) is not bytes or type(epoch) is not bytes:
        return None
    parts = [_MAGIC + epoch, b"%d" % len(names)]
    for name, generation in zip(names, generations, strict=True):
        if type(generation) is not bytes:
            return None
        parts += (name, generation)
    header = b"\n".join(parts) + b"\n"
    return raw[len(header) :] if raw.startswith(header) else None
