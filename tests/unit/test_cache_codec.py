"""The cache's codec, schema fingerprints and circuit breaker (no services)."""

from __future__ import annotations

import datetime as dt
import pickle
import time
import uuid
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel

from underlay.cache import DecodeError, JSONCodec, schema_fingerprint
from underlay.cache._breaker import CircuitBreaker


class Item(BaseModel):
    id: uuid.UUID
    price: Decimal
    at: dt.datetime


class TestJSONCodec:
    @pytest.mark.parametrize(
        "value",
        [
            dt.datetime(2024, 1, 2, 3, 4, 5, 6, tzinfo=dt.timezone(dt.timedelta(hours=2))),
            dt.datetime(2024, 1, 2, 3, 4, 5),
            dt.date(2024, 2, 29),
            dt.time(23, 59, 59, 999999),
            uuid.uuid4(),
            Decimal("-0.000100"),
            (1, (2, "x")),
            {1, 2, 3},
            b"\x00\xff",
            {1: "int key", (1, 2): "tuple key"},
            {"$u": "looks like a tag"},
            [None, True, 1.25, "s"],
        ],
        ids=[
            "aware-datetime",
            "naive-datetime",
            "date",
            "time",
            "uuid",
            "decimal",
            "tuple",
            "set",
            "bytes",
            "non-string-keys",
            "tag-lookalike",
            "json-scalars",
        ],
    )
    def test_round_trips_exactly(self, value: Any) -> None:
        """Each supported type decodes equal to what was encoded, with the same type."""
        codec = JSONCodec()
        decoded = codec.decode(codec.encode(value))
        assert decoded == value
        assert type(decoded) is type(value)

    def test_pydantic_model_is_stored_as_json(self) -> None:
        """A model is stored as its JSON dump and validates back to an equal model."""
        codec = JSONCodec()
        item = Item(id=uuid.uuid4(), price=Decimal("1.10"), at=dt.datetime.now(dt.UTC))
        decoded = codec.decode(codec.encode(item))
        assert Item.model_validate(decoded) == item

    @pytest.mark.parametrize(
        "data",
        [pickle.dumps({"a": 1}), b"{not json", b'{"$u": "unknown", "v": 1}', b"\xff\xfe"],
        ids=["pickle", "broken-json", "unknown-tag", "not-utf8"],
    )
    def test_foreign_bytes_raise_decode_error(self, data: bytes) -> None:
        """Bytes the codec did not write raise DecodeError, never run anything."""
        with pytest.raises(DecodeError):
            JSONCodec().decode(data)

    def test_unsupported_type_is_refused(self) -> None:
        """Encoding an arbitrary object raises TypeError instead of stringifying it."""
        with pytest.raises(TypeError, match="cannot cache"):
            JSONCodec().encode({"x": object()})

    def test_never_pickles(self) -> None:
        """The encoded form is a JSON document (no pickle opcode prefix)."""
        data = JSONCodec().encode({"at": dt.datetime.now(dt.UTC)})
        assert data.startswith(b"{")


class TestFingerprint:
    def test_stable_for_the_same_schema(self) -> None:
        """The fingerprint of a schema does not change between calls."""
        assert schema_fingerprint(Item) == schema_fingerprint(Item)

    def test_changes_with_a_field_type(self) -> None:
        """Changing a field's type changes the fingerprint."""

        class Item(BaseModel):
            id: uuid.UUID
            price: float
            at: dt.datetime

        assert schema_fingerprint(Item) != schema_fingerprint(globals()["Item"])


class TestCircuitBreaker:
    def test_opens_after_threshold_and_probes_after_cooldown(self) -> None:
        """N failures open it; after the cool-down one probe passes; success closes it."""
        breaker = CircuitBreaker(threshold=2, cooldown=0.05)
        breaker.failure()
        assert breaker.allow()
        breaker.failure()
        assert not breaker.allow()
        assert breaker.is_open
        time.sleep(0.1)
        assert breaker.allow()  # the probe
        assert not breaker.allow()  # only one at a time
        breaker.success()
        assert breaker.allow()
        assert not breaker.is_open

    def test_failed_probe_reopens(self) -> None:
        """A failing probe opens the breaker for another cool-down."""
        breaker = CircuitBreaker(threshold=1, cooldown=0.05)
        breaker.failure()
        time.sleep(0.1)
        assert breaker.allow()
        breaker.failure()
        assert not breaker.allow()

    def test_rejects_zero_threshold(self) -> None:
        """A threshold below one is a configuration error."""
        with pytest.raises(ValueError, match="threshold"):
            CircuitBreaker(threshold=0)
