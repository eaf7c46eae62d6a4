"""Cursor signing and encoding, secret resolution and keyset predicates (no database)."""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from tests.integration.repo_models import Author
from underlay import InvalidQueryError
from underlay.repository import CURSOR_SECRET_ENV, set_cursor_secret
from underlay.repository import _pagination as pagination
from underlay.repository._query import parse_order_by

KEY = b"k" * 32


class Colour(enum.Enum):
    RED = "r"


@pytest.fixture(autouse=True)
def _no_configured_secret(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(CURSOR_SECRET_ENV, raising=False)
    set_cursor_secret(None)
    yield
    set_cursor_secret(None)


class TestEncoding:
    @pytest.mark.parametrize(
        "value",
        [
            None,
            True,
            0,
            -(2**62),
            "text ✓",
            0.1,
            float("inf"),
            Decimal("12345678901234567890.000000001"),
            datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
            datetime(2024, 1, 1, 12, tzinfo=timezone(timedelta(hours=5, minutes=30))),
            date(1999, 12, 31),
            time(1, 2, 3, 4),
            timedelta(days=-1, microseconds=5),
            uuid.UUID("12345678-1234-5678-1234-567812345678"),
            b"\x00\xff",
        ],
        ids=[
            "none",
            "bool",
            "zero",
            "big-int",
            "unicode",
            "float",
            "inf",
            "decimal",
            "datetime-utc",
            "datetime-offset",
            "date",
            "time",
            "timedelta",
            "uuid",
            "bytes",
        ],
    )
    def test_round_trip_exact(self, value: Any) -> None:
        """Every supported value comes back equal and of the same type."""
        cursor = pagination.encode_cursor(KEY, table="t", spec=["x"], values=[value])
        (back,) = pagination.decode_cursor(KEY, cursor, table="t", spec=["x"])
        assert back == value
        assert type(back) is type(value)
        if isinstance(value, datetime):
            assert back.utcoffset() == value.utcoffset()

    def test_enum_becomes_its_name(self) -> None:
        """Enums travel by name (SQLAlchemy's Enum type binds names)."""
        cursor = pagination.encode_cursor(KEY, table="t", spec=["x"], values=[Colour.RED])
        assert pagination.decode_cursor(KEY, cursor, table="t", spec=["x"]) == ["RED"]

    def test_unsupported_value(self) -> None:
        """A value the cursor cannot carry is an InvalidQueryError."""
        with pytest.raises(InvalidQueryError):
            pagination.encode_cursor(KEY, table="t", spec=["x"], values=[object()])

    def test_cursor_is_url_safe(self) -> None:
        """Cursors use only URL-safe characters."""
        cursor = pagination.encode_cursor(KEY, table="t", spec=["x"], values=["?&/+= "])
        assert set(cursor) <= set(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."
        )


class TestVerification:
    def test_wrong_key_table_spec(self) -> None:
        """Another key, table or sort spec is refused."""
        cursor = pagination.encode_cursor(KEY, table="t", spec=["x"], values=[1])
        for key, table, spec in [(b"o" * 32, "t", ["x"]), (KEY, "u", ["x"]), (KEY, "t", ["-x"])]:
            with pytest.raises(InvalidQueryError):
                pagination.decode_cursor(key, cursor, table=table, spec=spec)

    @pytest.mark.parametrize(
        "cursor",
        ["", ".", "a.b", "!!!.???", "x" * 9000, "a.b.c"],
        ids=["empty", "dot", "short", "bad-base64", "too-long", "three-parts"],
    )
    def test_malformed(self, cursor: str) -> None:
        """Malformed cursors are refused without raising anything else."""
        with pytest.raises(InvalidQueryError):
            pagination.decode_cursor(KEY, cursor, table="t", spec=["x"])

    def test_signed_garbage_payload(self) -> None:
        """A correctly signed payload of the wrong shape is still refused."""
        payload = b'{"t":"t","k":["x"],"v":[{"nope":1}]}'
        signature = hmac.new(KEY, payload, hashlib.sha256).digest()
        cursor = (
            base64.urlsafe_b64encode(payload).rstrip(b"=").decode()
            + "."
            + base64.urlsafe_b64encode(signature).rstrip(b"=").decode()
        )
        with pytest.raises(InvalidQueryError):
            pagination.decode_cursor(KEY, cursor, table="t", spec=["x"])


class TestSecrets:
    def test_precedence(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """The repository's secret wins over the configured one, which wins over the env."""
        monkeypatch.setenv(CURSOR_SECRET_ENV, "from the environment!!")
        assert pagination.resolve_secret(None) == b"from the environment!!"
        set_cursor_secret("configured at start-up")
        assert pagination.resolve_secret(None) == b"configured at start-up"
        assert pagination.resolve_secret(b"the repository's own key") == b"the repository's own key"

    def test_no_secret_means_unsigned(self) -> None:
        """Without configuration there is no key: cursors are unsigned, the same everywhere."""
        assert pagination.resolve_secret(None) is None
        cursor = pagination.encode_cursor(None, table="t", spec=["x"], values=[7])
        assert "." not in cursor
        assert pagination.decode_cursor(None, cursor, table="t", spec=["x"]) == [7]

    def test_unsigned_cursor_refused_once_a_secret_is_set(self) -> None:
        """With a secret, an unsigned (or forged) cursor is refused."""
        cursor = pagination.encode_cursor(None, table="t", spec=["x"], values=[7])
        with pytest.raises(InvalidQueryError):
            pagination.decode_cursor(KEY, cursor, table="t", spec=["x"])
        with pytest.raises(InvalidQueryError):
            pagination.decode_cursor(KEY, cursor + ".", table="t", spec=["x"])

    def test_signed_cursor_accepted_without_secret(self) -> None:
        """Removing the secret keeps cursors already handed out working."""
        cursor = pagination.encode_cursor(KEY, table="t", spec=["x"], values=[7])
        assert pagination.decode_cursor(None, cursor, table="t", spec=["x"]) == [7]

    def test_unsigned_still_validated(self) -> None:
        """Unsigned cursors are still checked for table, sort order and shape."""
        cursor = pagination.encode_cursor(None, table="t", spec=["x"], values=[7])
        for table, spec in [("u", ["x"]), ("t", ["-x"]), ("t", ["x", "id"])]:
            with pytest.raises(InvalidQueryError):
                pagination.decode_cursor(None, cursor, table=table, spec=spec)
        garbage = base64.urlsafe_b64encode(b'{"t":"t","k":["x"],"v":[{"a":1,"b":2}]}').decode()
        with pytest.raises(InvalidQueryError):
            pagination.decode_cursor(None, garbage.rstrip("="), table="t", spec=["x"])

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("rank", "1"),
            ("rank", True),
            ("rank", [1]),
            ("email", 5),
            ("created_at", "2024"),
            ("id", None),
        ],
        ids=["str-for-int", "bool-for-int", "list", "int-for-str", "str-for-datetime", "null"],
    )
    def test_values_checked_against_column_types(self, field: str, value: Any) -> None:
        """A decoded value of the wrong type for its sort column is refused before SQL."""
        keys = parse_order_by(Author, field, [field])
        with pytest.raises(InvalidQueryError):
            pagination.check_cursor_values(keys, [value])

    def test_values_of_the_right_type_pass(self) -> None:
        """Values of the columns' types pass the check."""
        keys = parse_order_by(Author, "rank,email,created_at", ["rank", "email", "created_at"])
        pagination.check_cursor_values(keys, [1, "a@x.io", datetime(2024, 1, 1, tzinfo=UTC)])

    def test_short_secret_refused(self) -> None:
        """Secrets shorter than 16 bytes are refused."""
        with pytest.raises(ValueError, match="16 bytes"):
            set_cursor_secret("short")


class TestKeysetPredicate:
    def test_mixed_directions(self) -> None:
        """Mixed directions expand to OR/AND terms behind a range bound on the first key."""
        keys = parse_order_by(Author, [Author.rank.desc(), Author.name, Author.id], ())
        predicate = pagination.keyset_predicate(keys, [3, "n", 7])
        sql = str(predicate.compile(compile_kwargs={"literal_binds": True}))
        assert sql == (
            "authors.rank <= 3 AND (authors.rank < 3 OR authors.rank = 3 AND authors.name > 'n' "
            "OR authors.rank = 3 AND authors.name = 'n' AND authors.id > 7)"
        )
