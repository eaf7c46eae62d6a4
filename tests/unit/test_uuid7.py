"""UUIDv7 generation (RFC 9562) and the compact column type."""

from __future__ import annotations

import time
import uuid

from sqlalchemy.dialects import postgresql, sqlite

from underlay import uuid7
from underlay.tenancy import UUIDv7


class TestUUID7:
    def test_version_variant_and_time(self) -> None:
        """Version 7, RFC variant, and the first 48 bits are the Unix milliseconds."""
        before = time.time_ns() // 1_000_000
        value = uuid7()
        after = time.time_ns() // 1_000_000
        assert value.version == 7
        assert value.variant == uuid.RFC_4122
        assert before <= value.int >> 80 <= after + 1

    def test_strictly_increasing(self) -> None:
        """100,000 ids from one process are strictly increasing and unique."""
        ids = [uuid7() for _ in range(100_000)]
        assert ids == sorted(ids)
        assert len(set(ids)) == len(ids)


class TestUUIDv7Type:
    def test_compact_on_sqlite_native_on_postgres(self) -> None:
        """16 bytes on SQLite, the native uuid type on PostgreSQL; values round-trip."""
        column_type = UUIDv7()
        value = uuid7()
        lite, pg = sqlite.dialect(), postgresql.dialect()
        stored = column_type.process_bind_param(value, lite)
        assert stored == value.bytes
        assert len(stored) == 16
        assert column_type.process_result_value(stored, lite) == value
        assert column_type.process_bind_param(str(value), pg) == value
        assert column_type.load_dialect_impl(pg).__class__.__name__ in {"UUID", "Uuid", "PGUuid"}
