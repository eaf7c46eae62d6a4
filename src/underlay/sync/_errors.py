"""Errors raised by the offline sync."""

from __future__ import annotations

from underlay.exceptions import UnderlayError

__all__ = [
    "ClientSchemaTooOldError",
    "MutationIdReusedError",
    "SyncError",
    "SyncPermissionError",
    "SyncTransportError",
]


class SyncError(UnderlayError):
    """Root of the errors the offline sync raises."""


class SyncTransportError(SyncError):
    """Raised when a pull or push did not get an answer (network down, timeout, 5xx).

    Nothing is lost: the client keeps its outbox and cursor and resends the same mutations on
    the next `sync()`.

    Attributes:
        status: The HTTP status the server answered with, when there was one.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class ClientSchemaTooOldError(SyncError):
    """Raised when the server no longer accepts this client's schema version (HTTP 426).

    Upgrade the application and run its migrations; the outbox is kept until then.

    Attributes:
        schema_version: The client's schema version.
        min_client_schema: The oldest schema version the server accepts.
    """

    def __init__(self, *, schema_version: int, min_client_schema: int) -> None:
        self.schema_version = schema_version
        self.min_client_schema = min_client_schema
        super().__init__(
            f"The server accepts schema versions from {min_client_schema}; this client is at "
            f"{schema_version}. Upgrade the client; its pending changes are kept."
        )


class MutationIdReusedError(SyncError):
    """Raised when a client sends a known mutation id with different content (HTTP 409).

    It means the client lost local commits (a restored or copied database) and reused ids.
    Re-install the client (a new client id) after saving what its outbox holds.

    Attributes:
        mutation_id: The reused mutation id.
    """

    def __init__(self, *, mutation_id: int) -> None:
        self.mutation_id = mutation_id
        super().__init__(
            f"Mutation id {mutation_id} was already applied with different content: this "
            "client's database lost commits. Re-register the client under a new id."
        )


class SyncPermissionError(SyncError, PermissionError):
    """Raised when a client id is used by a user other than the one it belongs to (HTTP 403)."""
