"""``ETag`` / ``If-Match`` for versioned models: the version is the entity tag."""

import re
from typing import Any

from fastapi import Header, HTTPException

__all__ = ["etag", "if_match_version", "require_if_match"]

_TAG = re.compile(r'\s*(?:W/)?"(\d{1,18})"\s*')


def etag(entity_or_version: Any) -> str:
    """Return the weak ETag of a versioned entity (or of a version number): ``W/"<version>"``.

    Weak, because the tag names the row's version, not the bytes of one representation.

    Args:
        entity_or_version: An entity with a ``version`` attribute, or the version itself.

    Returns:
        The header value.

    Example:
        >>> etag(3)
        'W/"3"'
    """
    version = getattr(entity_or_version, "version", entity_or_version)
    if isinstance(version, bool) or not isinstance(version, int):
        raise TypeError(f"an ETag needs an int version, got {type(version).__name__}")
    return f'W/"{version}"'


def _parse(if_match: str) -> int | None:
    if if_match.strip() == "*":
        return None
    match = _TAG.fullmatch(if_match)
    if match is None:
        # A tag that names no version of the resource cannot match: the precondition fails.
        raise HTTPException(
            412, detail='If-Match must name one version, as W/"<version>" from the ETag.'
        )
    return int(match.group(1))


async def if_match_version(
    if_match: str | None = Header(default=None),
) -> int | None:
    """Read ``If-Match`` as the version the client holds (a FastAPI dependency).

    ``W/"3"`` and ``"3"`` give ``3``; no header, or ``*``, gives ``None`` (no check). Pass
    the result as ``expected_version=`` to ``update`` / ``delete`` / ``restore``; with
    `install`, a stale version then answers 412.

    Raises:
        fastapi.HTTPException: 412 when the header names no version (a list, garbage).
    """
    return None if if_match is None else _parse(if_match)


async def require_if_match(
    if_match: str | None = Header(default=None),
) -> int:
    """Like `if_match_version`, but a missing ``If-Match`` (or ``*``) answers 428.

    Use it on routes that must never write unconditionally (lost-update protection).

    Raises:
        fastapi.HTTPException: 428 without a version in ``If-Match``; 412 when it names
            none.
    """
    version = None if if_match is None else _parse(if_match)
    if version is None:
        raise HTTPException(
            428, detail="This request must be conditional: send If-Match with the ETag you read."
        )
    return version
