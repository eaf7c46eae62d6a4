"""The sync's pure parts: registry rules, cursors, clocks, digests and the public surface."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import String
from sqlalchemy.orm import Mapped, mapped_column

import underlay.sync
from tests.integration.models import new_base
from tests.integration.sync.models import Task
from underlay import SoftDeleteMixin, UnderlayError, VersionedMixin
from underlay.sync import Mutation, SyncError, SyncRegistry, SyncTransportError
from underlay.sync._push import clamp_hlc
from underlay.sync._server import needs_resync
from underlay.sync._wire import Cursor, mutation_digest

UnitBase = new_base()


class Plain(UnitBase):
    __tablename__ = "unit_plain"
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)


class IntKeyed(SoftDeleteMixin, VersionedMixin, UnitBase):
    __tablename__ = "unit_int_keyed"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(10))


class TestRegistry:
    def test_model_without_the_mixins_is_refused(self) -> None:
        """Only soft-deleted, versioned models can be synced."""
        with pytest.raises(TypeError, match="SoftDeleteMixin and VersionedMixin"):
            SyncRegistry().register(Plain)

    def test_model_without_a_uuid_key_is_refused(self) -> None:
        """Clients make keys offline: the key must be a UUID."""
        with pytest.raises(TypeError, match="UUID primary key"):
            SyncRegistry().register(IntKeyed)

    def test_unknown_writable_column_and_double_registration(self) -> None:
        """Writable columns must exist and be client-writable; a model registers once."""
        registry = SyncRegistry()
        with pytest.raises(ValueError, match="not writable"):
            registry.register(Task, writable={"version"})
        registry.register(Task, writable={"title"})
        with pytest.raises(ValueError, match="registered already"):
            registry.register(Task)
        spec = registry.spec("sync_task")
        assert spec is not None
        assert spec.writable == {"title"}

    def test_values_are_converted_and_checked(self) -> None:
        """JSON values become column types; strict mode refuses unknown columns and bad values."""
        registry = SyncRegistry()
        registry.register(Task)
        spec = registry.spec("sync_task")
        assert spec is not None
        task_id = uuid.uuid4()
        values = spec.from_json({"id": str(task_id), "done": True, "color": "red"})
        assert values == {"id": task_id, "done": True}
        with pytest.raises(ValueError, match="color"):
            spec.from_json({"color": "red"}, strict=True)
        with pytest.raises(ValueError, match="owner_id"):
            spec.from_json({"owner_id": "not a number"}, strict=True)

    def test_timestamps_are_converted_through_the_wrapped_type(self) -> None:
        """A TypeDecorator column converts as the type it wraps (on SQLAlchemy 2.0 too)."""
        registry = SyncRegistry()
        registry.register(Task)
        spec = registry.spec("sync_task")
        assert spec is not None
        values = spec.from_json({"created_at": "2026-01-02T03:04:05.123456Z"}, strict=True)
        assert values == {"created_at": datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)}


class TestCursorAndClock:
    def test_cursor_round_trip_and_garbage(self) -> None:
        """A cursor survives encoding; anything else decodes to None (a resync)."""
        cursor = Cursor("e1", 742, 9)
        assert Cursor.decode(cursor.encode()) == cursor
        for token in ("", "2.e.1.1", "1.e.x.1", "1.e.1"):
            assert Cursor.decode(token) is None

    def test_a_caught_up_cursor_on_an_idle_server_needs_no_resync(self) -> None:
        """The cursor of an idle server's pull is its xmax; only a cursor beyond it resyncs."""
        meta = {"epoch": "e1", "xmin": 742, "xmax": 742, "gc_horizon": (700, 3)}
        assert not needs_resync(Cursor("e1", 742, 0), **meta)  # type: ignore[arg-type]
        assert needs_resync(Cursor("e1", 743, 0), **meta)  # type: ignore[arg-type]
        assert needs_resync(Cursor("e2", 742, 0), **meta)  # type: ignore[arg-type]
        assert needs_resync(Cursor("e1", 700, 2), **meta)  # type: ignore[arg-type]
        assert not needs_resync(Cursor("e1", 700, 3), **meta)  # type: ignore[arg-type]

    def test_clock_far_ahead_is_clamped(self) -> None:
        """An HLC beyond now + skew is pulled back; one within it is kept."""
        now = int(time.time() * 1000)
        ahead = clamp_hlc(f"{now + 10**9:015d}:00001:c", max_ahead_ms=1000)
        assert ahead is not None
        assert int(ahead.split(":")[0]) <= now + 2000
        assert clamp_hlc(f"{now:015d}:00001:c", max_ahead_ms=1000) == f"{now:015d}:00001:c"
        assert clamp_hlc("garbage", max_ahead_ms=1000) is None

    def test_digest_ignores_grouping_but_not_content(self) -> None:
        """A resend has the same digest; other content does not."""
        task_id = uuid.uuid4()
        base = Mutation(
            mutation_id=1,
            tx_group=1,
            table="t",
            id=task_id,
            op="upsert",
            base_version=0,
            changed={"a": 1},
            schema_version=1,
        )
        assert mutation_digest(base) == mutation_digest(base.model_copy(update={"tx_group": 7}))
        other = base.model_copy(update={"changed": {"a": 2}})
        assert mutation_digest(base) != mutation_digest(other)


class TestSurface:
    def test_all_is_sorted_and_complete(self) -> None:
        """underlay.sync's __all__ lists exactly its public names, sorted."""
        public = {
            name
            for name, value in vars(underlay.sync).items()
            if not name.startswith("_") and not isinstance(value, type(underlay))
        }
        public -= {"annotations"}
        assert underlay.sync.__all__ == sorted(underlay.sync.__all__)
        assert set(underlay.sync.__all__) == public

    def test_errors_are_underlay_errors(self) -> None:
        """Transport failures are SyncErrors and UnderlayErrors."""
        assert issubclass(SyncTransportError, SyncError)
        assert issubclass(SyncError, UnderlayError)
