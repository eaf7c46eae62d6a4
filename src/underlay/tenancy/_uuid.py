"""UUIDv7 (RFC 9562): time-ordered ids generated in the application, and a compact column type."""

from __future__ import annotations

import os
import threading
import time
import uuid
from typing import Any

from sqlalchemy import LargeBinary, Uuid
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

__all__ = ["UUIDv7", "uuid7"]

_lock = threading.Lock()
_last_ms = 0
_counter = 0
_COUNTER_MAX = 0xFFF  # rand_a: 12 bits, used as a counter within one millisecond


def uuid7() -> uuid.UUID:
    """Return a new UUIDv7: 48 bits of Unix milliseconds, then randomness.

    Ids from one process are strictly increasing: within one millisecond the 12-bit
    ``rand_a`` field is a counter (RFC 9562, section 6.2, method 1) seeded at random, and a
    clock that steps back does not make ids go back. Ids from different processes are ordered
    by their millisecond.

    Returns:
        A `uuid.UUID` whose ``version`` is 7.

    Example:
        >>> a, b = uuid7(), uuid7()
        >>> a.version, a < b
        (7, True)
    """
    global _last_ms, _counter  # noqa: PLW0603 - the generator's monotonic state
    with _lock:
        now = time.time_ns() // 1_000_000
        if now > _last_ms:
            _last_ms = now
            # Seed the counter in the lower half, so many ids in one millisecond still fit.
            _counter = int.from_bytes(os.urandom(2)) & 0x7FF
        else:
            _counter += 1
            if _counter > _COUNTER_MAX:
                _last_ms += 1  # borrow the next millisecond rather than repeat or go back
                _counter = 0
        millis, counter = _last_ms, _counter
    rand_b = int.from_bytes(os.urandom(8)) & ((1 << 62) - 1)
    value = (millis & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rand_b
    return uuid.UUID(int=value)


class UUIDv7(TypeDecorator[uuid.UUID]):
    """A UUID column: native ``uuid`` on PostgreSQL, 16 bytes on SQLite and others.

    Stored as bytes in big-endian order, so on SQLite the ids of `uuid7` sort by time, as
    they do natively on PostgreSQL; keyset pagination over them works on both.
    """

    impl = LargeBinary(16)
    cache_ok = True

    @property
    def python_type(self) -> type[uuid.UUID]:
        """Values are `uuid.UUID` on every backend."""
        return uuid.UUID

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        """Use the native type on PostgreSQL, 16 bytes elsewhere."""
        if dialect.name == "postgresql":
            return dialect.type_descriptor(Uuid(as_uuid=True))
        return dialect.type_descriptor(LargeBinary(16))

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        """Accept a `uuid.UUID` (or its string form) and send the backend's form."""
        if value is None:
            return None
        if not isinstance(value, uuid.UUID):
            value = uuid.UUID(str(value))
        return value if dialect.name == "postgresql" else value.bytes

    def process_result_value(self, value: Any, dialect: Dialect) -> uuid.UUID | None:
        """Return a `uuid.UUID`."""
        if value is None or isinstance(value, uuid.UUID):
            return value
        if isinstance(value, bytes | bytearray | memoryview):
            return uuid.UUID(bytes=bytes(value))
        return uuid.UUID(str(value))
