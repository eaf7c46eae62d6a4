"""Underlay errors as RFC 9457 problem details (``application/problem+json``)."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from underlay.exceptions import (
    ConflictError,
    ConstraintError,
    DuplicateError,
    ForeignKeyError,
    InvalidQueryError,
    NotFoundError,
    SerializationError,
    StaleVersionError,
    UnderlayError,
)

__all__ = ["PROBLEM_JSON", "install", "is_unavailable", "problem_response"]

#: The media type of problem details (RFC 9457).
PROBLEM_JSON = "application/problem+json"

# SQLSTATE classes of a lost or refused connection: 08 (connection exception) and 57P0x
# (the server shut the session down: admin shutdown, crash shutdown, cannot connect now).
_UNAVAILABLE_STATES = ("08", "57P01", "57P02", "57P03")


def problem_response(
    status: int,
    *,
    detail: str | None = None,
    title: str | None = None,
    type: str = "about:blank",
    instance: str | None = None,
    headers: Mapping[str, str] | None = None,
    **extensions: Any,
) -> JSONResponse:
    """Build an RFC 9457 problem response.

    Args:
        status: The HTTP status code.
        detail: A sentence for the client about this occurrence.
        title: A short summary of the problem type; the status phrase by default.
        type: A URI naming the problem type; ``"about:blank"`` means "see the status".
        instance: A URI reference for this occurrence (the request path, typically).
        headers: Extra response headers (``Retry-After``, ...).
        **extensions: Further members (for example ``code`` or ``errors``).

    Returns:
        A ``JSONResponse`` with media type ``application/problem+json``.
    """
    body: dict[str, Any] = {
        "type": type,
        "title": title or HTTPStatus(status).phrase,
        "status": status,
    }
    if detail is not None:
        body["detail"] = detail
    if instance is not None:
        body["instance"] = instance
    body.update(extensions)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def is_unavailable(exc: BaseException) -> bool:
    """Return whether ``exc`` (or what it was raised from) means the database is unreachable.

    A pool timeout, a connection SQLAlchemy invalidated as disconnected, a refused or reset
    socket, or a SQLSTATE of the connection-exception classes count; a query error does not.
    """
    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            return False
        if isinstance(seen, sa_exc.TimeoutError | sa_exc.DisconnectionError | ConnectionError):
            return True
        if isinstance(seen, sa_exc.DBAPIError) and seen.connection_invalidated:
            return True
        state = getattr(seen, "sqlstate", None) or getattr(seen, "pgcode", None)
        if isinstance(state, str) and state.startswith(_UNAVAILABLE_STATES):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _name(model: Any) -> str:
    return getattr(model, "__name__", None) or "resource"


def _classify(exc: BaseException, request: Request) -> tuple[int, str, str]:
    """Return (status, code, detail) for an error; details never carry driver text."""
    if is_unavailable(exc):
        return 503, "database-unavailable", "The database is unavailable; retry shortly."
    if isinstance(exc, NotFoundError):
        return 404, "not-found", f"No such {_name(exc.model)}."
    if isinstance(exc, StaleVersionError):
        detail = (
            f"The {_name(exc.model)} was changed by someone else since the version you hold; "
            "fetch it again and reapply your change."
        )
        status = 412 if "if-match" in request.headers else 409
        return status, "stale-version", detail
    if isinstance(exc, DuplicateError):
        return 409, "duplicate", f"A {_name(exc.model)} with the same unique value exists."
    if isinstance(exc, ForeignKeyError):
        return 409, "foreign-key", "The write refers to a missing row, or the row is in use."
    if isinstance(exc, SerializationError):
        return 409, "serialization-failure", "A concurrent request won; retry the request."
    if isinstance(exc, ConflictError):
        return 409, "conflict", "The write conflicts with the current state; retry."
    if isinstance(exc, ConstraintError):
        return 422, "constraint", "A value was rejected by a database constraint."
    if isinstance(exc, InvalidQueryError):
        # written by underlay before any SQL was sent, so it is safe to show
        return 400, "invalid-query", str(exc)
    return 500, "internal-error", "The request could not be completed."


def install(
    app: FastAPI,
    *,
    retry_after: int = 1,
    http_exceptions: bool = True,
    validation_errors: bool = True,
) -> None:
    """Register exception handlers answering underlay errors with problem JSON.

    - `NotFoundError`: 404
    - `DuplicateError` and any other `ConflictError`: 409
    - `StaleVersionError`: 412 when the request carried ``If-Match``, else 409
    - a missing ``If-Match`` where `require_if_match` demands one: 428
    - `InvalidQueryError`: 400 (422 from the query-parameter dependencies, naming the field)
    - `ConstraintError`: 422
    - a pool timeout or a lost / refused database connection: 503 with ``Retry-After``
    - any other underlay or SQLAlchemy error: 500

    Bodies have the RFC 9457 members ``type``, ``title``, ``status``, ``detail`` and
    ``instance`` plus ``code`` (a stable name such as ``"duplicate"``). Details are written
    by underlay; SQL, parameters and driver messages never reach the client.

    Args:
        app: The FastAPI application.
        retry_after: Seconds sent in ``Retry-After`` with a 503.
        http_exceptions: Also render ``HTTPException`` as problem JSON.
        validation_errors: Also render request validation errors (422) as problem JSON,
            with their ``errors`` list (locations and messages, never the input).
    """

    async def on_error(request: Request, exc: Exception) -> JSONResponse:
        status, code, detail = _classify(exc, request)
        headers = {"Retry-After": str(retry_after)} if status == 503 else None
        return problem_response(
            status, detail=detail, instance=request.url.path, headers=headers, code=code
        )

    async def on_http_exception(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)  # noqa: S101 - registered for it
        detail = exc.detail if isinstance(exc.detail, str) else None
        return problem_response(
            exc.status_code,
            detail=detail,
            instance=request.url.path,
            headers=exc.headers,
        )

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)  # noqa: S101 - registered for it
        errors = [
            {"loc": list(error.get("loc", ())), "msg": error.get("msg"), "type": error.get("type")}
            for error in exc.errors()
        ]
        return problem_response(
            422,
            detail="The request is invalid; see errors.",
            instance=request.url.path,
            code="validation",
            errors=errors,
        )

    app.add_exception_handler(UnderlayError, on_error)
    app.add_exception_handler(sa_exc.SQLAlchemyError, on_error)
    app.add_exception_handler(ConnectionError, on_error)
    if http_exceptions:
        app.add_exception_handler(StarletteHTTPException, on_http_exception)
    if validation_errors:
        app.add_exception_handler(RequestValidationError, on_validation_error)
