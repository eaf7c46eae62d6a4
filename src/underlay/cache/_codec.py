"""The JSON codec every cache stores values with (never pickle)."""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import json
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Protocol
from uuid import UUID

from pydantic import BaseModel

__all__ = ["Codec", "DecodeError", "JSONCodec", "schema_fingerprint"]

try:  # orjson is several times faster; the stdlib fallback keeps MemoryCache dependency-free
    import orjson

    _dumps: Callable[[Any], bytes] = orjson.dumps
    _loads: Callable[[bytes], Any] = orjson.loads
    _JSON_ERRORS: tuple[type[Exception], ...] = (orjson.JSONDecodeError, UnicodeDecodeError)
except ModuleNotFoundError:  # pragma: no cover - orjson is installed with the redis extra

    def _dumps(value: Any) -> bytes:
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()

    def _loads(data: bytes) -> Any:
        return json.loads(data)

    _JSON_ERRORS = (ValueError, UnicodeDecodeError)

_DECODE_ERRORS: tuple[type[Exception], ...] = (*_JSON_ERRORS, KeyError, TypeError, ValueError)

#: The key that marks a tagged (non-JSON) value inside the encoded document.
_TAG = "$u"


class DecodeError(ValueError):
    """Raised by a codec for bytes it did not write: a corrupt or foreign entry."""


class Codec(Protocol):
    """Turns values into bytes and back. Implementations must never execute stored data."""

    def encode(self, value: Any) -> bytes:
        """Return the bytes that represent ``value``."""
        ...

    def decode(self, data: bytes) -> Any:
        """Return the value ``data`` represents, or raise :class:`DecodeError`."""
        ...


class JSONCodec:
    """JSON with exact round trips for ``datetime``, ``date``, ``time``, ``UUID``, ``Decimal``.

    ``bytes``, tuples and sets round-trip too. A Pydantic model is stored as its JSON-mode
    dump and reads back as a ``dict`` (validate it with the model, as
    :class:`~underlay.cache.CachedRepository` does). Anything else raises ``TypeError`` on
    encode: a cache that silently stringifies values would hand back different types.

    Example:
        >>> from decimal import Decimal
        >>> codec = JSONCodec()
        >>> codec.decode(codec.encode({"price": Decimal("9.90"), "tags": ("a", "b")}))
        {'price': Decimal('9.90'), 'tags': ('a', 'b')}
    """

    def encode(self, value: Any) -> bytes:
        """Return the JSON document for ``value``.

        Raises:
            TypeError: ``value`` contains a type the codec cannot round-trip.
        """
        return _dumps(_tagged(value))

    def decode(self, data: bytes) -> Any:
        """Return the value ``data`` holds.

        Raises:
            DecodeError: ``data`` is not a document this codec wrote.
        """
        try:
            return _untagged(_loads(data))
        except _DECODE_ERRORS as exc:
            raise DecodeError(f"not a cache entry this codec wrote: {exc}") from exc


_SIMPLE = (str, int, float, bool, type(None))


def _tagged(value: Any) -> Any:  # noqa: PLR0912 - one branch per supported type
    if isinstance(value, _SIMPLE):
        return value
    if isinstance(value, list):
        return [_tagged(item) for item in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and _TAG not in value:
            return {k: _tagged(v) for k, v in value.items()}
        return {_TAG: "map", "v": [[_tagged(k), _tagged(v)] for k, v in value.items()]}
    if isinstance(value, dt.datetime):
        return {_TAG: "datetime", "v": value.isoformat()}
    if isinstance(value, dt.date):
        return {_TAG: "date", "v": value.isoformat()}
    if isinstance(value, dt.time):
        return {_TAG: "time", "v": value.isoformat()}
    if isinstance(value, UUID):
        return {_TAG: "uuid", "v": str(value)}
    if isinstance(value, Decimal):
        return {_TAG: "decimal", "v": str(value)}
    if isinstance(value, tuple):
        return {_TAG: "tuple", "v": [_tagged(item) for item in value]}
    if isinstance(value, set | frozenset):
        return {_TAG: "set", "v": [_tagged(item) for item in value]}
    if isinstance(value, bytes):
        return {_TAG: "bytes", "v": base64.b64encode(value).decode()}
    if isinstance(value, BaseModel):
        return _tagged(value.model_dump(mode="json"))
    raise TypeError(f"cannot cache a value of type {type(value).__name__}")


def _map(items: list[list[Any]]) -> dict[Any, Any]:
    return {_hashable(_untagged(k)): _untagged(v) for k, v in items}


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


_DECODERS: dict[str, Callable[[Any], Any]] = {
    "datetime": dt.datetime.fromisoformat,
    "date": dt.date.fromisoformat,
    "time": dt.time.fromisoformat,
    "uuid": UUID,
    "decimal": Decimal,
    "tuple": lambda v: tuple(_untagged(item) for item in v),
    "set": lambda v: {_hashable(_untagged(item)) for item in v},
    "bytes": lambda v: base64.b64decode(v, validate=True),
    "map": _map,
}


def _untagged(value: Any) -> Any:
    if isinstance(value, list):
        return [_untagged(item) for item in value]
    if isinstance(value, dict):
        tag = value.get(_TAG)
        if tag is None:
            return {k: _untagged(v) for k, v in value.items()}
        return _DECODERS[tag](value["v"])
    return value


@functools.lru_cache(maxsize=1024)
def schema_fingerprint(schema: type[BaseModel]) -> str:
    """Return a short hash of ``schema``'s JSON schema, to put in cache keys.

    A deploy that changes the schema's fields or types changes the fingerprint, so new code
    never reads entries shaped for the old one. Computed once per class: building the JSON
    schema is far slower than a cache hit.

    Example:
        >>> from pydantic import BaseModel
        >>> class A(BaseModel):
        ...     x: int
        >>> class B(BaseModel):
        ...     x: str
        >>> schema_fingerprint(A) != schema_fingerprint(B)
        True
    """
    document = json.dumps(schema.model_json_schema(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(document.encode()).hexdigest()[:16]
